"""The self-contained audit report: one HTML file with inline CSS and SVG charts.

No script, font, image or stylesheet is fetched from anywhere, so it opens from disk offline and
prints. Every string that comes from the corpus or the configuration goes through `esc`, so a row
containing markup shows as text and never runs.
"""

import html
import math
from typing import Any

from .formatting import inline, label, number, percent, value_html
from .verdict import MEASURES, margin_text, score_meaning

PALETTE = {"pool": "#9aa5b1", "selected": "#d9480f", "random": "#1c7ed6", "line": "#2b8a3e"}
# One colour per series after the pool (runs in a comparison); the first three match PALETTE.
SERIES_COLOURS = ("#d9480f", "#1c7ed6", "#2b8a3e", "#ae3ec9", "#f08c00", "#0c8599", "#c2255c", "#5c940d")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


class Raw(str):
    """A table cell already rendered as HTML (escaped where it holds data): `fmt` passes it through."""


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: floats to `digits` significant digits, lists and dicts as plain text (never a Python repr)."""
    if isinstance(value, Raw):
        return value
    if isinstance(value, float):
        return number(value, digits)
    if isinstance(value, (list, tuple, dict)):
        return esc(inline(value))
    return esc(value)


def table(headers: list[str], rows: list[list[Any]], cls: str = "", notes: list[str] | None = None) -> str:
    """A table; `notes` (one per column) explain the columns, one line each, under it."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    out = f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    if notes:
        items = "".join(f"<li><b>{esc(h or 'column ' + str(i + 1))}</b>: {esc(n)}</li>"
                        for i, (h, n) in enumerate(zip(headers, notes)))
        out += f'<ul class="colnotes">{items}</ul>'
    return out


def scatter(pool: list, selected: list, title: str, *, width: int = 640, height: int = 440) -> str:
    pts = pool + selected
    if not pts:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx = (width - 40) / ((x1 - x0) or 1.0)
    sy = (height - 40) / ((y1 - y0) or 1.0)

    def dots(points, colour, r, opacity):
        return "".join(
            f'<circle cx="{20 + (x - x0) * sx:.1f}" cy="{height - 20 - (y - y0) * sy:.1f}" r="{r}" fill="{colour}" fill-opacity="{opacity}"/>'
            for x, y in points
        )

    legend = (f'<text x="24" y="16" font-size="12" fill="{PALETTE["pool"]}">● pool (sample of {len(pool)})</text>'
              f'<text x="220" y="16" font-size="12" fill="{PALETTE["selected"]}">● selected ({len(selected)})</text>')
    return (f'<figure><svg class="chart" role="img" aria-label="{esc(title)}" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
            f'<rect width="100%" height="100%" fill="#fff"/>{dots(pool, PALETTE["pool"], 1.6, 0.45)}'
            f'{dots(selected, PALETTE["selected"], 2.6, 0.9)}{legend}</svg><figcaption>{esc(title)}</figcaption></figure>')


def bars(categories: list[str], series: dict[str, list[float]], title: str, *, width: int = 720, percent: bool = True,
         colours: list[str] | None = None) -> str:
    """Grouped horizontal bars: one row per category, one bar per series."""
    if not categories:
        return ""
    row_h, bar_h, label_w = 8 + 9 * len(series), 8, 190
    height = 30 + row_h * len(categories)
    vmax = max((v for vals in series.values() for v in vals), default=1.0) or 1.0
    width = max(width, label_w + 110 * len(series))  # room for every legend entry
    scale = (width - label_w - 70) / vmax
    colours = colours or list(PALETTE.values()) + list(SERIES_COLOURS[3:])
    parts = []
    for i, cat in enumerate(categories):
        y = 24 + i * row_h
        parts.append(f'<text x="{label_w - 6}" y="{y + row_h / 2 + 3:.1f}" font-size="11" text-anchor="end">{esc(cat[:32])}</text>')
        for j, (name, vals) in enumerate(series.items()):
            v = vals[i]
            w = max(v * scale, 0.5)
            by = y + 2 + j * 9
            label = f"{100 * v:.1f}%" if percent else fmt(v)
            parts.append(f'<rect x="{label_w}" y="{by}" width="{w:.1f}" height="{bar_h}" fill="{colours[j % len(colours)]}"><title>{esc(name)}: {esc(label)}</title></rect>')
            parts.append(f'<text x="{label_w + w + 4:.1f}" y="{by + 7}" font-size="9">{esc(label)}</text>')
    legend = "".join(
        f'<text x="{label_w + 110 * j}" y="14" font-size="12" fill="{colours[j % len(colours)]}">■ {esc(name)}</text>'
        for j, name in enumerate(series)
    )
    return (f'<figure><svg class="chart" role="img" aria-label="{esc(title)}" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" xmlns="http://www.w3.org/2000/svg"><rect width="100%" height="100%" fill="#fff"/>{legend}{"".join(parts)}</svg>'
            f'<figcaption>{esc(title)}</figcaption></figure>')


def line_chart(values: list[float], title: str, width: int = 640, height: int = 260) -> str:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if len(vals) < 2:
        return ""
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    step = (width - 70) / (len(vals) - 1)
    pts = " ".join(f"{50 + i * step:.1f},{height - 25 - (v - lo) / span * (height - 50):.1f}" for i, v in enumerate(vals))
    axis = (f'<text x="4" y="{height - 25}" font-size="10">{fmt(lo, 3)}</text><text x="4" y="28" font-size="10">{fmt(hi, 3)}</text>'
            f'<text x="50" y="{height - 6}" font-size="10">1</text><text x="{width - 40}" y="{height - 6}" font-size="10">{len(vals)}</text>')
    return (f'<figure><svg class="chart" role="img" aria-label="{esc(title)}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'xmlns="http://www.w3.org/2000/svg"><rect width="100%" height="100%" fill="#fff"/>'
            f'<polyline fill="none" stroke="{PALETTE["line"]}" stroke-width="1.8" points="{pts}"/>{axis}</svg>'
            f'<figcaption>{esc(title)}</figcaption></figure>')


def histogram(edges: list[float], counts: list[float], title: str, *, width: int = 640, height: int = 240) -> str:
    if not counts:
        return ""
    cmax = max(counts) or 1
    bw = (width - 60) / len(counts)
    rects = "".join(
        f'<rect x="{50 + i * bw:.1f}" y="{height - 25 - c / cmax * (height - 50):.1f}" width="{max(bw - 1, 0.5):.1f}" '
        f'height="{c / cmax * (height - 50):.1f}" fill="{PALETTE["random"]}"><title>{fmt(edges[i], 3)} to {fmt(edges[i + 1], 3)}: {int(c)}</title></rect>'
        for i, c in enumerate(counts)
    )
    axis = (f'<text x="50" y="{height - 8}" font-size="10">{fmt(edges[0], 3)}</text>'
            f'<text x="{width - 60}" y="{height - 8}" font-size="10">{fmt(edges[-1], 3)}</text>'
            f'<text x="4" y="28" font-size="10">{int(cmax)}</text>')
    return (f'<figure><svg class="chart" role="img" aria-label="{esc(title)}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'xmlns="http://www.w3.org/2000/svg"><rect width="100%" height="100%" fill="#fff"/>{rects}{axis}</svg>'
            f'<figcaption>{esc(title)}</figcaption></figure>')


def point_bounds(*point_lists: list) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) over several point lists, so several maps can share their axes."""
    pts = [p for pl_ in point_lists for p in pl_]
    if not pts:
        return (0.0, 1.0, 0.0, 1.0)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (min(xs), max(xs), min(ys), max(ys))


def multi_scatter(background: list, series: dict[str, list], title: str, *, width: int = 640, height: int = 440,
                  bounds: tuple | None = None, colour_offset: int = 0) -> str:
    """A 2-D map: background points in grey, then one colour per series (SERIES_COLOURS, from colour_offset)."""
    x0, x1, y0, y1 = bounds or point_bounds(background, *series.values())
    per_row = max(1, width // 210)
    legend_rows = 1 + len(series) // per_row
    top = 8 + 14 * legend_rows
    sx = (width - 40) / ((x1 - x0) or 1.0)
    sy = (height - top - 20) / ((y1 - y0) or 1.0)

    def dots(points, colour, r, opacity):
        return "".join(
            f'<circle cx="{20 + (x - x0) * sx:.1f}" cy="{height - 20 - (y - y0) * sy:.1f}" r="{r}" fill="{colour}" fill-opacity="{opacity}"/>'
            for x, y in points
        )

    names = [f"pool (sample of {len(background)})"] + [f"{n} ({len(p)})" for n, p in series.items()]
    colours = [PALETTE["pool"]] + [SERIES_COLOURS[(colour_offset + j) % len(SERIES_COLOURS)] for j in range(len(series))]
    step = (width - 24) / per_row
    legend = "".join(f'<text x="{12 + step * (j % per_row):.0f}" y="{16 + 14 * (j // per_row)}" font-size="12" fill="{c}">● {esc(n[:28])}</text>'
                     for j, (n, c) in enumerate(zip(names, colours)))
    body = dots(background, PALETTE["pool"], 1.4, 0.4) + "".join(
        dots(points, colours[1 + j], 2.2, 0.75) for j, points in enumerate(series.values()))
    return (f'<figure><svg class="chart" role="img" aria-label="{esc(title)}" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
            f'<rect width="100%" height="100%" fill="#fff"/>{body}{legend}</svg><figcaption>{esc(title)}</figcaption></figure>')


def heatmap(labels: list[str], values: list[list[float]], title: str, cell: int = 72) -> str:
    """A square matrix of values in [0, 1] (e.g. Jaccard similarity), darker for higher, with each value written in."""
    if not labels:
        return ""
    label_w, top = 130, 24
    width, height = label_w + cell * len(labels) + 10, top + cell * len(labels) + 10
    parts = []
    for i, name in enumerate(labels):
        parts.append(f'<text x="{label_w - 6}" y="{top + i * cell + cell / 2 + 4:.1f}" font-size="11" text-anchor="end">{esc(name[:18])}</text>')
        parts.append(f'<text x="{label_w + i * cell + cell / 2:.1f}" y="{top - 8}" font-size="10" text-anchor="middle">{esc(name[:11])}</text>')
        for j, v in enumerate(values[i]):
            v = min(max(float(v), 0.0), 1.0)
            # White to the palette's blue (28, 126, 214); text turns white on dark cells.
            fill = "#{:02x}{:02x}{:02x}".format(*(round(255 - (255 - c) * v) for c in (28, 126, 214)))
            ink = "#fff" if v > 0.55 else "#212529"
            x, y = label_w + j * cell, top + i * cell
            parts.append(f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" fill="{fill}" stroke="#dee2e6">'
                         f'<title>{esc(labels[i])} / {esc(labels[j])}: {v:.3f}</title></rect>'
                         f'<text x="{x + cell / 2 - 1:.1f}" y="{y + cell / 2 + 3:.1f}" font-size="11" text-anchor="middle" fill="{ink}">{v:.2f}</text>')
    return (f'<figure><svg class="chart" role="img" aria-label="{esc(title)}" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" xmlns="http://www.w3.org/2000/svg"><rect width="100%" height="100%" fill="#fff"/>{"".join(parts)}</svg>'
            f'<figcaption>{esc(title)}</figcaption></figure>')


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#212529;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #dee2e6;padding-bottom:.3rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.85rem}th,td{border:1px solid #dee2e6;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f1f3f5}td.text,pre{white-space:pre-wrap;word-break:break-word;max-width:640px}
figure{margin:.5rem 0 1rem}figcaption{font-size:.8rem;color:#495057}.muted{color:#6c757d;font-size:.85rem}
.kv td:first-child{font-weight:600}pre{font-size:.8rem;background:#f8f9fa;padding:.5rem;margin:0}
svg.chart{max-width:100%;height:auto}.panels{display:flex;flex-wrap:wrap;gap:0 1rem}
td{overflow-wrap:anywhere}table.examples td{white-space:pre-wrap}
ul.colnotes{margin:-.6rem 0 1rem;padding-left:1.1rem;font-size:.78rem;color:#495057}ul.colnotes li{margin:0}
table.inner{margin:0;font-size:.8rem}table.inner td{padding:.1rem .35rem}svg.spark{vertical-align:middle}
p.headline{font-size:1.1rem;margin:.6rem 0}.better{color:#2b8a3e;font-weight:600}.worse{color:#c92a2a;font-weight:600}
.on-par{color:#495057;font-weight:600}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}figure,table{break-inside:avoid}}
"""


# One line per column of the example tables (build.py, run_folder.dedup_examples); `score` depends on the sampler.
COLUMN_NOTES = {
    "rank": "position in the selection order (0 = picked first)",
    "id": "the row's id in the input",
    "nearest selected (similarity)": "the closest other selected row and its cosine similarity (near 1 = near-duplicate; above 100,000 selected rows found through an IVF index, so approximate)",
    "text": "the row's text, cut at 400 characters",
    "rejected id": "a row the sampler did not select (a random sample of them)",
    "rejected text": "its text",
    "similarity": "cosine similarity between the two rows (1 = identical direction)",
    "nearest selected id": "the selected row closest to it",
    "nearest selected text": "that row's text",
    "dropped id": "a row semantic dedup removed before selecting",
    "dropped text": "its text",
    "kept id": "the row kept in its place",
    "kept text": "that row's text",
}


def column_note(header: str, sampler: str, diagnostics: dict | None = None) -> str:
    if header == "score":
        return f"for {sampler}: {score_meaning(sampler, diagnostics)}"
    return COLUMN_NOTES.get(header, header)


def verdict_section(verdict: dict | None) -> str:
    """The headline against random and one row per measure with its margin ('' for a report without a verdict)."""
    if not verdict or not verdict.get("measures"):
        return ""
    rows = []
    for key, m in verdict["measures"].items():
        share = key != "coverage"
        show = percent if share else number
        what = MEASURES[key].format(column=m.get("column", "labels"))
        rows.append([what, show(m["selected"]), f"{show(m['random_mean'])} ± {show(m['random_std'])}", margin_text(m),
                     Raw(f'<span class="{m["verdict"].replace(" ", "-")}">{esc(m["verdict"])}</span>')])
    return (f'<p class="headline"><strong>{esc(verdict["headline"])}</strong></p>'
            + table(["measure", "this selection", "random (mean ± std)", "margin", "verdict"], rows, "verdict", [
                "what is compared, and which way is better",
                "the value for this selection",
                "the same measure over random selections of the same size",
                "how far this selection is from the random mean, the better way or the worse",
                f"better or worse than random, or on par when within {number(verdict.get('spread', 2.0))} standard deviations of the random draws",
            ]))


def render_report(report: dict, examples: list[dict]) -> str:
    """Render report.json's content (and example rows) as one HTML page."""
    s = report["summary"]
    out = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
           f"<title>selectflow report: {esc(s['sampler'])} on {esc(s['input_name'])}</title><style>{CSS}</style></head><body>",
           f"<h1>Selection report: {esc(s['sampler'])}, {s['selected']} of {s['usable_rows']} rows</h1>"]

    out.append('<section id="summary"><h2>Summary</h2>')
    out.append(verdict_section(report.get("verdict")))
    out.append(table(["field", "value"], [[label(k), v] for k, v in s.items()], "kv",
                     ["what the run was given and what it wrote", "its value (times in seconds)"]))
    out.append("</section>")
    if report.get("sampler_options"):
        out.append("<p class=muted>Sampler options</p>" + table(
            ["option", "value"], [[label(k), Raw(value_html(v))] for k, v in report["sampler_options"].items()], "kv",
            ["an option of the sampler, as the run resolved it", "its value"]))

    dp = report["data_problems"]
    out.append("<h2>Data problems</h2>")
    rows = [["rows read", dp["rows_read"]], ["rows excluded", dp["rows_excluded"]]]
    rows += [[f"excluded: {reason}", n] for reason, n in dp["excluded"].items()]
    rows += [["texts truncated at the encoder's max length", dp["truncated_texts"]],
             ["rows sharing their exact text with another row", dp["exact_duplicate_rows"]]]
    nd = dp.get("near_duplicates")
    if nd:
        rows.append([f"near-duplicates (similarity ≥ {nd['threshold']}, estimated on {nd['sampled_rows']} sampled rows)",
                     f"{nd['near_duplicate_rows']} ({100 * nd['estimated_share']:.1f}%)"])
    if dp.get("empty_label_rows"):
        rows.append(["rows with an empty label list", dp["empty_label_rows"]])
    out.append(table(["check", "count"], rows, "kv",
                     ["a check of the input rows", "rows it found (the near-duplicate share is estimated on a sample)"]))

    ch = report.get("changes_since_previous")
    if ch:
        out.append("<h2>Changes since the previous run</h2>")
        if not ch.get("comparable"):
            out.append(f"<p class=muted>{esc(ch.get('note', ''))}</p>")
        else:
            out.append(table(["", ""], [
                ["previous selection", ch["previous_selected"]], ["kept", ch["kept"]],
                ["added: new in the input", ch["added_new_in_input"] if ch["added_new_in_input"] is not None else "unknown"],
                ["added: already in the input", ch["added_already_in_input"] if ch["added_already_in_input"] is not None else "unknown"],
                ["dropped: no longer in the input", ch["dropped_left_input"]],
                ["dropped: still in the input, not selected", ch["dropped_outcompeted"]],
            ], "kv", ["how this selection differs from the previous run's in the same folder", "rows"]))
            change_rows = [["added", e["id"], e["why"]] for e in ch["examples"]["added"]] + \
                          [["dropped", e["id"], e["why"]] for e in ch["examples"]["dropped"]]
            if change_rows:
                out.append(table(["change", "id", "why"], change_rows, "",
                                 ["added to or dropped from the selection", "the row's id", "why it changed"]))

    dc = report["diversity_coverage"]
    out.append("<h2>Diversity and coverage against random selections of the same size</h2>")
    out.append(f"<p class=muted>Random baseline: {dc['random_draws']} seeded draws of {s['selected']} rows; coverage is measured on "
               f"{dc['pool_sample_rows']} sampled pool rows. Each measure says which way is better.</p>")
    mrows = []
    for key, name in (("mean_pairwise_similarity", "mean pairwise cosine similarity (lower = more diverse)"),
                      ("coverage_distance", "mean distance from a pool row to its nearest selected row (lower = better coverage)"),
                      ("near_duplicate_rate", "share of picks with another pick at cosine similarity > 0.95 (lower = fewer near-duplicates)")):
        if key not in dc["selected"]:
            continue
        r, show = dc["random"][key], percent if key == "near_duplicate_rate" else fmt
        mrows.append([name, show(dc["selected"][key]), f"{show(r['mean'])} ± {show(r['std'])}"])
    if "log_det_diversity" in dc:
        mrows.append(["log-det diversity per row, RBF kernel (higher = more diverse)", dc["log_det_diversity"]["selected"],
                      f"{fmt(dc['log_det_diversity']['random_mean'])} ± {fmt(dc['log_det_diversity']['random_std'])}"])
    lc = dc.get("label_coverage")
    if lc:
        mrows.append([f"share of the {lc['distinct']} distinct {lc.get('column', 'labels')} with a selected row (higher = better)",
                      percent(lc["selected"]), f"{percent(lc['random']['mean'])} ± {percent(lc['random']['std'])}"])
    out.append(table(["measure", "selection", "random (mean ± std)"], mrows, "",
                     ["what is measured, and which way is better", "the value for this selection",
                      f"the mean and standard deviation over {dc['random_draws']} random selections of the same size"]))

    out.append("<h2>Selection against the pool</h2>")
    for key, title in (("clusters", "per cluster"), ("groups", "per group"), ("labels", "per label")):
        comp = report["composition"].get(key)
        if not comp:
            continue
        cats = [c["value"] for c in comp]
        out.append(bars(cats, {"pool": [c["pool_share"] for c in comp], "selected": [c["selected_share"] for c in comp]},
                        f"Share of rows {title}: pool against selection"))
        out.append(table([key[:-1], "pool rows", "selected rows", "pool share", "selected share"],
                         [[c["value"], c["pool"], c["selected"], percent(c["pool_share"]), percent(c["selected_share"])]
                          for c in comp], "",
                         [f"the {key[:-1]} (the largest 30; the rest summed in the last row)", f"rows of the pool in this {key[:-1]}",
                          f"selected rows in this {key[:-1]}", "its share of the pool's rows",
                          "its share of the selected rows (close to the pool share = proportional)"]))
    sizes = report["composition"].get("cluster_sizes")
    if sizes:
        ordered = sorted(sizes, key=lambda c: -c["pool"])
        out.append(bars([f"cluster {c['cluster']}" for c in ordered],
                        {"pool rows": [float(c["pool"]) for c in ordered], "selected rows": [float(c["selected"]) for c in ordered]},
                        "Cluster sizes: rows in the pool and rows selected", percent=False))

    out.append(f"<h2>Sampler diagnostics: {esc(s['sampler'])}</h2>")
    diag = dict(report.get("diagnostics", {}))
    curves = diag.pop("curves", {}) or {}
    hists = diag.pop("histograms", {}) or {}
    scalars = [[label(k), Raw(value_html(v))] for k, v in diag.items()]
    if scalars:
        out.append(table(["diagnostic", "value"], scalars, "kv diagnostics",
                         ["a quantity the sampler reported about this run",
                          "its value: long vectors as min, median and max with a small line of their values in order"]))
    for name, values in curves.items():
        out.append(line_chart(values, name))
    for name, h in hists.items():
        out.append(histogram(h["edges"], h["counts"], name))

    out.append("<h2>Map of pool and selection</h2>")
    out.append(scatter(report["map"]["pool"], report["map"]["selected"], "First two principal components of the embeddings"))

    out.append("<h2>Examples</h2><p class=muted>Top selected rows by rank, then rejected rows beside their nearest selected row.</p>")
    for group in examples:
        out.append(f"<h3>{esc(group['title'])}</h3>")
        notes = group.get("notes") or [column_note(h, s["sampler"], report.get("diagnostics")) for h in group["headers"]]
        out.append(table(group["headers"], group["rows"], "examples", notes))

    out.append(f"<p class=muted>Written by selectflow {esc(s.get('selectflow_version', ''))}. Timings per stage: "
               + esc(", ".join(f"{k} {v:.1f}s" for k, v in report.get("timings", {}).items())) + "</p>")
    out.append("</body></html>")
    return "\n".join(out)

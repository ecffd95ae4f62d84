"""compare.html: the measurements of a comparison (compare.json's content) as one self-contained page."""

from ..html import CSS, PALETTE, bars, esc, fmt, heatmap, multi_scatter, point_bounds, table
from .measures import MAP_POINTS_PER_RUN

PANEL_POOL_POINTS = 800


def _page_head(title: str) -> str:
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>")


def render_comparison(result: dict) -> str:
    """compare.json's content as one self-contained HTML page; every corpus string goes through esc()."""
    names, runs, pool, ov = result["names"], result["runs"], result["pool"], result["overlap"]
    out = [_page_head(f"selectflow comparison: {len(runs)} selections of {pool['input_name']}"),
           f"<h1>Comparison of {len(runs)} selections of {esc(pool['input_name'])} ({pool['usable_rows']} usable rows)</h1>"]

    out.append("<h2>Runs</h2>")
    out.append(table(["run", "folder", "sampler", "budget", "selected", "seed", "encoder"],
                     [[r["label"], r["run_dir"], r["sampler"], r["budget_requested"], r["selected"], r["seed"], r["encoder"]] for r in runs]))
    note = (f"All measurements use the embeddings of run {esc(names[0])} ({esc(pool['measured_with'])}), "
            f"so the runs are measured in one space. Input {esc(pool['input'])}, text from {esc(', '.join(pool['text_columns']))}.")
    if len(pool["encoders"]) > 1:
        note += " The runs were embedded with different encoders; each run's own report measures it in its own space."
    out.append(f"<p class=muted>{note}</p>")

    out.append("<h2>Overlap</h2>")
    out.append("<p class=muted>Jaccard similarity |A ∩ B| / |A ∪ B| of the selected rows: 1 = the same rows, 0 = none in common.</p>")
    out.append(heatmap(names, ov["jaccard"], "Jaccard similarity between selections"))
    out.append(table(["run"] + names, [[a] + [f"{ov['jaccard'][i][j]:.3f} ({ov['shared_rows'][i][j]} shared)" for j in range(len(names))]
                                       for i, a in enumerate(names)]))
    out.append(table(["picked by exactly", "rows"], [[f"{k} of {len(names)} runs", v] for k, v in ov["picked_by_exactly"].items()]
                     + [["at least one run", ov["picked_by_any"]]], "kv"))
    out.append(table(["run", "selected", "rows no other run picked", "share"],
                     [[n, r["selected"], c, c / r["selected"] if r["selected"] else 0.0]
                      for n, r, c in zip(names, runs, ov["only_this_run"])]))
    out.append("<p class=muted>overlap.parquet lists every picked row with its rank in each run.</p>")

    out.append("<h2>Rows only one run picked</h2>")
    out.append("<p class=muted>The best-ranked rows no other run picked, beside the most similar row another run did pick.</p>")
    for name, examples in result["only_this_run_examples"].items():
        out.append(f"<h3>{esc(name)}</h3>")
        if not examples:
            out.append("<p class=muted>Every row this run picked was also picked by another run.</p>")
            continue
        out.append(table(["rank", "id", "text", "most similar row another run picked", "similarity", "its text"],
                         [[e["rank"], e["id"], e["text"], e["nearest_other_id"], e["nearest_other_similarity"], e["nearest_other_text"]]
                          for e in examples], "examples"))

    dcs = result["diversity_coverage"]
    out.append("<h2>Diversity and coverage side by side</h2>")
    out.append(f"<p class=muted>Each run beside {dcs[0]['random_draws']} seeded random selections of its own size; coverage is "
               f"measured on {dcs[0]['pool_sample_rows']} sampled pool rows. Lower is better for similarity and coverage distance, "
               "higher for log-det diversity.</p>")
    rows = []
    for m in dcs:
        rs, ld = m["random"], m["log_det_diversity"]
        rows.append([m["run"], m["selected_rows"], m["selected"]["mean_pairwise_similarity"],
                     f"{fmt(rs['mean_pairwise_similarity']['mean'])} ± {fmt(rs['mean_pairwise_similarity']['std'])}",
                     m["selected"]["coverage_distance"],
                     f"{fmt(rs['coverage_distance']['mean'])} ± {fmt(rs['coverage_distance']['std'])}",
                     ld["selected"], f"{fmt(ld['random_mean'])} ± {fmt(ld['random_std'])}"])
    out.append(table(["run", "rows", "mean pairwise similarity", "random", "coverage distance", "random",
                      "log-det diversity per row", "random"], rows))
    for key, title in (("coverage_distance", "Coverage distance (lower = better coverage)"),
                       ("mean_pairwise_similarity", "Mean pairwise cosine similarity (lower = more diverse)")):
        out.append(bars(names, {"selection": [m["selected"][key] for m in dcs], "random (mean)": [m["random"][key]["mean"] for m in dcs]},
                        f"{title}: each run against random selections of its size", percent=False,
                        colours=[PALETTE["selected"], PALETTE["random"]]))

    out.append("<h2>Composition against the pool</h2>")
    comp = result["composition"]
    for key, title in (("clusters", "per analysis cluster (k-means on the pool)"),
                       ("groups", f"per group (column {pool.get('group_column')})"),
                       ("labels", f"per label (column {pool.get('label_column')})")):
        rows_ = comp.get(key)
        if not rows_:
            continue
        cats = [f"cluster {c['value']}" if key == "clusters" and not c["value"].startswith("(") else c["value"] for c in rows_]
        series = {"pool": [c["pool_share"] for c in rows_], **{n: [c["selected_share"][n] for c in rows_] for n in names}}
        out.append(f"<h3>{esc(title)}</h3>")
        out.append(bars(cats, series, f"Share of rows {title}: pool and each run"))
        out.append(table([key[:-1], "pool rows", "pool share"] + [f"{n} rows" for n in names] + [f"{n} share" for n in names],
                         [[cat, c["pool"], c["pool_share"]] + [c["selected"][n] for n in names] + [c["selected_share"][n] for n in names]
                          for cat, c in zip(cats, rows_)]))

    out.append("<h2>Shared map</h2>")
    out.append("<p class=muted>First two principal components of the embeddings, fitted on a pool sample, the same axes in every panel "
               f"(at most {MAP_POINTS_PER_RUN} rows per run shown).</p>")
    mp = result["map"]
    box = point_bounds(mp["pool"], *mp["runs"].values())
    panel_pool = mp["pool"][::max(1, len(mp["pool"]) // PANEL_POOL_POINTS)]  # a thinner pool keeps the page small
    out.append(multi_scatter(mp["pool"], mp["runs"], "All runs on one map", bounds=box))
    out.append('<div class="panels">' + "".join(
        multi_scatter(panel_pool, {n: mp["runs"][n]}, f"{n}", width=360, height=270, bounds=box, colour_offset=i)
        for i, n in enumerate(names)) + "</div>")

    out.append(f"<p class=muted>Written by selectflow compare in {result['seconds']:.1f}s, seed {result['seed']}.</p>")
    out.append("</body></html>")
    return "\n".join(out)

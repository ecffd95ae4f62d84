"""Comparing several selections of one corpus: overlap, diversity and coverage side by side, composition, one map.

A run directory is an output folder of `selectflow select`. Its manifest names the cache files behind the
run (prepared corpus, embedding matrix, selection arrays). Runs are comparable only when they select from
the same input file with the same text columns: then row positions mean the same rows in every run. Every
run is measured in the embedding space of the first run, so the numbers are comparable even when the runs
were embedded with different encoders.

Outputs, each written atomically: compare.html (self-contained, like report.html), compare.json (every
number in the page) and overlap.parquet (one row per row picked by at least one run, with its rank in each).
"""

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ..errors import ConfigError, InputError
from ..io.atomic import write_json, write_text
from ..io.hashing import config_hash
from ..io.outputs import write_parquet
from ..samplers.clustering import kmeans
from .build import analysis_k, log_det_against_random
from .html import CSS, PALETTE, bars, esc, fmt, heatmap, multi_scatter, point_bounds, table
from .metrics import composition, diversity_and_coverage, projection_2d

COMPARE_FILES = ("compare.html", "compare.json", "overlap.parquet")
EXAMPLES_PER_RUN = 5
EXAMPLE_CHARS = 300
MAP_POOL_POINTS = 3000
MAP_POINTS_PER_RUN = 1500
PANEL_POOL_POINTS = 800


@dataclass(frozen=True)
class RunInfo:
    """What compare needs from one run's folder: small metadata and the paths of its cache files."""

    run_dir: str
    label: str
    run_key: str
    sampler: str
    seed: int
    budget_requested: float
    selected: int
    input_path: str
    input_hash: str
    text_columns: list[str]
    usable_rows: int
    encoder: str
    id_column: str | None
    group_column: str | None
    label_column: str | None
    prepared_corpus: str
    embedding_matrix: str
    selection_arrays: str


def load_run(run_dir: str | Path, number: int) -> RunInfo:
    """Read one run folder's manifest; a clear InputError when it is not a complete run or its cache is gone."""
    folder = Path(run_dir).expanduser().resolve()
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; pass output folders of `selectflow select` as RUN_DIRs.")
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise InputError(f"{folder}: has no manifest.json, so it is not a complete selectflow run; "
                         "pass an output folder of `selectflow select` (a run still being written has no manifest yet).")
    try:
        m = json.loads(manifest_path.read_text())
    except ValueError as exc:
        raise InputError(f"{manifest_path}: not valid JSON ({exc}); re-run `selectflow select` into that folder.") from None
    if "cache_files" not in m:
        raise InputError(f"{manifest_path}: has no 'cache_files' entry (written by an older selectflow); "
                         "re-run the same `selectflow select` command to refresh the run.")
    if not (folder / "selected.parquet").exists():
        raise InputError(f"{folder}: selected.parquet is missing; re-run the same `selectflow select` command.")
    cache = m["cache_files"]
    for what, key in (("prepared corpus", "prepared_corpus"), ("embedding matrix", "embedding_matrix"),
                      ("selection arrays", "selection_arrays")):
        if not Path(cache[key]).exists():
            raise InputError(f"{folder}: its {what} {cache[key]} is missing (the cache was cleared or moved); "
                             "re-run the same `selectflow select` command (same --cache-dir) to rebuild it.")
    corpus = m["config"]["corpus"]
    sampler = m["config"]["selection"]["sampler"]
    return RunInfo(
        run_dir=str(folder), label=f"{number}: {sampler}", run_key=m["run_key"], sampler=sampler, seed=int(m["seed"]),
        budget_requested=m["budget"]["requested"], selected=int(m["rows"]["selected"]), input_path=m["input"]["path"],
        input_hash=m["input"]["content_hash"], text_columns=list(m["input"].get("text_columns") or corpus.get("text_columns") or []),
        usable_rows=int(m["rows"]["usable"]), encoder=m["encoder"]["name"], id_column=corpus.get("id_column"),
        group_column=corpus.get("group_column"), label_column=corpus.get("label_column"),
        prepared_corpus=cache["prepared_corpus"], embedding_matrix=cache["embedding_matrix"],
        selection_arrays=cache["selection_arrays"],
    )


def check_same_corpus(runs: list[RunInfo]) -> None:
    """Row positions mean the same rows only for the same input file and the same text columns."""
    ref = runs[0]
    for run in runs[1:]:
        if run.input_hash != ref.input_hash:
            raise InputError(
                f"{run.run_dir}: selects from a different corpus than {ref.run_dir} (input {run.input_path}, content hash "
                f"{run.input_hash[:12]}, against {ref.input_path}, {ref.input_hash[:12]}); compare only runs over the same input file."
            )
        if run.text_columns != ref.text_columns:
            raise InputError(
                f"{run.run_dir}: its text comes from columns {', '.join(run.text_columns)} but {ref.run_dir}'s from "
                f"{', '.join(ref.text_columns)}; rows are comparable only when the same --text columns make the text."
            )
        if run.usable_rows != ref.usable_rows:
            raise InputError(f"{run.run_dir}: has {run.usable_rows} usable rows but {ref.run_dir} has {ref.usable_rows}; "
                             "re-run both `selectflow select` commands with the same selectflow version.")


def check_compare_output(out_dir: str | Path, compare_key: str, overwrite: bool, run_dirs: list[str]) -> Path:
    """Like `selectflow select`: a folder holding something else is only written into with overwrite=True."""
    out = Path(out_dir).expanduser().resolve()
    if str(out) in run_dirs:
        raise ConfigError(f"--out {out} is one of the RUN_DIRs; choose another folder for the comparison.")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"Output path {out} is a file; pass a folder with --out.")
    if out.exists() and any(out.iterdir()) and not overwrite:
        previous = None
        try:
            previous = json.loads((out / "compare.json").read_text()).get("compare_key")
        except (OSError, ValueError):
            previous = None
        if previous != compare_key:
            raise ConfigError(f"Output folder {out} already holds {'another comparison' if previous else 'other files'}; "
                              "pass --overwrite to replace it, or choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def prepare_comparison(run_dirs: list[str], out_dir: str, seed: int = 0, overwrite: bool = False) -> dict:
    """Check the runs and the output folder before any work; returns the plan (small and JSON-able)."""
    if len(run_dirs) < 2:
        raise ConfigError(f"compare needs at least two RUN_DIRs; got {len(run_dirs)}.")
    if int(seed) < 0:
        raise ConfigError(f"--seed {seed} must be a whole number ≥ 0.")
    resolved = [str(Path(d).expanduser().resolve()) for d in run_dirs]
    for i, d in enumerate(resolved):
        if d in resolved[:i]:
            raise ConfigError(f"RUN_DIR {d} is given twice; pass each run once.")
    runs = [load_run(d, i + 1) for i, d in enumerate(resolved)]
    check_same_corpus(runs)
    for run in runs:
        selected_positions(run)  # fail here, before any measuring, when a run's files disagree with its cache
    key = config_hash({"runs": [(r.run_dir, r.run_key) for r in runs], "seed": int(seed), "version": 1})
    out = check_compare_output(out_dir, key, overwrite, resolved)
    return {"runs": [asdict(r) for r in runs], "out_dir": str(out), "seed": int(seed), "compare_key": key}


def selected_positions(run: RunInfo) -> np.ndarray:
    """A run's selected rows (positions in the usable rows), in rank order, checked against its selected.parquet."""
    with np.load(run.selection_arrays, allow_pickle=False) as z:
        rows = np.asarray(z["rows"], dtype=np.int64)
    if len(rows) != run.selected or (len(rows) and not 0 <= rows.min() <= rows.max() < run.usable_rows):
        raise InputError(f"{run.run_dir}: the selection arrays {run.selection_arrays} do not match its manifest "
                         f"({len(rows)} rows against {run.selected}); re-run the same `selectflow select` command.")
    # The ids in selected.parquet (sf_id, else the id column) must be the ids the cache gives those rows.
    columns = pl.read_parquet_schema(Path(run.run_dir) / "selected.parquet")
    id_column = "sf_id" if "sf_id" in columns else run.id_column if run.id_column in columns else None
    if id_column:
        own_ids = pl.read_parquet(run.prepared_corpus, columns=["id"])["id"]
        picked = pl.read_parquet(Path(run.run_dir) / "selected.parquet", columns=[id_column])[id_column].cast(pl.String)
        if picked.to_list() != own_ids.gather(rows).to_list():
            raise InputError(f"{run.run_dir}: selected.parquet's {id_column!r} column does not match the cached selection "
                             f"{run.selection_arrays}; re-run the same `selectflow select` command.")
    return rows


def _texts_at(prepared_path: str, positions: list[int]) -> list[str]:
    if not positions:
        return []
    wanted = pl.DataFrame({"pos": np.asarray(positions, dtype=np.uint32), "order": np.arange(len(positions))})
    found = (pl.scan_parquet(prepared_path).select("text").with_row_index("pos")
             .join(wanted.lazy(), on="pos", how="inner").sort("order").collect())
    return found["text"].to_list()


def _cut(text: str | None) -> str:
    text = text or ""
    return text[:EXAMPLE_CHARS] + "…" if len(text) > EXAMPLE_CHARS else text


def overlap(selections: list[np.ndarray], n_rows: int) -> dict:
    """Jaccard similarity and shared rows between every pair of selections; rows picked by exactly k runs."""
    masks = np.zeros((len(selections), n_rows), dtype=bool)
    for i, rows in enumerate(selections):
        masks[i, rows] = True
    m = masks.astype(np.int64)
    shared = m @ m.T
    sizes = np.diag(shared)
    union = sizes[:, None] + sizes[None, :] - shared
    jaccard = np.where(union > 0, shared / np.maximum(union, 1), 1.0)
    picked_by = masks.sum(axis=0)
    return {
        "jaccard": jaccard.round(6).tolist(),
        "shared_rows": shared.tolist(),
        "only_this_run": [int((masks[i] & (picked_by == 1)).sum()) for i in range(len(selections))],
        "picked_by_exactly": {str(k): int((picked_by == k).sum()) for k in range(1, len(selections) + 1)},
        "picked_by_any": int((picked_by > 0).sum()),
    }


def merged_composition(values: list, selections: list[np.ndarray], n_rows: int, names: list[str]) -> list[dict]:
    """One composition table (see metrics.composition) with one selected count and share per run."""
    per_run = []
    for rows in selections:
        mask = np.zeros(n_rows, dtype=bool)
        mask[rows] = True
        per_run.append({c["value"]: c for c in composition(values, mask)})
    # The pool side, and so the categories and their order, is the same for every run.
    first = list(per_run[0].values())
    return [{"value": c["value"], "pool": c["pool"], "pool_share": c["pool_share"],
             "selected": {n: r[c["value"]]["selected"] for n, r in zip(names, per_run)},
             "selected_share": {n: r[c["value"]]["selected_share"] for n, r in zip(names, per_run)}} for c in first]


def compare_selections(
    *,
    embeddings: np.ndarray,
    selections: list[np.ndarray],
    names: list[str],
    ids: list[str],
    texts_at,  # callable(list of positions) -> list[str]
    groups: list | None = None,
    labels: list | None = None,
    seed: int = 0,
) -> dict:
    """Every measurement of the comparison, as a JSON-able dict. Selections are row positions in rank order."""
    n = embeddings.shape[0]
    result: dict = {"names": names, "overlap": overlap(selections, n)}

    measures = []
    for name, rows in zip(names, selections):
        dc = diversity_and_coverage(embeddings, rows, seed=seed)
        measures.append({"run": name, "selected_rows": int(len(rows)), **dc,
                         "log_det_diversity": log_det_against_random(embeddings, rows, seed=seed)})
    result["diversity_coverage"] = measures

    clusters = kmeans(embeddings, analysis_k(n), seed=seed).assignments
    comp = {"clusters": merged_composition([int(c) for c in clusters], selections, n, names)}
    if groups is not None:
        comp["groups"] = merged_composition(list(groups), selections, n, names)
    if labels is not None:
        comp["labels"] = merged_composition([tuple(x) for x in labels], selections, n, names)
    result["composition"] = comp

    rng = np.random.default_rng(seed)
    pool_pts = np.sort(rng.choice(n, min(n, MAP_POOL_POINTS), replace=False))
    shown = [rows[:MAP_POINTS_PER_RUN] for rows in selections]
    proj = projection_2d(embeddings, pool_pts, np.concatenate(shown), seed=seed)
    bounds = np.cumsum([0] + [len(s) for s in shown])
    result["map"] = {"pool": proj["pool"], "runs": {name: proj["selected"][bounds[i]:bounds[i + 1]] for i, name in enumerate(names)}}

    result["only_this_run_examples"] = _only_this_run_examples(embeddings, selections, names, ids, texts_at)
    return result


def _only_this_run_examples(embeddings, selections, names, ids, texts_at) -> dict:
    """The best-ranked rows that only one run picked, each beside its most similar row that another run picked."""
    import faiss

    picked_by = np.zeros(embeddings.shape[0], dtype=np.int64)
    for rows in selections:
        picked_by[rows] += 1
    out = {}
    for i, (name, rows) in enumerate(zip(names, selections)):
        ranks = [k for k, r in enumerate(rows) if picked_by[r] == 1][:EXAMPLES_PER_RUN]
        others = np.unique(np.concatenate([s for j, s in enumerate(selections) if j != i]))
        examples = []
        if ranks:
            index = faiss.IndexFlatIP(embeddings.shape[1])
            index.add(np.ascontiguousarray(embeddings[others], dtype=np.float32))
            sims, nn = index.search(np.ascontiguousarray(embeddings[rows[ranks]], dtype=np.float32), 1)
            positions = [int(rows[k]) for k in ranks] + [int(others[p]) for p in nn[:, 0]]
            texts = texts_at(positions)
            for j, k in enumerate(ranks):
                examples.append({"rank": int(k), "id": ids[int(rows[k])], "text": _cut(texts[j]),
                                 "nearest_other_id": ids[int(others[nn[j, 0]])], "nearest_other_similarity": float(sims[j, 0]),
                                 "nearest_other_text": _cut(texts[len(ranks) + j])})
        out[name] = examples
    return out


def overlap_frame(selections: list[np.ndarray], ids: list[str]) -> pl.DataFrame:
    """One row per row picked by at least one run: its id, how many runs picked it, and its rank in each run."""
    n_runs = len(selections)
    picked = np.unique(np.concatenate(selections))  # sorted, so positions are found by binary search
    columns = {"id": pl.Series([ids[int(r)] for r in picked], dtype=pl.String)}
    counts = np.zeros(len(picked), dtype=np.int64)
    for i, rows in enumerate(selections):
        rank = np.full(len(picked), -1, dtype=np.int64)
        rank[np.searchsorted(picked, rows)] = np.arange(len(rows))
        counts += rank >= 0
        columns[f"run_{i + 1}_rank"] = pl.Series(rank).set(pl.Series(rank < 0), None)
    columns["n_runs"] = pl.Series(counts)
    frame = pl.DataFrame(columns).select("id", "n_runs", *[f"run_{i + 1}_rank" for i in range(n_runs)])
    return frame.sort(["n_runs", "id"])


def write_comparison(plan: dict) -> dict:
    """Measure the runs of a plan from prepare_comparison and write compare.html, compare.json and overlap.parquet."""
    t0 = time.perf_counter()
    runs = [RunInfo(**r) for r in plan["runs"]]
    out = Path(plan["out_dir"])
    ref = runs[0]
    ids = pl.read_parquet(ref.prepared_corpus, columns=["id"])["id"].to_list()
    selections = [selected_positions(r) for r in runs]
    embeddings = np.load(ref.embedding_matrix, mmap_mode="r")
    # Group and label values of the first run configured with such a column: every run has the same rows.
    group_run = next((r for r in runs if r.group_column), None)
    label_run = next((r for r in runs if r.label_column), None)
    groups = pl.read_parquet(group_run.prepared_corpus, columns=["group"])["group"].to_list() if group_run else None
    labels = pl.read_parquet(label_run.prepared_corpus, columns=["labels"])["labels"].to_list() if label_run else None
    names = [r.label for r in runs]
    result = compare_selections(embeddings=embeddings, selections=selections, names=names, ids=ids,
                                texts_at=lambda pos: _texts_at(ref.prepared_corpus, pos), groups=groups, labels=labels,
                                seed=plan["seed"])
    result.update({
        "compare_key": plan["compare_key"],
        "seed": plan["seed"],
        "runs": [asdict(r) for r in runs],
        "pool": {"input": ref.input_path, "input_name": Path(ref.input_path).name, "content_hash": ref.input_hash,
                 "usable_rows": ref.usable_rows, "text_columns": ref.text_columns, "measured_with": ref.encoder,
                 "encoders": sorted({r.encoder for r in runs}),
                 "group_column": group_run.group_column if group_run else None,
                 "label_column": label_run.label_column if label_run else None},
    })
    result["seconds"] = round(time.perf_counter() - t0, 3)
    write_parquet(overlap_frame(selections, ids), out / "overlap.parquet")
    write_text(out / "compare.html", render_comparison(result))
    write_json(out / "compare.json", result)  # last: it carries the key that lets the same comparison refresh the folder
    return {"out_dir": str(out), "report": str(out / "compare.html"), "json": str(out / "compare.json"),
            "overlap_parquet": str(out / "overlap.parquet"), "names": names, "run_dirs": [r.run_dir for r in runs],
            "jaccard": result["overlap"]["jaccard"], "only_this_run": result["overlap"]["only_this_run"],
            "coverage_distance": [m["selected"]["coverage_distance"] for m in result["diversity_coverage"]],
            "mean_pairwise_similarity": [m["selected"]["mean_pairwise_similarity"] for m in result["diversity_coverage"]],
            "seconds": result["seconds"]}


def compare_runs(run_dirs: list[str], out_dir: str, seed: int = 0, overwrite: bool = False) -> dict:
    """Plain entry point: check, measure and write in one call."""
    return write_comparison(prepare_comparison(run_dirs, out_dir, seed, overwrite))


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

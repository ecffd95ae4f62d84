"""Assembling report.json and report.html for one selection."""

import numpy as np

from .html import render_report
from .metrics import composition, diversity_and_coverage, label_coverage, log_det_against_random, near_duplicates, projection_2d
from .verdict import verdict_against_random

MAP_POOL_POINTS = 3000
MAP_SELECTED_POINTS = 2000
EXAMPLE_ROWS = 10
EXAMPLE_CHARS = 400


def analysis_k(n_rows: int) -> int:
    """Clusters used to compare selection and pool: few enough to read in a chart."""
    return int(min(50, max(2, round(np.sqrt(n_rows) / 4)), n_rows))


def build_report(
    *,
    embeddings: np.ndarray,
    rows: np.ndarray,
    scores: np.ndarray,
    analysis_clusters: np.ndarray,
    ids: list[str],
    texts_by_row,  # callable(list of rows) -> list[str]
    groups: list | None,
    labels: list | None,
    diagnostics: dict,
    summary: dict,
    data_problems: dict,
    sampler_options: dict,
    timings: dict,
    knn=None,
    nearest_row: np.ndarray | None = None,
    nearest_sim: np.ndarray | None = None,
    seed: int = 0,
    extra_diversity: dict | None = None,
    changes: dict | None = None,
    extra_examples: list[dict] | None = None,
) -> tuple[dict, str]:
    n = embeddings.shape[0]
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True

    comp = {"clusters": composition([int(c) for c in analysis_clusters], mask)}
    if groups is not None:
        comp["groups"] = composition(list(groups), mask)
    if labels is not None:
        comp["labels"] = composition([tuple(l) for l in labels], mask)
    if "cluster_sizes" in diagnostics and "quotas" in diagnostics:
        comp["cluster_sizes"] = [{"cluster": i, "pool": int(p), "selected": int(q)}
                                 for i, (p, q) in enumerate(zip(diagnostics["cluster_sizes"], diagnostics["quotas"]))]
    else:
        sizes = np.bincount(analysis_clusters, minlength=int(analysis_clusters.max()) + 1)
        sel_sizes = np.bincount(analysis_clusters[rows], minlength=len(sizes))
        comp["cluster_sizes"] = [{"cluster": i, "pool": int(p), "selected": int(q)} for i, (p, q) in enumerate(zip(sizes, sel_sizes))]

    dc = diversity_and_coverage(embeddings, rows, seed=seed)
    dc["log_det_diversity"] = log_det_against_random(embeddings, rows, seed=seed)
    if labels is not None or groups is not None:
        column = "labels" if labels is not None else "groups"
        values = [tuple(l) for l in labels] if labels is not None else list(groups)
        dc["label_coverage"] = {"column": column, **label_coverage(values, rows, seed=seed, random_draws=dc["random_draws"])}
    if extra_diversity:
        dc.update(extra_diversity)
    if knn is not None:
        sample = np.sort(rng.choice(n, min(n, 2000), replace=False))
        data_problems = {**data_problems, "near_duplicates": near_duplicates(knn, embeddings, sample)}

    pool_pts = np.sort(rng.choice(n, min(n, MAP_POOL_POINTS), replace=False))
    sel_pts = rows[:MAP_SELECTED_POINTS]
    report = {
        "summary": summary,
        "verdict": verdict_against_random(dc),
        "sampler_options": sampler_options,
        "data_problems": data_problems,
        "diversity_coverage": dc,
        "composition": comp,
        "diagnostics": diagnostics,
        "map": projection_2d(embeddings, pool_pts, sel_pts, seed=seed),
        "timings": timings,
        "changes_since_previous": changes,
    }

    top = list(range(min(EXAMPLE_ROWS, len(rows))))
    top_rows = [int(rows[i]) for i in top]
    unselected = np.flatnonzero(~mask)
    rejected = np.sort(rng.choice(unselected, min(EXAMPLE_ROWS, len(unselected)), replace=False)) if len(unselected) else np.array([], int)
    rejected_near_sim, rejected_near = (np.array([]), np.array([], int))
    if len(rejected):
        import faiss

        index = faiss.IndexFlatIP(embeddings.shape[1])
        index.add(np.ascontiguousarray(embeddings[rows], dtype=np.float32))
        s, p = index.search(np.ascontiguousarray(embeddings[rejected], dtype=np.float32), 1)
        rejected_near_sim, rejected_near = s[:, 0], rows[p[:, 0]]
    texts = texts_by_row(top_rows + [int(r) for r in rejected] + [int(r) for r in rejected_near])
    cut = lambda t: (t[:EXAMPLE_CHARS] + "…") if t and len(t) > EXAMPLE_CHARS else t
    top_examples = {
        "title": "Top selected rows",
        "headers": ["rank", "id", "score", "nearest selected (similarity)", "text"],
        "rows": [[i, ids[r], float(scores[i]),
                  f"{ids[int(rows[nearest_row[i]])]} ({nearest_sim[i]:.3f})" if nearest_row is not None and nearest_row[i] >= 0 else "",
                  cut(texts[k])] for k, (i, r) in enumerate(zip(top, top_rows))],
    }
    off = len(top_rows)
    rej_examples = {
        "title": "Rejected rows beside their nearest selected row",
        "headers": ["rejected id", "rejected text", "similarity", "nearest selected id", "nearest selected text"],
        "rows": [[ids[int(r)], cut(texts[off + j]), float(rejected_near_sim[j]), ids[int(rejected_near[j])],
                  cut(texts[off + len(rejected) + j])] for j, r in enumerate(rejected)],
    }
    report["examples"] = [top_examples, rej_examples] + list(extra_examples or [])
    return report, render_report(report, report["examples"])

"""Measuring several selections of one corpus against each other: overlap, diversity and coverage side by
side, composition against the pool, one shared map, and the rows only one run picked.

Plain functions of arrays (row positions in rank order); every run is measured in one embedding space.
"""

import numpy as np
import polars as pl

from ...samplers.clustering import kmeans
from ..build import analysis_k
from ..metrics import composition, diversity_and_coverage, log_det_against_random, projection_2d

EXAMPLES_PER_RUN = 5
EXAMPLE_CHARS = 300
MAP_POOL_POINTS = 3000
MAP_POINTS_PER_RUN = 1500


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

    result["only_this_run_examples"] = _only_this_run_examples(embeddings, selections=selections, names=names, ids=ids,
                                                               texts_at=texts_at)
    return result


def _only_this_run_examples(embeddings, *, selections, names, ids, texts_at) -> dict:
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

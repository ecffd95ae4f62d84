"""Measurements of a selection against its pool and against random selections of the same size.

All functions take unit-norm float32 embeddings and integer row positions, work in bounded memory
(samples where a quantity would be quadratic) and use seeded generators, so a report is reproducible.
"""

import numpy as np

SAMPLE_ROWS = 5000  # pool rows used for coverage; selected rows used for pairwise similarity


def _flat_index(vectors: np.ndarray):
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


# Above this many picks the exact search of the picks against themselves (O(B²·D): 0.7 s at 10k, 53 s at 100k,
# bench/results/scale.md) gives way to an IVF index: about 150 CPU-days at 10⁷ picks would become hours.
EXACT_NEAREST_MAX = 100_000


def _pick_index(vectors: np.ndarray, seed: int):
    """Exact (flat) up to EXACT_NEAREST_MAX vectors; above, IVF (faiss_index.choose_params), trained on one thread
    on a seeded sample so the result does not depend on the machine's core count."""
    if len(vectors) <= EXACT_NEAREST_MAX:
        return _flat_index(vectors)
    from ..embedding.faiss_index import build_index, choose_params
    from ..samplers.clustering import single_threaded_faiss

    with single_threaded_faiss():
        return build_index(vectors, choose_params(len(vectors), "ivf"), seed=seed)


def nearest_selected(embeddings: np.ndarray, rows: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """For every selected row, the nearest *other* selected row (position in `rows`) and its cosine similarity.

    Exact up to EXACT_NEAREST_MAX selected rows; above, approximate (an IVF index over the picks, seeded)."""
    rows = np.asarray(rows)
    if len(rows) < 2:
        return np.full(len(rows), -1, dtype=np.int64), np.full(len(rows), np.nan)
    vecs = np.ascontiguousarray(embeddings[rows], dtype=np.float32)
    index = _pick_index(vecs, seed)
    k = min(3, len(rows))
    sims, nn = index.search(vecs, k)
    own = np.arange(len(rows))[:, None]
    # The row itself is usually first, but an exact duplicate may come first instead: skip by position.
    not_self = nn != own
    first = np.argmax(not_self, axis=1)
    pick = np.take_along_axis(nn, first[:, None], axis=1)[:, 0].astype(np.int64)
    sim = np.take_along_axis(sims, first[:, None], axis=1)[:, 0].astype(np.float64)
    sim[pick < 0] = np.nan  # IVF: nothing else found in the probed lists
    return pick, sim


def coverage_distance(embeddings: np.ndarray, rows: np.ndarray, pool_sample: np.ndarray) -> float:
    """Mean cosine distance (1 - similarity) from sampled pool rows to their nearest selected row. Lower is better."""
    index = _flat_index(embeddings[rows])
    sims, _ = index.search(np.ascontiguousarray(embeddings[pool_sample], dtype=np.float32), 1)
    return float(np.mean(1.0 - sims[:, 0]))


NEAR_DUPLICATE_SIMILARITY = 0.95


def near_duplicate_rate(embeddings: np.ndarray, rows: np.ndarray, threshold: float = NEAR_DUPLICATE_SIMILARITY) -> float:
    """Share of selected rows that have another selected row at cosine similarity above `threshold`. Lower is better."""
    if len(rows) < 2:
        return 0.0
    _, sim = nearest_selected(embeddings, rows)
    return float(np.mean(sim > threshold))


def near_duplicate_share(embeddings: np.ndarray, rows: np.ndarray, threshold: float = NEAR_DUPLICATE_SIMILARITY,
                         seed: int = 0, sample: int = SAMPLE_ROWS) -> float:
    """Share of selected rows that have another selected row at cosine similarity above `threshold`. Lower is better.

    `near_duplicate_rate`'s measure in bounded time: every selected row is searched, but only for at most `sample`
    of them (seeded), so it is exact up to `sample` rows and an unbiased estimate beyond.
    """
    rows = np.asarray(rows)
    if len(rows) < 2:
        return 0.0
    vecs = np.ascontiguousarray(embeddings[rows], dtype=np.float32)
    queries = np.arange(len(rows))
    if len(rows) > sample:
        queries = np.sort(np.random.default_rng(seed).choice(len(rows), sample, replace=False))
    sims, nn = _flat_index(vecs).search(vecs[queries], min(3, len(rows)))
    # Skip the row itself by position (an exact duplicate may come first), as nearest_selected does.
    first = np.argmax(nn != queries[:, None], axis=1)
    sim = np.take_along_axis(sims, first[:, None], axis=1)[:, 0]
    return float(np.mean(sim > threshold))


def random_rows(n: int, size: int, seed: int, draw: int) -> np.ndarray:
    """The `draw`-th seeded random selection of `size` of `n` rows: the same draws for every measure against random."""
    return np.random.default_rng(seed + 1 + draw).choice(n, size, replace=False)


def mean_pairwise_similarity(embeddings: np.ndarray, rows: np.ndarray, seed: int = 0) -> float:
    """Mean cosine similarity between distinct selected rows (on a sample of at most SAMPLE_ROWS). Lower is more diverse."""
    rows = np.asarray(rows)
    if len(rows) > SAMPLE_ROWS:
        rows = np.random.default_rng(seed).choice(rows, SAMPLE_ROWS, replace=False)
    if len(rows) < 2:
        return float("nan")
    v = embeddings[rows].astype(np.float64)
    s = v.sum(axis=0)
    total = float(s @ s) - float(np.einsum("ij,ij->", v, v))
    return total / (len(rows) * (len(rows) - 1))


def diversity_and_coverage(embeddings: np.ndarray, rows: np.ndarray, seed: int = 0, random_draws: int = 5) -> dict:
    """The selection's mean pairwise similarity and coverage distance, beside random selections of the same size."""
    n = embeddings.shape[0]
    rng = np.random.default_rng(seed)
    pool_sample = np.sort(rng.choice(n, min(n, SAMPLE_ROWS), replace=False))

    def measure(r):
        return {
            "mean_pairwise_similarity": mean_pairwise_similarity(embeddings, r, seed),
            "coverage_distance": coverage_distance(embeddings, r, pool_sample),
            "near_duplicate_rate": near_duplicate_share(embeddings, r, seed=seed),
        }

    selected = measure(rows)
    randoms = [measure(random_rows(n, len(rows), seed, i)) for i in range(random_draws)]
    baseline = {}
    for key in selected:
        values = np.array([r[key] for r in randoms])
        baseline[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                         "values": values.tolist()}
    return {"selected": selected, "random": baseline, "random_draws": random_draws, "pool_sample_rows": len(pool_sample)}


def label_coverage(pool_values: list, rows: np.ndarray, seed: int = 0, random_draws: int = 5) -> dict:
    """Share of the distinct labels (or groups) of the pool that the selection represents, beside random selections of
    its size (the draws of `diversity_and_coverage`). A row may carry several labels (a list or tuple). Higher is better."""
    per_row = [v if isinstance(v, (list, tuple)) else (v,) for v in pool_values]
    distinct = {v for values in per_row for v in values}

    def share(r) -> float:
        return len({v for i in r for v in per_row[int(i)]}) / len(distinct) if distinct else 0.0

    n = len(per_row)
    values = np.array([share(random_rows(n, len(rows), seed, i)) for i in range(random_draws)])
    return {"distinct": len(distinct), "selected": share(rows),
            "selected_count": len({v for i in rows for v in per_row[int(i)]}),
            "random": {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                       "values": values.tolist()}}


def composition(pool_values: list, selected_mask: np.ndarray, top: int = 30) -> list[dict]:
    """Counts and shares per value (cluster, group or label) in the pool and in the selection, largest first."""
    pool: dict = {}
    sel: dict = {}
    for value, is_sel in zip(pool_values, selected_mask):
        values = value if isinstance(value, (list, tuple)) else (value,)
        for v in values:
            pool[v] = pool.get(v, 0) + 1
            if is_sel:
                sel[v] = sel.get(v, 0) + 1
    n_pool = len(pool_values)
    n_sel = int(np.sum(selected_mask))
    out = [
        {"value": str(v), "pool": c, "selected": sel.get(v, 0), "pool_share": c / n_pool,
         "selected_share": sel.get(v, 0) / n_sel if n_sel else 0.0}
        for v, c in pool.items()
    ]
    out.sort(key=lambda r: (-r["pool"], r["value"]))
    if len(out) > top:
        rest = out[top:]
        out = out[:top] + [{"value": f"({len(rest)} more)", "pool": sum(r["pool"] for r in rest),
                            "selected": sum(r["selected"] for r in rest),
                            "pool_share": sum(r["pool_share"] for r in rest),
                            "selected_share": sum(r["selected_share"] for r in rest)}]
    return out


def projection_2d(embeddings: np.ndarray, pool_rows: np.ndarray, selected_rows: np.ndarray, seed: int = 0) -> dict:
    """PCA to two dimensions, fitted on a pool sample; coordinates for that sample and the selected rows."""
    fit = embeddings[pool_rows].astype(np.float64)
    mean = fit.mean(axis=0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    axes = vt[:2].T
    return {
        "pool": ((fit - mean) @ axes).round(4).tolist(),
        "selected": ((embeddings[selected_rows].astype(np.float64) - mean) @ axes).round(4).tolist(),
    }


def near_duplicates(knn, embeddings: np.ndarray, sample_rows: np.ndarray, threshold: float = 0.95) -> dict:
    """Share of sampled rows whose nearest other row in the corpus index is at or above `threshold` similarity."""
    sims, nn = knn(embeddings[sample_rows], 2)
    other = np.where(nn[:, 0] == sample_rows, sims[:, 1], sims[:, 0])
    hits = other >= threshold
    return {"threshold": threshold, "sampled_rows": int(len(sample_rows)), "near_duplicate_rows": int(hits.sum()),
            "estimated_share": float(hits.mean()) if len(hits) else 0.0}


def log_det_against_random(embeddings: np.ndarray, rows: np.ndarray, seed: int = 0, draws: int = 5) -> dict:
    """Log-det diversity per row (RBF kernel, unit diagonal) of the selection and of random selections of its size.

    The measure and the bandwidth are the DPP kernel's (samplers/dpp/log_det.py, samplers/dpp/kernels.py), imported
    here, when measured, so that reading a report's metrics does not load every sampler.
    """
    from ..samplers.dpp.kernels import median_distance
    from ..samplers.dpp.log_det import log_det_diversity

    # One bandwidth for every selection measured, so the values are comparable.
    sigma = median_distance(embeddings, np.random.default_rng(seed))
    n = embeddings.shape[0]
    selected = log_det_diversity(embeddings, rows, sigma=sigma, seed=seed)["log_det_per_row"]
    randoms = np.array([
        log_det_diversity(embeddings, np.random.default_rng(seed + 101 + i).choice(n, len(rows), replace=False),
                          sigma=sigma, seed=seed)["log_det_per_row"]
        for i in range(draws)
    ])
    return {"selected": float(selected), "random_mean": float(randoms.mean()),
            "random_std": float(randoms.std(ddof=1)) if draws > 1 else 0.0, "sigma": float(sigma)}

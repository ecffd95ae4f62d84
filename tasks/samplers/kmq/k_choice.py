"""The number of kMQ clusters: from the budget (`default_k`) or by silhouette over a grid of powers of two."""

from typing import Literal

import numpy as np

from ..clustering import Clustering, kmeans


def default_k(budget: int, n_rows: int, rows_per_cluster: float = 5.0, max_k: int = 512) -> int:
    """k from the budget: round(budget / rows_per_cluster), at least 1, at most max_k, the budget and the rows."""
    return int(max(1, min(round(budget / rows_per_cluster), max_k, budget, n_rows)))


def silhouette_k_grid(budget: int, n_rows: int, rows_per_cluster: float = 5.0, max_k: int = 512) -> list[int]:
    """Powers of two between k0/4 and 2*k0, k0 = default_k (budget / rows_per_cluster, capped by max_k);
    at least 2, at most max_k, the budget and n_rows-1."""
    k0 = default_k(budget, n_rows, rows_per_cluster, max_k)
    lo, hi = k0 / 4, 2 * k0
    cap = min(budget, n_rows - 1, max_k)
    return [2**e for e in range(1, 63) if lo <= 2**e <= hi and 2**e <= cap]


def choose_k_by_silhouette(
    embeddings: np.ndarray,
    budget: int,
    seed: int,
    *, n_iter: int = 20,
    sample_size: int = 5000,
    metric: Literal["euclidean", "cosine"] = "euclidean",
    rows_per_cluster: float = 5.0,
    max_k: int = 512,
) -> tuple[int, Clustering | None, list[int], list[float]]:
    """Cluster the whole corpus for each k of the grid; score each on one seeded sample; keep the best.

    Returns (k, its clustering, grid, scores); the clustering is None (and k the budget default)
    when the grid is empty, e.g. for tiny budgets. Ties go to the smaller k.
    """
    from sklearn.metrics import silhouette_score

    n = embeddings.shape[0]
    grid = silhouette_k_grid(budget, n, rows_per_cluster, max_k)
    if not grid:
        return default_k(budget, n, rows_per_cluster, max_k), None, [], []
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(sample_size, n), replace=False))
    x_sample = embeddings[sample]
    best_k, best_score, best_clustering, scores = grid[0], -np.inf, None, []
    for k in grid:
        clustering = kmeans(embeddings, k, seed=seed, n_iter=n_iter)
        labels = clustering.assignments[sample]
        n_labels = len(np.unique(labels))
        # Silhouette is undefined with a single label, or with one label per sampled row.
        score = float(silhouette_score(x_sample, labels, metric=metric)) if 2 <= n_labels < len(sample) else -1.0
        scores.append(score)
        if score > best_score:
            best_k, best_score, best_clustering = k, score, clustering
    return best_k, best_clustering, grid, scores

"""Clustering sensitivities: k-means++ centres, the k-means coreset sensitivity bound, and the lightweight coreset probabilities."""

import math

import numpy as np

from ...errors import ConfigError
from .memory import _chunk_rows


def _sq_norms(x: np.ndarray) -> np.ndarray:
    out = np.empty(len(x), dtype=np.float64)
    step = _chunk_rows(x.shape[1])
    for start in range(0, len(x), step):
        block = np.asarray(x[start : start + step], dtype=np.float64)
        out[start : start + len(block)] = np.einsum("ij,ij->i", block, block)
    return out


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means++ D² seeding (Arthur & Vassilvitskii 2007): returns (centre rows, d(x,B)², assignments).

    One float32 matrix-vector product per centre (O(N·k·D) time, O(N) extra memory). Distances come
    from ‖x‖² + ‖c‖² − 2x·c; where that difference is small enough for cancellation to matter they are
    recomputed exactly as ‖x − c‖² in float64, so duplicates of a centre get distance exactly 0.
    Stops early (fewer than k centres) when every row coincides with a centre.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ConfigError(f"Number of k-means++ centres k={k} must be between 1 and the number of rows ({n}).")
    sq_norms = _sq_norms(x)
    centres = [int(rng.integers(n))]
    d2 = _distances_to(x, sq_norms, centres[0])
    assign = np.zeros(n, dtype=np.int64)
    for j in range(1, k):
        cumulative = np.cumsum(d2)
        total = cumulative[-1]
        if not total > 0:
            break
        # side="right" never lands on a zero-distance row (a row already a centre or its duplicate).
        nxt = int(np.searchsorted(cumulative, rng.random() * total, side="right"))
        nxt = min(nxt, n - 1)
        centres.append(nxt)
        new = _distances_to(x, sq_norms, nxt)
        closer = new < d2
        d2[closer] = new[closer]
        assign[closer] = j
    return np.asarray(centres, dtype=np.int64), d2, assign


def _distances_to(x: np.ndarray, sq_norms: np.ndarray, row: int) -> np.ndarray:
    centre = np.asarray(x[row])
    dots = (x @ centre).astype(np.float64)
    d2 = sq_norms + sq_norms[row] - 2.0 * dots
    # Cancellation: recompute near-duplicates of the centre exactly.
    close = np.flatnonzero(d2 <= 1e-3 * (sq_norms + sq_norms[row]))
    if len(close):
        diff = np.asarray(x[close], dtype=np.float64) - np.asarray(centre, dtype=np.float64)
        d2[close] = np.einsum("ij,ij->i", diff, diff)
    d2[row] = 0.0
    return np.maximum(d2, 0.0)


def kmeans_sensitivity(sq_distances: np.ndarray, assignments: np.ndarray, k: int, alpha: float | None = None) -> np.ndarray:
    """Bachem–Lucic–Krause sensitivity upper bound for k-means, given a rough solution B with k centres.

    s(x) = 2α·d(x,B)²/c̄ + 4α·(Σ_{x'∈B_x} d(x',B)²)/(n_x·c̄) + 4N/n_x, α = max(log k, 1) unless given,
    c̄ = mean of d(x,B)²; s ≡ 1 when c̄ = 0 (all rows on a centre). Σ s is the total sensitivity bound.
    """
    d2 = np.asarray(sq_distances, dtype=np.float64)
    assignments = np.asarray(assignments, dtype=np.int64)
    n = len(d2)
    if alpha is None:
        alpha = max(math.log(k), 1.0) if k >= 1 else 1.0
    mean_cost = float(d2.mean()) if n else 0.0
    if not mean_cost > 0:
        return np.ones(n, dtype=np.float64)
    sizes = np.bincount(assignments, minlength=k).astype(np.float64)
    cluster_cost = np.bincount(assignments, weights=d2, minlength=k)
    n_x = np.maximum(sizes[assignments], 1.0)
    return 2 * alpha * d2 / mean_cost + 4 * alpha * cluster_cost[assignments] / (n_x * mean_cost) + 4 * n / n_x


def lightweight_probabilities(x: np.ndarray) -> np.ndarray:
    """Lightweight coreset probabilities q(x) = ½/N + ½·d(x,μ)²/Σ d(x',μ)² (uniform when Σ d² = 0).

    Unweighted input, so the reference code's weighted-mean bug (it multiplies X by the weights before
    averaging) does not arise. Distances are exact ‖x − μ‖² in float64, two chunked passes.
    """
    n, d = x.shape
    step = _chunk_rows(d)
    total = np.zeros(d, dtype=np.float64)
    for start in range(0, n, step):
        total += np.asarray(x[start : start + step], dtype=np.float64).sum(axis=0)
    mean = total / n
    d2 = np.empty(n, dtype=np.float64)
    for start in range(0, n, step):
        diff = np.asarray(x[start : start + step], dtype=np.float64) - mean
        d2[start : start + len(diff)] = np.einsum("ij,ij->i", diff, diff)
    spread = d2.sum()
    if not spread > 0:
        return np.full(n, 1.0 / n)
    return 0.5 / n + 0.5 * d2 / spread

"""Sensitivity and leverage-score sampling: importance sampling with unbiased importance weights.

Every method turns the embeddings into sampling probabilities q (summing to 1) and returns a
weighted subset such that sum_{i in S} w_i f(x_i) estimates sum_i f(x_i) without bias for any f:

- "kmeans-coreset" (default): Bachem, Lucic & Krause, "Practical coreset constructions for machine
  learning" (arXiv 1703.06476). Rough solution B = k centres from k-means++ D² seeding (Arthur &
  Vassilvitskii 2007, implemented here with numpy, one matrix-vector product per centre), then the
  sensitivity upper bound
      s(x) = 2α·d(x,B)²/c̄ + 4α·(Σ_{x'∈B_x} d(x',B)²)/(n_x·c̄) + 4N/n_x,   α = max(log k, 1),
  with c̄ the mean squared distance to B, B_x the cluster of x and n_x its size; s ≡ 1 when c̄ = 0.
  The reference code (zalanborsos/coresets) seeds with scikit-learn's *greedy* k-means++ (2 + log k
  local trials per centre); we implement the plain D² seeding of the paper, whose O(log k)
  approximation is what α accounts for. `centres="faiss-kmeans"` instead uses Lloyd k-means
  (shared FAISS helper), which gives tighter centres but no longer the k-means++ guarantee.
- "lightweight": Bachem, Lucic & Krause, "Scalable k-means clustering via lightweight coresets"
  (KDD 2018): q(x) = ½·1/N + ½·d(x,μ)²/Σ d(x',μ)², μ the data mean (uniform when all rows coincide).
- "leverage": exact ℓ2 leverage scores τ_i = a_iᵀ(AᵀA + λI)⁺a_i (Cholesky when λ > 0, else an
  eigendecomposition that drops directions below the input's floating-point precision), q = τ/Στ.
- "lewis": ℓp Lewis weights (Cohen & Peng, "ℓp row sampling by Lewis weights", 2015) via their
  fixed point w_i ← (a_iᵀ(AᵀW^{1−2/p}A)⁻¹a_i)^{p/2}, or root leverage τ^{p/2} (Woodruff & Yasuda
  2023) as the ℓp sensitivity bound σ̃, mixed with ℓ2 leverage as Munteanu & Omlor (2024, "ℓ2
  augmentation") recommend: q = (1−β)·σ̃/Σσ̃ + β·τ/Στ. Note: the shorthand update
  "w ← τ(W^{1/2−1/p}A)^{p/2}" has the wrong fixed point for p ≠ 2; Cohen–Peng's update is the one
  implemented (its fixed point satisfies w = τ(W^{1/2−1/p}A) and Σw = rank).

Fixed-size sampling. The papers draw m rows i.i.d. with replacement and weight each draw 1/(m q).
The pipeline needs exactly `budget` distinct rows, and "draw with replacement until B distinct rows
are seen, weight = multiplicity/(m q)" is biased (the stopping rule depends on the draws). We
instead use a without-replacement πps design: inclusion probabilities π_i = min(1, c·q_i) with c
solved exactly so that Σπ = budget, and Horvitz–Thompson weights w_i = 1/π_i, which equal
1/(c·q_i), i.e. the paper's 1/(m q) with m = c, wherever π < 1. Rows are drawn with
  - "pivotal" (default): the pivotal method of Deville & Tillé, applied bottom-up over a tree of
    the rows as in Shimizu et al. (ICLR 2024), vectorised over all sibling pairs at once. Marginals
    are exactly π, the size is exactly `budget`.
  - "systematic": systematic πps sampling along the same order; exact marginals and size, but many
    pairs of rows can never be drawn together (no variance estimate from one sample).
The order the design walks (`order`):
  - "tree" (default): `spatial_order`, PCA median splits (Shimizu et al.'s Alg. 2, the principal
    direction by two power iterations) down to segments of at most 1024 rows, then inside each
    segment recursive nearest-neighbour matching (mutual nearest neighbours paired first, pairs
    merged, repeated), so pivotal siblings are near neighbours: every subtree's sample size stays
    within one of its expectation (the sample spreads over the data) and a near-duplicate pair with
    π_i + π_j < 1 never yields both rows. Shimizu et al. split down to single rows; the matching
    leaves are a departure that keeps near-duplicates together, which median cuts often separate.
    Costs O(N·D·log N) for the splits plus O(N·1024·D) for the matching.
  - "cluster": the previous default: kmeans-coreset rows ordered by cluster, random inside.
  - "random": a random permutation.
Because the marginals are exact, E[Σ_{i∈S} w_i f(x_i)] = Σ_i f(x_i) for every f (in particular
k-means costs for any centres and Σw, which estimates N), whatever the order. Rows are returned in a
random order, so a prefix of b rows with weights multiplied by budget/b is still an unbiased estimator.

Default for rows taken as they are (`select --sampler sensitivity`, sf_weight ignored): the papers'
probabilities oversample small clusters and outliers by design (the 4N/n_x term gives every
k-means++ cluster the same mass, and a singleton is taken with certainty). That is right for a
weighted coreset and wrong for a user who trains on the rows unweighted: on the demo data it lost to
random on coverage distance and near-duplicate rate. The default is therefore a defensive mixture
(Hesterberg 1995) q ← 0.1·q_sensitivity + 0.9/N (`uniform_mix` = 0.9) walked along the tree order:
a spread, near-uniform sample tilted toward what the sensitivities favour, with every weight at most
N/(0.9·budget). The weights are still exact Horvitz–Thompson weights, so the estimator stays
unbiased; but the coreset sample sizes of the papers assume q ∝ s, so for a coreset set
uniform_mix=0 (a mixture with weight η on uniform needs up to 1/(1-η) times more rows for the same
guarantee). Measured (bench/tune_quality.py, demo data): with the tree order most of the gain over
random comes from the balanced design, not from the probabilities (uniform_mix 0.8, 0.9 and 1.0
score alike over 10 seeds); `max_oversampling` caps q·N instead, for users who want more tilt.
"""

import math
from typing import Literal

import numpy as np
from pydantic import Field

from ..errors import ConfigError, ResourceError
from .base import Sampler, SamplerOptions, Selection, SelectionInput

# Memory this sampler allows itself on top of the embeddings (the goal machine has 8 GiB in all).
MEMORY_LIMIT_BYTES = 6 * 2**30
# Rows per chunk are chosen so a float64 chunk takes about this many bytes.
CHUNK_BYTES = 64 * 2**20
# Pivotal-step results this close to 0 or 1 are rounding residue (s - 1 with s <= 2 is exact to ~2e-16)
# and are settled. Genuine probabilities are far larger: every method's q is at least about 1/(2N).
_SETTLE_EPS = 1e-14


# --------------------------------------------------------------------------------------------------
# Leverage scores and Lewis weights
# --------------------------------------------------------------------------------------------------


def _chunk_rows(n_cols: int) -> int:
    return int(max(256, CHUNK_BYTES // (8 * max(n_cols, 1))))


def _check_dense_memory(n_rows: int, n_cols: int) -> None:
    needed = 6 * n_cols * n_cols * 8 + 3 * _chunk_rows(n_cols) * n_cols * 8 + 64 * n_rows
    if needed > MEMORY_LIMIT_BYTES:
        raise ResourceError(
            f"Leverage scores on {n_cols}-dimensional embeddings need about {needed / 2**30:.1f} GiB "
            f"(D×D matrices); use method='kmeans-coreset' or 'lightweight', which need no D×D matrix."
        )


def _gram(a: np.ndarray, row_weights: np.ndarray | None = None) -> np.ndarray:
    """AᵀWA in float64, accumulated over row chunks (never materialises a float64 copy of A)."""
    n, d = a.shape
    g = np.zeros((d, d), dtype=np.float64)
    step = _chunk_rows(d)
    for start in range(0, n, step):
        block = np.asarray(a[start : start + step], dtype=np.float64)
        if row_weights is None:
            g += block.T @ block
        else:
            g += block.T @ (block * row_weights[start : start + step, None])
    return g


def _whitener(gram: np.ndarray, ridge: float, input_eps: float) -> np.ndarray:
    """M with A M Mᵀ Aᵀ = A (AᵀA + λI)⁺ Aᵀ, so that τ_i = ‖(A M)_i‖².

    Cholesky G + λI = LLᵀ and M = L⁻ᵀ when it is certainly well conditioned: λ_min ≥ 1/‖L⁻¹‖_F² must
    exceed the rank cutoff below (a cheap, conservative test). Otherwise (rank-deficient or nearly so)
    an eigendecomposition keeps the eigenvalues above e_max·max((4·D·eps_in)², 100·D·eps64):
    directions whose singular values are below the input's precision (float32 embeddings: ~D·6e-8
    relative) count as null, so a rank-deficient matrix stored in float32 gets Σ τ = its rank.
    """
    import scipy.linalg

    d = gram.shape[0]
    g = gram + ridge * np.eye(d) if ridge > 0 else gram
    scale = float(np.trace(g))
    if not scale > 0:
        return np.zeros((d, 0))
    rel_cutoff = max((4 * d * input_eps) ** 2, 100 * d * np.finfo(np.float64).eps)
    try:
        lower = scipy.linalg.cholesky(g, lower=True)
        inverse_lower = scipy.linalg.solve_triangular(lower, np.eye(d), lower=True)
        if ridge > 0 or 1.0 / float(np.sum(inverse_lower**2)) > rel_cutoff * scale:
            return inverse_lower.T
    except np.linalg.LinAlgError:
        pass
    eigenvalues, vectors = np.linalg.eigh(g)
    keep = eigenvalues > float(eigenvalues[-1]) * rel_cutoff
    return vectors[:, keep] / np.sqrt(eigenvalues[keep])


def _input_eps(a: np.ndarray) -> float:
    return float(np.finfo(a.dtype).eps) if np.issubdtype(a.dtype, np.floating) else float(np.finfo(np.float64).eps)


def _as_matrix(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ConfigError(f"{what} needs a non-empty 2-D matrix; got shape {a.shape}.")
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    return a


def _row_sq_norms_after(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """rowsum((A M)²) over row chunks, float64."""
    n, d = a.shape
    out = np.empty(n, dtype=np.float64)
    step = _chunk_rows(max(d, m.shape[1]))
    for start in range(0, n, step):
        z = np.asarray(a[start : start + step], dtype=np.float64) @ m
        out[start : start + len(z)] = np.einsum("ij,ij->i", z, z)
    return out


def leverage_scores(a: np.ndarray, ridge: float = 0.0) -> np.ndarray:
    """Exact ℓ2 (ridge) leverage scores τ_i = a_iᵀ(AᵀA + λI)⁺a_i of the rows of A, float64.

    Two passes over A in row chunks, O(N·D² + D³) time and O(D² + chunk·D) extra memory. Σ τ is the
    rank of A for λ = 0 and the effective dimension Σ σ_j²/(σ_j² + λ) for λ > 0 (λ absolute here).
    """
    a = _as_matrix(a, "leverage_scores")
    if ridge < 0 or not math.isfinite(ridge):
        raise ConfigError(f"Ridge must be a finite number >= 0; got {ridge!r}.")
    _check_dense_memory(*a.shape)
    m = _whitener(_gram(a), float(ridge), _input_eps(a))
    return np.minimum(_row_sq_norms_after(a, m), 1.0) if ridge == 0 else _row_sq_norms_after(a, m)


def lewis_weights(
    a: np.ndarray,
    p: float = 1.0,
    n_iter: int = 50,
    tol: float = 1e-6,
    return_info: bool = False,
):
    """ℓp Lewis weights of the rows of A by Cohen & Peng's fixed-point iteration (0 < p < 4).

    w_i ← (a_iᵀ (Aᵀ W^{1−2/p} A)⁻¹ a_i)^{p/2}, starting from w = 1; it contracts for p < 4 (by about
    |1 − p/2| per step in log space). The pass that computes the new w also accumulates the next Gram
    matrix, so each iteration is one pass over A (two chunked matrix products). Stops when the largest
    relative change max|w_new/w − 1| falls below `tol`. At the fixed point Σ w = rank(A); p = 2 gives
    the leverage scores after one step. With return_info, also returns {"iterations", "residual",
    "converged", "changes"}, where residual is the last relative change (the fixed-point residual).
    """
    a = _as_matrix(a, "lewis_weights")
    if not 0 < p < 4:
        raise ConfigError(f"Lewis weights need 0 < p < 4 for the fixed-point iteration to converge; got p={p!r}.")
    n, d = a.shape
    _check_dense_memory(n, d)
    eps_in = _input_eps(a)
    exponent = 1.0 - 2.0 / p
    w = np.ones(n, dtype=np.float64)
    gram = _gram(a)
    changes: list[float] = []
    for _ in range(int(n_iter)):
        m = _whitener(gram, 0.0, eps_in)
        w_new = np.empty(n, dtype=np.float64)
        next_gram = np.zeros((d, d), dtype=np.float64)
        step = _chunk_rows(d)
        for start in range(0, n, step):
            block = np.asarray(a[start : start + step], dtype=np.float64)
            z = block @ m
            lev = np.einsum("ij,ij->i", z, z)
            chunk_w = lev ** (p / 2.0)
            w_new[start : start + len(block)] = chunk_w
            # Zero rows keep weight 0; floor the weight only where it is raised to a negative power.
            scale = np.maximum(chunk_w, 1e-300) ** exponent if exponent < 0 else chunk_w**exponent
            next_gram += block.T @ (block * scale[:, None])
        positive = w > 0
        change = float(np.max(np.abs(w_new[positive] / w[positive] - 1.0))) if positive.any() else 0.0
        changes.append(change)
        w, gram = w_new, next_gram
        if change < tol:
            break
    info = {"iterations": len(changes), "residual": changes[-1] if changes else 0.0, "converged": bool(changes and changes[-1] < tol), "changes": changes}
    return (w, info) if return_info else w


# --------------------------------------------------------------------------------------------------
# Clustering sensitivities
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Spatial order: rows that are close in embedding space are adjacent
# --------------------------------------------------------------------------------------------------


def _segment_sums(x: np.ndarray, rows: np.ndarray, seg: np.ndarray, n_seg: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Σ_{i in segment s} w_i·x[rows_i] for every segment s, in row chunks (a sparse indicator product per chunk)."""
    import scipy.sparse

    d = x.shape[1]
    out = np.zeros((n_seg, d), dtype=np.float64)
    step = _chunk_rows(d)
    for start in range(0, len(rows), step):
        block = np.asarray(x[rows[start : start + step]], dtype=np.float32)
        s = seg[start : start + step]
        w = np.ones(len(s), dtype=np.float32) if weights is None else weights[start : start + step].astype(np.float32)
        indicator = scipy.sparse.csr_matrix((w, (s, np.arange(len(s)))), shape=(n_seg, len(s)))
        out += indicator @ block
    return out


def _segment_projection(x, rows, seg, mean, direction) -> np.ndarray:
    """(x[rows_i] − mean_s)·v_s for each row i of segment s, in row chunks."""
    offset = np.einsum("ij,ij->i", mean, direction)
    direction = direction.astype(np.float32)
    out = np.empty(len(rows), dtype=np.float64)
    step = _chunk_rows(x.shape[1])
    for start in range(0, len(rows), step):
        block = np.asarray(x[rows[start : start + step]], dtype=np.float32)
        s = seg[start : start + step]
        out[start : start + len(block)] = np.einsum("ij,ij->i", block, direction[s]) - offset[s]
    return out


def _principal_split(proj: np.ndarray, seg: np.ndarray, counts: np.ndarray, slack: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Sort each segment by its projection and cut it at the median: (permutation, upper-part flags).

    With slack > 0 the cut is the widest gap between consecutive projections among the ranks within
    slack·size of the median (close rows are cut apart less often). The default is the plain median:
    on the demo data even slack 0.05 raised the near-duplicate rate of the pivotal sample, because the
    pivotal rounds pair rows by position and assume a balanced tree.
    """
    within = np.lexsort((proj, seg))
    sorted_proj = proj[within]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(seg)) - starts[seg]
    size = counts[seg]
    # Cutting before rank r (1 <= r < size): gap to the previous row of the same segment.
    gap = np.full(len(seg), -np.inf)
    gap[1:] = sorted_proj[1:] - sorted_proj[:-1]
    lo = np.maximum(1, np.floor((0.5 - slack) * size))
    hi = np.minimum(size - 1, np.ceil((0.5 + slack) * size))
    allowed = (rank >= lo) & (rank <= hi)
    # Prefer the widest gap, then the rank closest to the median.
    best = np.lexsort((np.abs(rank - size / 2), -np.where(allowed, gap, -np.inf), seg))
    first_of_seg = np.concatenate([[True], seg[best][1:] != seg[best][:-1]])
    cut = np.zeros(len(counts), dtype=np.int64)
    cut[seg[best][first_of_seg]] = rank[best][first_of_seg]
    upper = rank >= cut[seg]
    return within, upper


def _matching_order(xs: np.ndarray, max_rounds: int = 8) -> np.ndarray:
    """Order the rows of one small segment so that nearest neighbours are adjacent, by recursive pairing.

    Each level pairs the current nodes greedily by cosine similarity (mutual nearest neighbours first,
    up to `max_rounds` rounds; what is left is paired in its current order), and a pair becomes a node
    whose vector is the normalised sum of its rows; levels repeat until one node is left. Sorting the
    rows by their node at every level, top level first, gives the depth-first order of that tree, so
    the closest pairs are siblings at the bottom. O(m²·D) time and O(m²) memory for m rows.
    """
    m = len(xs)
    if m <= 2:
        return np.arange(m)
    v = np.asarray(xs, dtype=np.float32)
    node_of_row = np.arange(m)
    keys = [node_of_row]
    while len(v) > 1:
        k = len(v)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        u = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
        sim = u @ u.T
        np.fill_diagonal(sim, -np.inf)
        partner = np.full(k, -1)
        idx = np.arange(k)
        nn = np.argmax(sim, axis=1)
        for _ in range(max_rounds):
            mutual = (partner < 0) & (nn[nn] == idx) & np.isfinite(sim[idx, nn])
            if not mutual.any():
                break
            partner[mutual] = nn[mutual]
            sim[mutual, :] = -np.inf
            sim[:, mutual] = -np.inf
            # Only rows whose nearest free neighbour was just matched need a new one.
            stale = np.flatnonzero((partner < 0) & (partner[nn] >= 0))
            if len(stale):
                nn[stale] = np.argmax(sim[stale], axis=1)
        rest = np.flatnonzero(partner < 0)
        even = len(rest) // 2 * 2
        partner[rest[0:even:2]] = rest[1:even:2]
        partner[rest[1:even:2]] = rest[0:even:2]
        lead = np.where(partner < 0, idx, np.minimum(idx, partner))
        parents, parent_of = np.unique(lead, return_inverse=True)
        # A parent has one or two children: its lead and, if any, the lead's partner.
        other = partner[parents]
        v = u[parents].copy()
        v[other >= 0] += u[other[other >= 0]]
        node_of_row = parent_of[node_of_row]
        keys.append(node_of_row)
    return np.lexsort(keys)


def _split_block_to_leaves(xs: np.ndarray, seg: np.ndarray, rng: np.random.Generator, leaf_size: int, power_iters: int) -> np.ndarray:
    """Finish the tree inside one block of whole segments (rows already gathered): the block's permutation."""
    import scipy.sparse

    n = len(xs)
    perm = np.arange(n)
    seg = np.unique(seg, return_inverse=True)[1].astype(np.int64)
    while True:
        counts = np.bincount(seg)
        split = counts > leaf_size
        if not split.any():
            break
        pos = np.flatnonzero(split[seg])
        local = np.unique(seg[pos], return_inverse=True)[1]
        n_seg = int(local.max()) + 1
        block = xs[pos]
        local_counts = np.bincount(local, minlength=n_seg)
        indicator = scipy.sparse.csr_matrix((np.ones(len(pos), dtype=np.float32), (local, np.arange(len(pos)))), shape=(n_seg, len(pos)))
        mean = (indicator @ block) / local_counts[:, None].astype(np.float32)
        block = block - mean[local]
        direction = rng.standard_normal((n_seg, xs.shape[1])).astype(np.float32)
        for _ in range(power_iters):
            p = np.einsum("ij,ij->i", block, direction[local])
            direction = indicator @ (block * p[:, None])
            norms = np.linalg.norm(direction, axis=1, keepdims=True)
            direction = np.divide(direction, norms, out=np.zeros_like(direction), where=norms > 0)
        proj = np.einsum("ij,ij->i", block, direction[local])
        within, upper = _principal_split(proj, local, local_counts)
        xs[pos] = xs[pos[within]]
        perm[pos] = perm[pos[within]]
        key = seg * 2
        key[pos] += upper
        seg = np.unique(key, return_inverse=True)[1].astype(np.int64)
    counts = np.bincount(seg)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    for s in np.flatnonzero(counts > 2):
        a, b = int(bounds[s]), int(bounds[s + 1])
        perm[a:b] = perm[a:b][_matching_order(xs[a:b])]
    return perm


def spatial_order(
    x: np.ndarray,
    rng: np.random.Generator,
    groups: np.ndarray | None = None,
    leaf_size: int = 1024,
    power_iters: int = 2,
) -> np.ndarray:
    """A permutation of the rows in which rows close in embedding space are adjacent.

    The rows of each group (e.g. a k-means cluster; all rows when None) are split recursively at the
    median of their projection on the segment's principal direction, down to segments of at most
    `leaf_size` rows: the PCA tree of Shimizu et al. (ICLR 2024, Alg. 2) on which they run the pivotal
    method. The principal direction is approximated by `power_iters` power iterations from a seeded
    random start. Levels whose segments exceed a chunk of rows are processed together over the whole
    data in row chunks (one pass per power iteration); below that, each chunk of whole segments is
    gathered once and finished in memory. Time O(N·D·power_iters·log2(largest group)), extra memory
    one chunk. Groups keep their sorted order; rows are shuffled first, so ties and the rows inside a
    leaf are in seeded random order.
    """
    n = x.shape[0]
    groups = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups)
    order = np.lexsort((rng.random(n), groups))
    seg = np.unique(groups[order], return_inverse=True)[1].astype(np.int64)
    chunk = _chunk_rows(x.shape[1])
    while True:
        counts = np.bincount(seg)
        big = counts > max(chunk, leaf_size)
        if not big.any():
            break
        # A level over segments larger than a chunk: several passes over the rows of those segments.
        pos = np.flatnonzero(big[seg])
        local = np.unique(seg[pos], return_inverse=True)[1].astype(np.int64)
        n_seg = int(local.max()) + 1
        rows = order[pos]
        local_counts = np.bincount(local, minlength=n_seg)
        mean = _segment_sums(x, rows, local, n_seg) / local_counts[:, None]
        direction = rng.standard_normal((n_seg, x.shape[1]))
        for _ in range(power_iters):
            p = _segment_projection(x, rows, local, mean, direction)
            direction = _segment_sums(x, rows, local, n_seg, p) - mean * np.bincount(local, weights=p, minlength=n_seg)[:, None]
            norms = np.linalg.norm(direction, axis=1, keepdims=True)
            direction = np.divide(direction, norms, out=np.zeros_like(direction), where=norms > 0)
        proj = _segment_projection(x, rows, local, mean, direction)
        within, upper = _principal_split(proj, local, local_counts)
        order[pos] = rows[within]
        key = seg * 2
        key[pos] += upper
        seg = np.unique(key, return_inverse=True)[1].astype(np.int64)
    # Every segment now fits in a chunk: pack whole segments into chunks and finish each in memory.
    counts = np.bincount(seg)
    seg_start = np.concatenate([[0], np.cumsum(counts)])
    lo = 0
    while lo < len(counts):
        hi = int(np.searchsorted(seg_start, seg_start[lo] + chunk, side="right")) - 1
        hi = max(hi, lo + 1)
        a, b = int(seg_start[lo]), int(seg_start[hi])
        if (counts[lo:hi] > 2).any():
            xs = np.asarray(x[order[a:b]], dtype=np.float32)
            perm = _split_block_to_leaves(xs, seg[a:b], rng, leaf_size, power_iters)
            order[a:b] = order[a:b][perm]
        lo = hi
    return order


# --------------------------------------------------------------------------------------------------
# Fixed-size sampling with exact inclusion probabilities
# --------------------------------------------------------------------------------------------------


def inclusion_probabilities(q: np.ndarray, budget: int) -> tuple[np.ndarray, float]:
    """π_i = min(1, c·q_i) with Σπ = budget, solved exactly; returns (π, c).

    Sort q in decreasing order; with the t largest capped at 1, c_t = (budget − t)/Σ_{i≥t} q_(i); the
    answer is the smallest t whose (t+1)-th largest row stays below 1. Ties are broken by row index.
    """
    q = np.asarray(q, dtype=np.float64)
    n_positive = int(np.count_nonzero(q > 0))
    if n_positive < budget:
        raise ConfigError(
            f"Only {n_positive} rows have a positive sampling probability, fewer than the budget of {budget}; "
            "set uniform_mix above 0 or lower the budget."
        )
    order = np.lexsort((np.arange(len(q)), -q))
    sorted_q = q[order]
    t = np.arange(budget)
    tail = np.cumsum(sorted_q[::-1])[::-1]  # tail[t] = Σ_{i≥t} sorted_q[i]
    c_t = (budget - t) / tail[:budget]
    fits = c_t * sorted_q[:budget] < 1.0
    pi = np.zeros(len(q), dtype=np.float64)
    if fits.any():
        first = int(np.argmax(fits))
        c = float(c_t[first])
        pi[order[:first]] = 1.0
        rest = order[first:]
        pi[rest] = np.minimum(c * q[rest], 1.0)
    else:
        c = float("inf")
        pi[order[:budget]] = 1.0
    return pi, c


def pivotal_sample(pi: np.ndarray, order: np.ndarray, rng: np.random.Generator, groups: np.ndarray | None = None) -> np.ndarray:
    """Rows drawn by the pivotal method over the tree of `order`; marginals π exactly, size Σπ.

    Each round pairs consecutive undecided rows (in `order`) and runs one pivotal step on every pair
    at once; each step settles at least one row of its pair, so there are about log2(N) rounds.
    For a pair with s = π_i + π_j: if s < 1, (0, s) with probability π_j/s else (s, 0); otherwise
    (1, s − 1) with probability (1 − π_j)/(2 − s) else (s − 1, 1). Both keep E[π_i] unchanged.
    With `groups` (one label per row, contiguous along `order`), rows are paired only within their
    group, so a group whose Σπ is a whole number gets exactly that many rows.
    """
    p = np.asarray(pi, dtype=np.float64)[order].copy()
    g = None if groups is None else np.asarray(groups)[order]
    undecided = np.flatnonzero((p > 0.0) & (p < 1.0))
    while len(undecided) > 1:
        if g is None:
            paired = len(undecided) // 2 * 2
            i, j = undecided[0:paired:2], undecided[1:paired:2]
        else:
            gu = g[undecided]
            first = np.concatenate([[True], gu[1:] != gu[:-1]])
            rank = np.arange(len(undecided)) - np.maximum.accumulate(np.where(first, np.arange(len(undecided)), 0))
            has_next = np.concatenate([gu[1:] == gu[:-1], [False]])
            lead = np.flatnonzero((rank % 2 == 0) & has_next)
            if len(lead) == 0:
                break
            i, j = undecided[lead], undecided[lead + 1]
        pi_i, pi_j = p[i], p[j]
        s = pi_i + pi_j
        u = rng.random(len(i))
        low = s < 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            low_i_wins = u * s >= pi_j  # keeps s with probability π_i/s
            high_i_full = u * (2.0 - s) < (1.0 - pi_j)  # gets 1 with probability (1 − π_j)/(2 − s)
        new_i = np.where(low, np.where(low_i_wins, s, 0.0), np.where(high_i_full, 1.0, s - 1.0))
        new_j = np.where(low, np.where(low_i_wins, 0.0, s), np.where(high_i_full, s - 1.0, 1.0))
        p[i], p[j] = new_i, new_j
        touched = np.concatenate([i, j])
        vals = p[touched]
        vals[vals < _SETTLE_EPS] = 0.0
        vals[vals > 1.0 - _SETTLE_EPS] = 1.0
        p[touched] = vals
        undecided = undecided[(p[undecided] > 0.0) & (p[undecided] < 1.0)]
    # Only floating-point residue is left where Σπ (of a group) is a whole number; a draw keeps its marginal.
    for last in undecided:
        p[last] = 1.0 if rng.random() < p[last] else 0.0
    return np.asarray(order)[p == 1.0]


def systematic_sample(pi: np.ndarray, order: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Systematic πps sampling along `order`: one uniform start u, rows whose cumulative-π interval holds u + j."""
    p = np.asarray(pi, dtype=np.float64)[order]
    certain = p >= 1.0 - _SETTLE_EPS
    fractional = np.flatnonzero(~certain & (p > 0.0))
    cumulative = np.cumsum(p[fractional])
    u = rng.random()
    hits = np.floor(cumulative - u) - np.floor(np.concatenate([[0.0], cumulative[:-1]]) - u)
    chosen = np.concatenate([np.flatnonzero(certain), fractional[hits >= 1]])
    return np.asarray(order)[np.sort(chosen)]


def _fix_count(rows: np.ndarray, pi: np.ndarray, budget: int) -> tuple[np.ndarray, int]:
    """Guard against floating-point drift in Σπ: add the most likely missing rows or drop the least likely."""
    if len(rows) == budget:
        return rows, 0
    fixes = abs(len(rows) - budget)
    if len(rows) > budget:
        keep = np.lexsort((rows, -pi[rows]))[:budget]
        return rows[keep], fixes
    chosen = np.zeros(len(pi), dtype=bool)
    chosen[rows] = True
    rest = np.flatnonzero(~chosen)
    extra = rest[np.lexsort((rest, -pi[rest]))[: budget - len(rows)]]
    return np.concatenate([rows, extra]), fixes


def sample_fixed_size(
    q: np.ndarray,
    budget: int,
    rng: np.random.Generator,
    scheme: Literal["pivotal", "systematic"] = "pivotal",
    order: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Exactly `budget` distinct rows with inclusion probabilities π = min(1, c·q); returns (rows, π, c).

    Horvitz–Thompson weights 1/π[rows] make Σ_{i∈S} f_i/π_i unbiased for Σ_i f_i. `order` is the
    order the design walks (default: a random permutation); rows come back sorted by position.
    """
    pi, c = inclusion_probabilities(q, budget)
    if order is None:
        order = rng.permutation(len(q))
    if scheme == "pivotal":
        rows = pivotal_sample(pi, order, rng)
    elif scheme == "systematic":
        rows = systematic_sample(pi, order, rng)
    else:
        raise ConfigError(f"Unknown sampling scheme {scheme!r}; choose 'pivotal' or 'systematic'.")
    rows, _ = _fix_count(np.sort(rows), pi, budget)
    return np.sort(rows), pi, c


def cap_oversampling(q: np.ndarray, kappa: float) -> np.ndarray:
    """Probabilities q' ∝ min(q, t) with t solved so that max q' = κ/N exactly (q summing to 1, N = len(q)).

    Rows above the cap share it equally; the rest keep their relative probabilities. A no-op when
    max q <= κ/N already.
    """
    q = np.asarray(q, dtype=np.float64)
    n = len(q)
    cap = kappa / n
    if q.max() <= cap * (1 + 1e-12):
        return q
    # With the m largest rows capped: the rest scale by (1 - m·cap)/Σ rest; find the smallest consistent m.
    order = np.argsort(-q, kind="stable")
    sorted_q = q[order]
    tail = np.cumsum(sorted_q[::-1])[::-1]
    m = np.arange(1, n)
    room = 1.0 - m * cap
    ok = (room > 0) & (sorted_q[m] * room / np.maximum(tail[m], 1e-300) <= cap * (1 + 1e-12))
    if not ok.any():
        return np.full(n, 1.0 / n)
    first = int(m[np.argmax(ok)])
    out = np.empty(n)
    out[order[:first]] = cap
    out[order[first:]] = sorted_q[first:] * (1.0 - first * cap) / tail[first]
    return out


# --------------------------------------------------------------------------------------------------
# The sampler
# --------------------------------------------------------------------------------------------------


class SensitivityOptions(SamplerOptions):
    method: Literal["kmeans-coreset", "lightweight", "leverage", "lewis"] = Field(
        default="kmeans-coreset",
        description="Sampling probabilities: k-means coreset sensitivity bound (Bachem-Lucic-Krause), lightweight coreset (½ uniform + ½ distance to the mean), exact ℓ2 leverage scores, or ℓp Lewis weights / root leverage mixed with leverage.",
    )
    k: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="kmeans-coreset: number of centres of the rough solution. Empty: round(2*sqrt(budget)), at most the number of rows. Time grows linearly with k.",
    )
    centres: Literal["kmeans++", "faiss-kmeans"] = Field(
        default="kmeans++",
        description="kmeans-coreset: rough solution from k-means++ D² seeding (the paper's guarantee) or FAISS Lloyd k-means (tighter centres, faster for large k, no k-means++ guarantee).",
    )
    kmeans_iter: int = Field(default=20, ge=1, le=300, description="Lloyd iterations when centres='faiss-kmeans'.")
    ridge: float = Field(
        default=0.0,
        ge=0.0,
        le=1e6,
        description="leverage / lewis: ridge λ for the ℓ2 leverage scores τ (and root leverage), as a multiple of the mean eigenvalue of AᵀA (‖A‖_F²/D); 0 gives exact leverage scores, larger values flatten them toward uniform. Lewis weights themselves use no ridge.",
    )
    p: float = Field(default=1.0, ge=1.0, lt=4.0, description="lewis: the ℓp norm whose sensitivities are bounded (1 <= p < 4).")
    lewis_proxy: Literal["lewis", "root-leverage"] = Field(
        default="lewis",
        description="lewis: ℓp sensitivity bound from Lewis weights (Cohen-Peng fixed point) or root leverage τ^(p/2) (one leverage pass, valid for p <= 2).",
    )
    leverage_mix: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="lewis: share β of ℓ2 leverage in q = (1-β)·σ/Σσ + β·τ/Στ (ℓ2 augmentation; 0.5 is sampling ∝ σ + τ when Σσ = Στ = D).",
    )
    lewis_iters: int = Field(default=30, ge=1, le=200, description="lewis: maximum fixed-point iterations (each is one pass over the embeddings).")
    lewis_tol: float = Field(
        default=1e-2,
        gt=0.0,
        le=0.5,
        description="lewis: stop when the largest relative change of a weight falls below this (1% is ample for sampling, which only needs constant-factor Lewis weights).",
    )
    uniform_mix: float = Field(
        default=0.9,
        ge=0.0,
        le=1.0,
        description="Defensive mixing q ← (1-η)·q + η/N for every method: bounds importance weights by N/(η·budget). The default 0.9 serves rows taken as they are (a spread, near-uniform sample tilted toward what the sensitivities favour); 0 is the papers' pure importance design, needed for their coreset sample sizes.",
    )
    max_oversampling: float | None = Field(
        default=None,
        ge=1.0,
        le=1e6,
        description="Cap κ on q·N: no row is drawn with more than κ times the uniform probability (after uniform_mix). Empty: no cap. The weights stay exact Horvitz-Thompson weights of the capped design.",
    )
    sampling: Literal["pivotal", "systematic"] = Field(
        default="pivotal",
        description="Fixed-size design with exact inclusion probabilities π = min(1, c·q) and weights 1/π: pivotal method (spatially balanced over clusters) or systematic πps.",
    )
    order: Literal["tree", "cluster", "random"] = Field(
        default="tree",
        description="The order the design walks. tree: rows of each k-means cluster (all rows for the other methods) ordered along a PCA median-split tree, so near neighbours are paired first and near-duplicates rarely drawn together; cluster: clusters contiguous, random inside; random: a random permutation.",
    )


def default_k(budget: int, n_rows: int) -> int:
    return int(max(1, min(round(2 * math.sqrt(budget)), n_rows)))


class SensitivitySampler(Sampler):
    name = "sensitivity"
    description = "Sensitivity / leverage-score importance sampling: exactly B distinct rows with unbiased Horvitz-Thompson weights (k-means coreset by default)."
    Options = SensitivityOptions

    def _select(self, data: SelectionInput, budget: int, seed: int) -> Selection:
        opts = self.options
        x = data.embeddings
        n, d = x.shape
        rng = np.random.default_rng(seed)
        # N-sized float64/int64 work arrays (q, π, distances, assignments, order, ...): about 12 per row.
        per_row = 12 * 8 * n
        if per_row > MEMORY_LIMIT_BYTES:
            raise ResourceError(
                f"Sensitivity sampling over {n} rows needs about {per_row / 2**30:.1f} GiB of per-row arrays; "
                "select from a random subset of the corpus first, or use the 'random' sampler."
            )
        diagnostics: dict = {"method": opts.method, "sampling": opts.sampling, "uses_quality": False}
        clusters_all: np.ndarray | None = None
        curves: dict[str, list[float]] = {}

        if opts.method == "kmeans-coreset":
            k = opts.k if opts.k is not None else default_k(budget, n)
            if k > n:
                raise ConfigError(f"sensitivity option k={k} is larger than the {n} usable rows; pass a smaller k.")
            if opts.centres == "kmeans++":
                _, d2, assign = kmeans_plus_plus(x, k, rng)
                k_used = int(assign.max()) + 1
            else:
                from .clustering import kmeans

                clustering = kmeans(x, k, seed=seed, n_iter=opts.kmeans_iter)
                d2, assign, k_used = clustering.distances.astype(np.float64), clustering.assignments, k
            alpha = max(math.log(k_used), 1.0)
            scores = kmeans_sensitivity(d2, assign, k_used, alpha=alpha)
            # The bound is on N·σ(x) (sensitivity relative to the mean cost), so Σs/N = 6α + 4k is 𝔖.
            total_sensitivity = float(scores.sum()) / n
            clusters_all = assign
            diagnostics.update(
                k=int(k),
                k_chosen_from_budget=opts.k is None,
                k_centres_found=k_used,
                centres=opts.centres,
                alpha=alpha,
                mean_sq_distance_to_centres=float(d2.mean()),
                score_definition="Bachem-Lucic-Krause sensitivity upper bound s(x)",
            )
        elif opts.method == "lightweight":
            scores = lightweight_probabilities(x)
            # An additive-error guarantee, not a multiplicative sensitivity bound: no total to report.
            total_sensitivity = None
            diagnostics["score_definition"] = "q(x) = 1/(2N) + d(x,mean)^2 / (2 Σ d^2)"
        else:
            _check_dense_memory(n, d)
            lam = opts.ridge * float(_sq_norms(x).sum()) / d if opts.ridge > 0 else 0.0
            tau = leverage_scores(x, ridge=lam)
            diagnostics.update(ridge_lambda=lam, leverage_sum=float(tau.sum()))
            if opts.method == "leverage":
                scores = tau
                total_sensitivity = float(tau.sum())
                diagnostics["score_definition"] = "ℓ2 leverage τ (sum = rank, or effective dimension with ridge)"
            else:
                if opts.lewis_proxy == "lewis":
                    sigma, info = lewis_weights(x, p=opts.p, n_iter=opts.lewis_iters, tol=opts.lewis_tol, return_info=True)
                    diagnostics.update(
                        lewis_iterations=info["iterations"], lewis_residual=info["residual"], lewis_converged=info["converged"]
                    )
                    curves["Lewis fixed point: largest relative change per iteration"] = [float(c) for c in info["changes"]]
                else:
                    sigma = tau ** (opts.p / 2.0)
                total_sensitivity = float(sigma.sum())
                diagnostics.update(p=opts.p, lewis_proxy=opts.lewis_proxy, leverage_mix=opts.leverage_mix)
                beta = opts.leverage_mix
                sigma_sum, tau_sum = sigma.sum(), tau.sum()
                scores = (1 - beta) * (sigma / sigma_sum if sigma_sum > 0 else 0.0) + beta * (tau / tau_sum if tau_sum > 0 else 0.0)
                diagnostics["score_definition"] = "q = (1-β)·σ/Σσ + β·τ/Στ, σ the ℓp sensitivity bound; total_sensitivity = Σσ"

        diagnostics["total_sensitivity"] = total_sensitivity
        total = float(np.sum(scores))
        q = scores / total if total > 0 else np.full(n, 1.0 / n)
        if opts.uniform_mix > 0:
            q = (1.0 - opts.uniform_mix) * q + opts.uniform_mix / n
        diagnostics["uniform_mix"] = opts.uniform_mix
        if opts.max_oversampling is not None:
            q = cap_oversampling(q, opts.max_oversampling)
        diagnostics["max_oversampling"] = opts.max_oversampling

        if opts.order == "tree":
            # Neighbours in embedding space are pivotal siblings: spatially balanced, near-duplicates compete.
            order = spatial_order(x, rng)
        elif opts.order == "cluster" and clusters_all is not None:
            # Cluster-sorted order: pivotal siblings share a cluster, so each cluster's count stays near its expectation.
            order = np.lexsort((rng.random(n), clusters_all))
        else:
            order = rng.permutation(n)
        diagnostics["order"] = opts.order
        rows, pi, c = sample_fixed_size(q, budget, rng, scheme=opts.sampling, order=order)
        rows = rows[rng.permutation(budget)]
        weights = 1.0 / pi[rows]

        diagnostics.update(
            expected_draws_c=c if math.isfinite(c) else None,
            rows_taken_with_certainty=int(np.count_nonzero(pi >= 1.0)),
            max_sampling_probability=float(q.max()),
            min_sampling_probability=float(q.min()),
            effective_sample_size=float(weights.sum() ** 2 / np.sum(weights**2)),
            sum_of_weights=float(weights.sum()),
            n_rows=int(n),
        )
        sorted_pi = np.sort(pi)[::-1]
        idx = np.unique(np.linspace(0, n - 1, min(n, 500)).round().astype(np.int64))
        curves["Inclusion probability by rank (all rows)"] = [float(v) for v in sorted_pi[idx]]
        diagnostics["curves"] = curves
        diagnostics["histograms"] = {"Importance weights": _log_histogram(weights)}
        return Selection(
            rows=rows,
            scores=pi[rows],
            weights=weights,
            clusters=clusters_all[rows] if clusters_all is not None else None,
            diagnostics=diagnostics,
        )


def _log_histogram(values: np.ndarray, bins: int = 20) -> dict:
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo * (1 + 1e-9):
        return {"edges": [lo, hi], "counts": [int(len(values))]}
    edges = np.geomspace(lo, hi, bins + 1)
    counts, _ = np.histogram(values, bins=edges)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}

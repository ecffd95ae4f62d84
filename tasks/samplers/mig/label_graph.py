"""The label graph: a similarity threshold calibrated to a target degree, the thresholded or k-NN graph, and the propagation matrix A built from it."""

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from ...errors import ResourceError
from .labels import Labels


# Calibrating tau looks at this many nearest labels per target neighbour.
CALIBRATION_NEIGHBOURS_PER_DEGREE = 4


def calibrate_threshold(embeddings: np.ndarray, target_degree: float) -> float:
    """The similarity at which labels have `target_degree` neighbours on average.

    Estimated from each label's CALIBRATION_NEIGHBOURS_PER_DEGREE * target_degree nearest labels
    (exact FAISS inner-product search), so it is exact unless some label has more neighbours
    than that above the threshold. Returns +inf (no edges) for a degree of 0 or a single label.
    """
    import faiss

    k_labels = embeddings.shape[0]
    if target_degree <= 0 or k_labels < 2:
        return math.inf
    n_neighbours = int(min(k_labels - 1, math.ceil(CALIBRATION_NEIGHBOURS_PER_DEGREE * target_degree)))
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    sims, ids = index.search(embeddings, n_neighbours + 1)
    off_diagonal = ids != np.arange(k_labels)[:, None]
    # A label may miss itself in its list only when it has exact duplicates; keep n_neighbours others per row.
    keep = off_diagonal & (np.cumsum(off_diagonal, axis=1) <= n_neighbours) & (ids >= 0)
    values = np.sort(sims[keep].astype(np.float64))[::-1]
    wanted = int(round(target_degree * k_labels))
    if wanted <= 0:
        return math.inf
    return float(values[min(wanted, len(values)) - 1])


def similarity_graph(embeddings: np.ndarray, threshold: float, max_edges: int) -> sp.csr_matrix:
    """Off-diagonal W: w_pq = cos(p, q) where cos >= threshold and cos > 0, symmetric, zero diagonal.

    Exact FAISS range search in blocks of labels; never a dense K x K matrix. Raises ResourceError
    when the graph would have more than `max_edges` edges.
    """
    import faiss

    k_labels = embeddings.shape[0]
    if k_labels < 2 or not math.isfinite(threshold) or threshold > 1.0:
        return sp.csr_matrix((k_labels, k_labels))
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    # range_search keeps scores strictly above the radius; step one float32 down so equality counts.
    radius = float(np.nextafter(np.float32(max(threshold, 0.0)), np.float32(-np.inf)))
    rows, cols, vals = [], [], []
    n_edges = 0
    # One block's results can reach block * K pairs before they are counted: keep that within max_edges.
    step = int(max(1, min(4096, max_edges // k_labels)))
    for start in range(0, k_labels, step):
        block = embeddings[start : start + step]
        lims, sims, ids = index.range_search(block, radius)
        src = start + np.repeat(np.arange(len(block)), np.diff(lims.astype(np.int64)))
        keep = (ids != src) & (sims >= threshold) & (sims > 0)
        n_edges += int(keep.sum())
        if n_edges > max_edges:
            raise ResourceError(
                f"The MIG label graph would have more than {max_edges:,} edges at similarity threshold {threshold:.3f}; "
                "raise similarity_threshold, lower relative_degree (or target_degree), or raise memory_budget_gib."
            )
        rows.append(src[keep])
        cols.append(ids[keep])
        vals.append(sims[keep].astype(np.float64))
    w = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(k_labels, k_labels)
    )
    # FAISS may round cos(p, q) and cos(q, p) differently; keep the graph symmetric.
    return w.maximum(w.T).tocsr()


SINKHORN_TOL = 1e-10
SINKHORN_MAX_ITER = 10_000


def doubly_stochastic(w_prime: sp.csr_matrix) -> sp.csr_matrix:
    """S W' S with S diagonal such that every row and every column sums to 1 (symmetric Sinkhorn scaling).

    W' must be symmetric, non-negative, with a positive diagonal; then the scaling exists and is unique
    (Sinkhorn-Knopp), and the damped fixed point s <- sqrt(s / (W' s)) converges to it.
    """
    w_prime = w_prime.maximum(w_prime.T).tocsr()
    s = 1.0 / np.sqrt(np.asarray(w_prime.sum(axis=1)).ravel())
    for _ in range(SINKHORN_MAX_ITER):
        s = np.sqrt(s / (w_prime @ s))
        if np.abs(s * (w_prime @ s) - 1.0).max() < SINKHORN_TOL:
            break
    a = (sp.diags(s) @ w_prime @ sp.diags(s)).tocsr()
    # Rescale the last rounding away so columns sum to 1 to machine precision (mass conservation).
    return (a @ sp.diags(1.0 / np.asarray(a.sum(axis=0)).ravel())).tocsr()


def propagation_matrix(
    offdiag: sp.csr_matrix, prop_weight: float, mode: Literal["share", "balanced", "conserve", "paper"] = "paper"
) -> sp.csr_matrix:
    """The propagation A of e_hat = A e, non-negative, from W' = I + alpha W (W symmetric, D its row sums).

    mode="paper": A = D^-1 W', row-stochastic (paper Eq. 6). Equals the transpose of the reference code's
    column-normalised P = W' / W'.sum(axis=0), since W' is symmetric; e_hat = A e is the code's e P.
    Label q then hands out sum_p A_pq = sum_p w'_pq / d_p units, anywhere from below 1 to far above.
    mode="conserve": A = W' D^-1, column-stochastic: label q splits exactly its own mass over itself and
    its neighbours in proportion to w'_pq, so sum_p [A e]_p = sum_q e_q.
    """
    k_labels = offdiag.shape[0]
    w_prime = (sp.identity(k_labels, format="csr") + prop_weight * offdiag).tocsr()
    if mode == "balanced":
        return doubly_stochastic(w_prime)
    if mode == "share":
        # Each label keeps 1/(1+alpha) of its mass and gives alpha/(1+alpha) to its neighbours in proportion to w_pq.
        out = np.asarray(offdiag.sum(axis=0)).ravel()
        spread = offdiag @ sp.diags(np.where(out > 0, 1.0 / np.maximum(out, 1e-300), 0.0))
        keep = np.where(out > 0, 1.0 / (1.0 + prop_weight), 1.0)
        give = np.where(out > 0, prop_weight / (1.0 + prop_weight), 0.0)
        return (sp.diags(keep) + spread @ sp.diags(give)).tocsr()
    if mode == "conserve":
        col_sums = np.asarray(w_prime.sum(axis=0)).ravel()
        return (w_prime @ sp.diags(1.0 / col_sums)).tocsr()
    row_sums = np.asarray(w_prime.sum(axis=1)).ravel()
    return (sp.diags(1.0 / row_sums) @ w_prime).tocsr()


@dataclass
class LabelGraph:
    offdiag: sp.csr_matrix  # (K, K) thresholded similarities, zero diagonal
    thresholds: list[float]  # tau of each block (inf where a block has no edges)


def block_degree(n_labels: int, relative_degree: float, target_degree: float | None) -> float:
    """Target average degree in a block of n_labels: absolute when given, else a share of the other labels."""
    if target_degree is not None:
        return float(target_degree)
    return relative_degree * max(n_labels - 1, 0)


def knn_graph(embeddings: np.ndarray, degree: float) -> sp.csr_matrix:
    """Directed W[p, q] = cos(p, q) for the round(degree) nearest labels p of each label q (positive similarities only).

    Column q lists where label q sends mass: every label reaches the same number of others, so no label
    gains from being a hub. Exact FAISS inner-product search.
    """
    import faiss

    k_labels = embeddings.shape[0]
    m = int(min(k_labels - 1, round(degree)))
    if m <= 0:
        return sp.csr_matrix((k_labels, k_labels))
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    sims, ids = index.search(embeddings, m + 1)
    src = np.repeat(np.arange(k_labels), m + 1)
    ids, sims = ids.ravel(), sims.ravel().astype(np.float64)
    # Drop the label itself (or, for exact duplicates, one extra) so each keeps at most m others.
    keep = (ids != src) & (ids >= 0) & (sims > 0)
    keep &= (np.cumsum(keep.reshape(k_labels, m + 1), axis=1) <= m).ravel()
    return sp.csr_matrix((sims[keep], (ids[keep], src[keep])), shape=(k_labels, k_labels))


def build_label_graph(
    labels: Labels,
    target_degree: float | None,
    threshold: float | None,
    *, max_edges: int,
    relative_degree: float = 0.0,
    kind: Literal["threshold", "knn"] = "threshold",
) -> LabelGraph:
    k_labels = labels.embeddings.shape[0]
    parts, taus = [], []
    for start, end in labels.blocks:
        block = np.ascontiguousarray(labels.embeddings[start:end])
        degree = block_degree(end - start, relative_degree, target_degree)
        if kind == "knn" and threshold is None:
            if degree * (end - start) > max_edges:
                raise ResourceError(
                    f"The MIG label graph would have more than {max_edges:,} edges; lower relative_degree or raise memory_budget_gib."
                )
            part = knn_graph(block, degree)
            taus.append(float(part.data.min()) if part.nnz else math.inf)
            parts.append(part)
            continue
        tau = threshold if threshold is not None else calibrate_threshold(block, degree)
        # Negative similarities would make propagation weights negative; they never become edges.
        tau = max(tau, 0.0) if math.isfinite(tau) else tau
        taus.append(tau)
        parts.append(similarity_graph(block, tau, max_edges))
    offdiag = sp.block_diag(parts, format="csr") if len(parts) > 1 else parts[0]
    offdiag = sp.csr_matrix(offdiag, shape=(k_labels, k_labels))
    return LabelGraph(offdiag=offdiag, thresholds=taus)

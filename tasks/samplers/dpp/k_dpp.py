"""Exact k-DPP sampling (Kulesza and Taskar 2012, Alg. 7-8) with the elementary symmetric polynomials in log space, and one draw over a partition."""

import math

import numpy as np

from ...errors import ConfigError
from .greedy_map import _log_pivots
from .kernels import kernel_matrix


def sample_partition(
    x: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    kernel: str = "rbf",
    sigma: float | None = None,
    jitter: float = 1e-6,
    q2: np.ndarray | None = None,
    return_eigenvalues: bool = False,
):
    """One exact k-DPP draw over the rows of x with L = diag(q)(K + εI)diag(q).

    Returns (rows in sampling order, their log pivots [, the clipped eigenvalues of L]). k = 1 is drawn
    directly with P(i) ∝ L_ii (the k-DPP law for one item), without the eigendecomposition.
    Raises ConfigError when L has fewer than k positive eigenvalues.
    """
    m = len(x)
    if k == 1 and not return_eigenvalues:
        diag = (1.0 + jitter) * (q2 if q2 is not None else np.ones(m))
        j = int(np.searchsorted(np.cumsum(diag), rng.random() * diag.sum(), side="right"))
        j = min(j, m - 1)
        return np.array([j], dtype=np.int64), np.array([math.log(diag[j])])
    lmat = kernel_matrix(x, x, kernel, sigma=sigma, jitter=jitter)
    if q2 is not None:
        q = np.sqrt(q2)
        lmat *= q[:, None]
        lmat *= q[None, :]
    eigvals, eigvecs = np.linalg.eigh(lmat)
    try:
        local = sample_k_dpp(eigvals, eigvecs, k, rng)
    except ValueError as exc:
        raise ConfigError(f"dpp mode='sample': {exc}; set jitter > 0, use kernel='rbf' or lower the budget.") from None
    gains = _log_pivots(lmat[np.ix_(local, local)])
    if return_eigenvalues:
        return local, gains, np.clip(eigvals, 0, None)
    return local, gains


def _sample_bytes(m: int) -> int:
    """Bytes of one exact k-DPP draw over m rows: the m x m kernel, its eigenvectors and eigh's workspace."""
    return 3 * int(m) * int(m) * 8


def _partition_rng(seed: int, part: int) -> np.random.Generator:
    """The generator of one partition (-1: the whole pool): seeded by (seed, partition), so the result
    does not depend on the order the workers run the partitions in."""
    return np.random.default_rng([int(seed) % 2**63, int(part) + 1])


def log_elementary_symmetric(log_lam: np.ndarray, k: int) -> np.ndarray:
    """log E[l, m] for l = 0..k, m = 0..N: log of the l-th elementary symmetric polynomial of the first m eigenvalues.

    KT Alg. 7 in log space (E[l, m] = E[l, m-1] + λ_m E[l-1, m-1]), so large k or λ never overflow.
    """
    n = len(log_lam)
    table = np.full((k + 1, n + 1), -np.inf)
    table[0, :] = 0.0
    for m in range(1, n + 1):
        table[1:, m] = np.logaddexp(table[1:, m - 1], log_lam[m - 1] + table[:-1, m - 1])
    return table


def sample_k_dpp(eigvals: np.ndarray, eigvecs: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """One exact draw of a k-DPP with kernel L = V diag(λ) Vᵀ; returns k distinct rows in sampling order.

    Phase 1 (KT Alg. 8): keep eigenvector m with probability λ_m E[l-1, m-1] / E[l, m], from the last
    down, l the number still needed. Phase 2: the projection DPP of the kept vectors by the chain rule,
    each row drawn with probability of its residual norm, residuals updated by Gram-Schmidt (DPPy 'GS').
    Raises ValueError when L has fewer than k positive eigenvalues.
    """
    lam = np.clip(np.asarray(eigvals, dtype=np.float64), 0.0, None)
    n = len(lam)
    with np.errstate(divide="ignore"):
        log_lam = np.where(lam > 0, np.log(np.where(lam > 0, lam, 1.0)), -np.inf)
    table = log_elementary_symmetric(log_lam, k)
    if not np.isfinite(table[k, n]):
        raise ValueError(f"the kernel has {int(np.sum(lam > 0))} positive eigenvalues, fewer than k={k}")
    kept: list[int] = []
    remaining = k
    for m in range(n, 0, -1):
        if remaining == 0:
            break
        if m == remaining:
            # All the rest must be kept; rounding in the ratio below could otherwise drop one.
            kept.extend(range(m - 1, -1, -1))
            break
        p = math.exp(min(0.0, log_lam[m - 1] + table[remaining - 1, m - 1] - table[remaining, m]))
        if rng.random() < p:
            kept.append(m - 1)
            remaining -= 1
    v = np.ascontiguousarray(eigvecs[:, kept], dtype=np.float64)
    norms2 = np.einsum("ij,ij->i", v, v)
    chol = np.zeros((n, k))
    rows = np.empty(k, dtype=np.int64)
    for it in range(k):
        p = np.clip(norms2, 0.0, None)
        p[rows[:it]] = 0.0
        cdf = np.cumsum(p)
        j = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
        j = min(j, n - 1)
        rows[it] = j
        col = v @ v[j]
        if it:
            col -= chol[:, :it] @ chol[j, :it]
        col /= math.sqrt(norms2[j])
        chol[:, it] = col
        norms2 -= col * col
    return rows

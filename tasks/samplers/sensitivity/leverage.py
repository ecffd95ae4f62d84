"""Leverage scores and Lewis weights of the embedding matrix."""

import math

import numpy as np

from ...errors import ConfigError
from .memory import _check_dense_memory, _chunk_rows


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
    *, p: float = 1.0,
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

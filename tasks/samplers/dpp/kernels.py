"""DPP kernels: the RBF median heuristic, the dense RBF or cosine kernel between unit-norm rows, and the quality factor q²."""

import numpy as np


# Relative floor for quality (after normalising to max 1): zero-quality rows stay selectable, last.
_QUALITY_FLOOR = 1e-12


def median_distance(embeddings: np.ndarray, rng: np.random.Generator, sample: int = 1000) -> float:
    """Median Euclidean distance between distinct rows of a seeded sample (the RBF median heuristic).

    Falls back to the median of the positive distances when most pairs are duplicates, and to 1.0
    when there are none.
    """
    n = embeddings.shape[0]
    idx = np.sort(rng.choice(n, size=min(n, sample), replace=False))
    s = embeddings[idx].astype(np.float64)
    sq = np.einsum("ij,ij->i", s, s)
    iu = np.triu_indices(len(idx), 1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (s @ s.T))[iu]
    d = np.sqrt(np.clip(d2, 0.0, None))
    positive = d[d > 1e-6]
    if len(d) == 0 or len(positive) == 0:
        return 1.0
    med = float(np.median(d))
    return med if med > 1e-6 else float(np.median(positive))


def kernel_matrix(a: np.ndarray, b: np.ndarray, kernel: str, *, sigma: float | None, jitter: float = 0.0) -> np.ndarray:
    """Dense float64 kernel between row sets a and b of unit-norm vectors; jitter is added on the diagonal when a is b."""
    a64 = _unit_float64(a)
    g = a64 @ (a64 if a is b else _unit_float64(b)).T
    if kernel == "rbf":
        # |x - y|^2 = 2 - 2 x.y for unit-norm rows.
        g = np.exp((np.minimum(g, 1.0) - 1.0) / (sigma * sigma))
    if a is b:
        np.fill_diagonal(g, 1.0 + jitter)
    return g


def _unit_float64(x: np.ndarray) -> np.ndarray:
    """float64 copy renormalised to unit norm: the float32 rounding of the norms (~1e-7) would otherwise
    perturb the kernel by about the default jitter. (Greedy keeps float32 rows above 1 GiB of copy.)"""
    x64 = np.array(x, dtype=np.float64)
    norms = np.linalg.norm(x64, axis=1, keepdims=True)
    x64 /= np.where(norms > 0, norms, 1.0)
    return x64


def _quality_squared(quality: np.ndarray | None, power: float) -> np.ndarray | None:
    """q² with q = quality^power normalised to max 1 (which only adds a constant per pick), floored so zero quality comes last."""
    if quality is None or power == 0:
        return None
    qual = np.asarray(quality, dtype=np.float64)
    top = qual.max() if len(qual) else 0.0
    if not top > 0:
        return None
    q = np.maximum(qual / top, _QUALITY_FLOOR) ** power
    return q * q

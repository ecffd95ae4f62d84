"""Log-determinant diversity of any selection under a unit-diagonal RBF or cosine kernel (Wang et al.): the DPP sampler's diagnostic and the report's measure."""

from typing import Literal

import numpy as np

from .blas_threads import single_threaded_blas
from .kernels import kernel_matrix, median_distance


def log_det_diversity(
    embeddings: np.ndarray,
    rows: np.ndarray,
    *, kernel: Literal["rbf", "cosine"] = "rbf",
    sigma: float | None = None,
    jitter: float = 1e-6,
    subset_size: int = 1000,
    n_subsets: int = 5,
    seed: int = 0,
) -> dict:
    """Log-determinant diversity of any selection (Wang et al.'s log-det measure), for the report.

    The kernel is K + εI rescaled to unit diagonal, (K + εI) / (1 + ε), with K rbf (σ: the median
    pairwise distance of a seeded sample of the whole corpus, so it is the same for every sampler's
    selection) or cosine. Quality is not used: this measures diversity only.

    Returns a dict with
      log_det:         log det of that kernel restricted to the rows (averaged over subsets, see below);
      log_det_per_row: log_det / (rows used per subset), the mean log pivot. Hadamard's inequality makes
                       it <= 0 for a unit-diagonal kernel; 0 means orthogonal (maximally diverse) rows and
                       more negative means less diverse. Wang et al.'s LDD is its negative (lower = more diverse).
      subset_size, n_subsets, kernel, sigma, jitter.
    Selections larger than subset_size are measured on n_subsets random subsets of exactly subset_size
    rows (drawn from `seed`), so values are comparable across selections of different sizes; smaller
    selections are measured whole (compare those only at equal sizes).
    """
    rows = np.asarray(rows, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if kernel == "rbf" and sigma is None:
        sigma = median_distance(embeddings, rng)
    if len(rows) == 0:
        return {"log_det": 0.0, "log_det_per_row": 0.0, "subset_size": 0, "n_subsets": 0, "kernel": kernel, "sigma": sigma, "jitter": jitter}
    if len(rows) <= subset_size:
        subsets = [rows]
    else:
        subsets = [np.sort(rng.choice(rows, size=subset_size, replace=False)) for _ in range(n_subsets)]
    values = []
    with single_threaded_blas():
        for s in subsets:
            xs = embeddings[s]
            ks = kernel_matrix(xs, xs, kernel, sigma=sigma, jitter=jitter) / (1.0 + jitter)
            values.append(_logdet_psd(ks))
    log_det = float(np.mean(values))
    size = len(subsets[0])
    return {
        "log_det": log_det,
        "log_det_per_row": log_det / size,
        "subset_size": int(size),
        "n_subsets": len(subsets),
        "kernel": kernel,
        "sigma": None if sigma is None else float(sigma),
        "jitter": float(jitter),
    }


def _logdet_psd(mat: np.ndarray) -> float:
    try:
        return float(2.0 * np.sum(np.log(np.diag(np.linalg.cholesky(mat)))))
    except np.linalg.LinAlgError:
        # Rounding made it indefinite: clip the spectrum at a tiny positive value instead.
        lam = np.linalg.eigvalsh(mat)
        return float(np.sum(np.log(np.clip(lam, 1e-300, None))))

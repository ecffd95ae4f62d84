"""Greedy MAP inference for a DPP: the incremental-Cholesky algorithm of Chen, Zhang and Zhou (NeurIPS 2018), and the naive reference."""

import math

import numpy as np

from ...errors import ConfigError
from .kernels import _unit_float64


# A pivot d² of the unit-diagonal kernel below this means the row is numerically in the span of
# the selection (fast-map-dpp's stopping threshold).
_PIVOT_TOL = 1e-10


def fast_greedy_map(
    x: np.ndarray,
    budget: int,
    *,
    kernel: str = "rbf",
    sigma: float | None = None,
    jitter: float = 1e-6,
    q2: np.ndarray | None = None,
    conditioned_on: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy MAP of the DPP with L = diag(q)(K + εI)diag(q) by incremental Cholesky (Chen et al. 2018, Alg. 1).

    Parameters
    ----------
    x : (n, D) unit-norm embeddings of the candidates.
    budget : rows to pick, exactly.
    kernel, sigma, jitter : K is rbf exp((x.y - 1) / σ²) or cosine x.y, plus jitter on the diagonal.
    q2 : (n,) squared quality (None: constant 1).
    conditioned_on : rows taken first and not returned (earlier rounds): new picks are diverse w.r.t. them.
    rng : breaks exact ties (the first pick without quality, where every row has the same gain) at
        random; None breaks them to the lowest row.

    Returns
    -------
    rows : (budget,) picks in order.
    gains : (budget,) log(q_j² d²_j), the marginal gain log det L_{Y+j} - log det L_Y at pick time;
        their sum is log det L_Y (given `conditioned_on`), and they never increase.

    Notes
    -----
    One kernel row per pick, computed from x: O(n·budget·(budget + D)) time, a budget x n float64
    factor in memory. Ties go to the lowest row unless `rng` is given. Raises ConfigError if the best pivot falls below
    1e-10 (only possible with jitter = 0: duplicates or a rank-deficient kernel).
    """
    n, dim = x.shape
    forced = np.asarray(conditioned_on if conditioned_on is not None else [], dtype=np.int64)
    total = len(forced) + budget
    if budget > n - len(forced):
        raise ConfigError(f"cannot pick {budget} of {n - len(forced)} free rows")
    # Rows of the kernel come from (D, n) columns: a gemv over contiguous columns is the faster layout here.
    xt = np.ascontiguousarray((_unit_float64(x) if n * dim * 8 <= 2**30 else x).T)
    inv_s2 = 1.0 / (sigma * sigma) if kernel == "rbf" else 0.0
    factor = np.empty((total, n), dtype=np.float64)
    d2 = np.full(n, 1.0 + jitter)
    rows = np.empty(budget, dtype=np.int64)
    gains = np.empty(budget, dtype=np.float64)
    k = 0  # rows of the factor in use
    picked = 0
    for t in range(total):
        if t < len(forced):
            j = int(forced[t])
            if d2[j] <= _PIVOT_TOL:
                # Already in the span of earlier conditioning rows: it adds nothing to condition on.
                d2[j] = -np.inf
                continue
        else:
            score = d2 if q2 is None else d2 * q2
            j = int(np.argmax(score))
            if rng is not None:
                ties = np.flatnonzero(score == score[j])
                if len(ties) > 1:
                    j = int(ties[rng.integers(len(ties))])
            if not d2[j] > _PIVOT_TOL:
                raise ConfigError(
                    f"the kernel has numerical rank {k} < {budget + len(forced)} rows asked for "
                    f"(duplicates or too few dimensions); set jitter > 0 or use kernel='rbf'"
                )
            rows[picked] = j
            gains[picked] = math.log(score[j])
            picked += 1
            if picked == budget:
                break
        row = np.asarray(xt[:, j] @ xt, dtype=np.float64)
        if kernel == "rbf":
            np.minimum(row, 1.0, out=row)
            row -= 1.0
            row *= inv_s2
            np.exp(row, out=row)
        row[j] = 1.0 + jitter
        if k:
            row -= factor[:k, j] @ factor[:k]
        row /= math.sqrt(d2[j])
        factor[k] = row
        k += 1
        row *= row
        d2 -= row
        d2[j] = -np.inf
    return rows, gains


def naive_greedy_map(lmat: np.ndarray, budget: int, first: int | None = None) -> np.ndarray:
    """Reference greedy: at each step the row maximising slogdet(L_{Y+j}), ties (within 1e-10) to the lowest row.

    `first` fixes the first pick (to compare with a run whose first pick was a seeded tie-break).
    O(N·B) determinants of up to B x B: O(N·B⁴) time; for tests and benchmarks only.
    """
    chosen: list[int] = [] if first is None else [int(first)]
    for _ in range(budget - len(chosen)):
        values = np.full(lmat.shape[0], -np.inf)
        for j in range(lmat.shape[0]):
            if j in chosen:
                continue
            idx = chosen + [j]
            sign, val = np.linalg.slogdet(lmat[np.ix_(idx, idx)])
            if sign > 0:
                values[j] = val
        chosen.append(int(np.flatnonzero(values >= values.max() - 1e-10)[0]))
    return np.array(chosen, dtype=np.int64)


def _greedy_bytes(budget: int, n: int, dim: int) -> int:
    """Bytes of greedy MAP: the float64 factor plus the float64 copy of the embeddings and a few n-vectors."""
    copy = n * dim * 8 if n * dim * 8 <= 2**30 else 0
    return int(budget) * int(n) * 8 + copy + 6 * int(n) * 8


def _log_pivots(lsub: np.ndarray) -> np.ndarray:
    """Marginal log-det gains of a selection in its order: 2 log diag of the Cholesky factor of L_Y."""
    try:
        return 2.0 * np.log(np.diag(np.linalg.cholesky(lsub)))
    except np.linalg.LinAlgError:
        # Numerically singular (jitter 0): report the gain as the log of a tiny pivot rather than fail after sampling.
        vals = []
        for t in range(1, len(lsub) + 1):
            sign, v = np.linalg.slogdet(lsub[:t, :t])
            vals.append(v if sign > 0 else math.log(_PIVOT_TOL))
        return np.diff(np.concatenate([[0.0], vals]))

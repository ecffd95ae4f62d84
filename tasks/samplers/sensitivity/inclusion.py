"""Fixed-size sampling with exact inclusion probabilities: pi from q, pivotal and systematic sampling, and the cap on oversampling."""

from typing import Literal

import numpy as np

from ...errors import ConfigError


# Pivotal-step results this close to 0 or 1 are rounding residue (s - 1 with s <= 2 is exact to ~2e-16)
# and are settled. Genuine probabilities are far larger: every method's q is at least about 1/(2N).
_SETTLE_EPS = 1e-14


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
    *, scheme: Literal["pivotal", "systematic"] = "pivotal",
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

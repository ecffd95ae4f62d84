"""Greedy maximisation of information gain: exact or linearized gains, lazy evaluation, exclusion of earlier rounds."""

import heapq
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from ...errors import ConfigError
from .candidates import Candidates
from .information import Phi, information


# Rows whose gains are evaluated together in one vectorised call (bounds temporary memory).
GAIN_CHUNK = 65536


# Candidates re-evaluated together at the top of the lazy heap before checking the next bound.
LAZY_BLOCK = 4


@dataclass
class GreedyResult:
    rows: np.ndarray
    gains: np.ndarray  # marginal gain (of the chosen kind) at pick time
    information: np.ndarray  # exact E(S_t) after each pick
    x: np.ndarray  # final propagated label mass
    evaluations: int  # candidate gain evaluations
    bound_violations: int  # re-evaluated gains above their stale bound (floating-point noise), expected 0


class _GainState:
    """Propagated mass x of the selected set, with per-label caches, and gains of candidates."""

    def __init__(self, unit: sp.csr_matrix, phi: Phi, gain: str, x0: np.ndarray):
        self.indptr, self.indices, self.data = unit.indptr, unit.indices, unit.data
        self.phi, self.gain = phi, gain
        self.x = np.array(x0, dtype=np.float64)
        self.cached = phi.cache(self.x)
        self.grad = phi.derivative(self.x)
        self.information = information(self.x, phi)
        self.evaluations = 0

    def _gather(self, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts = self.indptr[groups]
        lengths = self.indptr[groups + 1] - starts
        segment = np.repeat(np.arange(len(groups)), lengths)
        offsets = np.cumsum(lengths) - lengths
        positions = np.arange(int(lengths.sum())) - np.repeat(offsets - starts, lengths)
        return segment, positions

    def gains(self, groups: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """Marginal gains of scale * unit[group]; each is summed in CSR order from 0, whatever else is evaluated with it."""
        groups = np.asarray(groups, dtype=np.int64)
        scales = np.asarray(scales, dtype=np.float64)
        self.evaluations += len(groups)
        out = np.empty(len(groups))
        for start in range(0, len(groups), GAIN_CHUNK):
            chunk = groups[start : start + GAIN_CHUNK]
            segment, positions = self._gather(chunk)
            cols = self.indices[positions]
            vals = self.data[positions] * scales[start : start + len(chunk)][segment]
            if self.gain == "linearized":
                terms = vals * self.grad[cols]
            else:
                terms = self.phi.increment(self.x[cols], self.cached[cols], vals)
            out[start : start + len(chunk)] = np.bincount(segment, weights=terms, minlength=len(chunk))
        return out

    def add(self, group: int, scale: float) -> float:
        """Add scale * unit[group] to x; return the exact information gain."""
        lo, hi = self.indptr[group], self.indptr[group + 1]
        cols, vals = self.indices[lo:hi], self.data[lo:hi] * np.float64(scale)
        delta = float(self.phi.increment(self.x[cols], self.cached[cols], vals).sum())
        self.x[cols] += vals
        self.cached[cols] = self.phi.cache(self.x[cols])
        self.grad[cols] = self.phi.derivative(self.x[cols])
        self.information += delta
        return delta


def greedy(
    candidates: Candidates,
    budget: int,
    phi: Phi,
    *, gain: Literal["exact", "linearized"] = "exact",
    x0: np.ndarray | None = None,
    excluded_rows: np.ndarray | None = None,
    lazy: bool = True,
) -> GreedyResult:
    """Pick `budget` rows one at a time by largest marginal gain, ties to the lower `candidates.tie_rank`.

    lazy=False re-scores every candidate at every step (the reference); lazy=True keeps a heap of stale
    gains and re-scores only its top, and selects the same rows. Once the best gain is 0, every
    remaining gain is 0 and the rest of the budget is filled in tie-rank order, as a plain greedy would.
    """
    rank = candidates.tie_rank
    k_labels = candidates.unit.shape[1]
    state = _GainState(candidates.unit, phi, gain, np.zeros(k_labels) if x0 is None else x0)
    member_rows, member_scale, member_ptr = candidates.member_rows, candidates.member_scale, candidates.member_ptr
    n_rows = len(candidates.group_of_row)
    taken = np.zeros(n_rows, dtype=bool)
    if excluded_rows is not None and len(excluded_rows):
        taken[excluded_rows] = True
        keep = ~taken[member_rows]
        group = np.repeat(np.arange(len(member_ptr) - 1), np.diff(member_ptr))
        counts = np.bincount(group[keep], minlength=len(member_ptr) - 1)
        member_rows, member_scale = member_rows[keep], member_scale[keep]
        member_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    next_pos = member_ptr[:-1].copy()
    end_pos = member_ptr[1:]
    if budget > len(member_rows):
        raise ConfigError(f"Budget of {budget} rows is more than the {len(member_rows)} rows MIG may still select.")

    rows = np.empty(budget, dtype=np.int64)
    gains = np.empty(budget)
    info = np.empty(budget)
    violations = 0

    def take(group: int, t: int, g: float) -> None:
        rows[t] = member_rows[next_pos[group]]
        taken[rows[t]] = True
        gains[t] = g
        state.add(group, member_scale[next_pos[group]])
        next_pos[group] += 1
        info[t] = state.information

    def fill_zero_gain(t: int) -> GreedyResult:
        free = np.flatnonzero(~taken)
        rest = free[np.argsort(rank[free], kind="stable")[: budget - t]]
        rows[t:], gains[t:], info[t:] = rest, 0.0, state.information
        return GreedyResult(rows, gains, info, state.x, state.evaluations, violations)

    if not lazy:
        for t in range(budget):
            open_groups = np.flatnonzero(next_pos < end_pos)
            g = state.gains(open_groups, member_scale[next_pos[open_groups]])
            best = np.lexsort((rank[member_rows[next_pos[open_groups]]], -g))[0]
            if g[best] <= 0:
                return fill_zero_gain(t)
            take(int(open_groups[best]), t, float(g[best]))
        return GreedyResult(rows, gains, info, state.x, state.evaluations, 0)

    # Groups never re-evaluated stay in one array sorted by initial gain; re-evaluated ones go on a heap.
    open_groups = np.flatnonzero(next_pos < end_pos)
    initial = state.gains(open_groups, member_scale[next_pos[open_groups]])
    order = np.lexsort((rank[member_rows[next_pos[open_groups]]], -initial))
    sorted_groups = open_groups[order].tolist()
    sorted_keys = list(zip((-initial[order]).tolist(), rank[member_rows[next_pos[open_groups[order]]]].tolist()))
    at = 0
    heap: list[tuple[float, int, int]] = []  # (-bound, tie rank of the row on offer, group)

    def peek() -> tuple[float, int] | None:
        best = sorted_keys[at] if at < len(sorted_keys) else None
        if heap and (best is None or heap[0][:2] < best):
            best = heap[0][:2]
        return best

    def pop() -> tuple[int, float]:
        nonlocal at
        if heap and (at >= len(sorted_keys) or heap[0][:2] < sorted_keys[at]):
            neg_bound, _, group = heapq.heappop(heap)
            return group, -neg_bound
        at += 1
        return sorted_groups[at - 1], -sorted_keys[at - 1][0]

    for t in range(budget):
        block_groups: list[int] = []
        block_gains: list[float] = []
        best_key: tuple[float, int] | None = None
        best_index = -1
        want = LAZY_BLOCK
        while True:
            popped, bounds = [], []
            while len(popped) < want and peek() is not None:
                group, bound = pop()
                popped.append(group)
                bounds.append(bound)
            if popped:
                popped_arr = np.asarray(popped, dtype=np.int64)
                fresh = state.gains(popped_arr, member_scale[next_pos[popped_arr]])
                violations += int(np.count_nonzero(fresh > np.asarray(bounds)))
                for group, g in zip(popped, fresh.tolist()):
                    key = (-g, int(rank[member_rows[next_pos[group]]]))
                    block_groups.append(group)
                    block_gains.append(g)
                    if best_key is None or key < best_key:
                        best_key, best_index = key, len(block_groups) - 1
            following = peek()
            # Every stale bound is >= its true gain, so a fresh key ahead of the next bound is the true best.
            if following is None or best_key < following:
                break
            want *= 2
        if block_gains[best_index] <= 0:
            return fill_zero_gain(t)
        chosen = block_groups[best_index]
        take(chosen, t, block_gains[best_index])
        # Fresh gains stay valid upper bounds: x only grows, and a group's next row has a scale no larger.
        for group, g in zip(block_groups, block_gains):
            if next_pos[group] < end_pos[group]:
                heapq.heappush(heap, (-g, int(rank[member_rows[next_pos[group]]]), group))
    return GreedyResult(rows, gains, info, state.x, state.evaluations, violations)

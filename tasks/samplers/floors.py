"""Coverage floors: every group (or label) gets at least N selected rows when the budget allows.

A sampler's selection can leave a small group out entirely (a coverage method skips rare regions, random
misses small groups). `apply_floors` tops up each short group with the *same sampler* run on that group's
unselected rows alone, then gives the budget back by dropping the lowest-ranked rows of
groups above their floor, so the selection keeps its exact budget and its order of preference.

When the floors do not fit the budget (N x groups > budget), the floor is lowered to the largest value
that fits for every group, and the diagnostics say so. Plain code: no Prefect import.
"""

import numpy as np

from ..errors import ConfigError
from .base import Sampler, Selection, SelectionInput, subset_input
from .quotas import allocate_weighted


def row_keys(data: SelectionInput, by: str) -> list[tuple[str, ...]]:
    """Each row's keys: its group (by='group') or its labels (by='labels'); errors name the missing column."""
    if by == "group":
        if data.groups is None:
            raise ConfigError("--min-per-group needs a group column: pass --group COL.")
        return [() if g is None else (str(g),) for g in data.groups]
    if by == "labels":
        if data.labels is None:
            raise ConfigError("--min-per-label needs a labels column: pass --labels COL.")
        return [tuple(dict.fromkeys(str(t) for t in row)) for row in data.labels]
    raise ConfigError(f"Unknown floor key {by!r}; use 'group' or 'labels'.")


def fitted_floor(sizes: np.ndarray, floor: int, budget: int) -> int:
    """The largest floor f <= `floor` such that every key can get min(f, size) rows within `budget`."""
    sizes = np.asarray(sizes, dtype=np.int64)
    f = int(floor)
    while f > 0 and int(np.minimum(sizes, f).sum()) > budget:
        f -= 1
    return f


def floor_quotas(sizes: np.ndarray, budget: int, floor: int) -> np.ndarray:
    """Per-group quotas for a per-group selection: each group min(floor, size) first (floor fitted to the
    budget), the rest of the budget in proportion to group size. Quotas sum to `budget` exactly."""
    sizes = np.asarray(sizes, dtype=np.int64)
    base = np.minimum(sizes, fitted_floor(sizes, floor, budget))
    rest = allocate_weighted(sizes.astype(np.float64), sizes - base, int(budget - base.sum()))
    return base + rest


def apply_floors(sampler: Sampler, data: SelectionInput, selection: Selection, budget: int, seed: int,
                 *, floor: int, by: str) -> Selection:
    """`selection` with every key of `by` holding at least min(floor, its rows) selected rows (floor fitted to the budget)."""
    if floor < 1:
        raise ConfigError(f"The coverage floor must be at least 1 row; got {floor}.")
    keys = row_keys(data, by)
    members: dict[str, list[int]] = {}
    for row, ks in enumerate(keys):
        for k in ks:
            members.setdefault(k, []).append(row)
    names = sorted(members)
    sizes = np.array([len(members[k]) for k in names])
    fitted = fitted_floor(sizes, floor, budget)
    target = {k: min(fitted, len(members[k])) for k in names}

    earlier = set() if data.previous_rows is None else {int(r) for r in data.previous_rows}
    rows = [int(r) for r in selection.rows]
    scores, weights = list(selection.scores), list(selection.weights)
    chosen = set(rows)
    count = {k: 0 for k in names}
    for r in rows:
        for k in keys[r]:
            count[k] += 1
    added: dict[str, int] = {}
    for k in names:
        need = target[k] - count[k]
        if need <= 0:
            continue
        # The sampler's own choice among the group's rows not selected yet.
        group = np.asarray([r for r in members[k] if r not in chosen and r not in earlier], dtype=np.int64)
        if len(group) < need:  # rows of earlier rounds are never selected again
            need = len(group)
        if need == 0:
            continue
        extra = sampler.select(subset_input(data, group), need, seed)
        for local, s, w in zip(extra.rows, extra.scores, extra.weights):
            r = int(group[local])
            rows.append(r)
            scores.append(float(s))
            weights.append(float(w))
            chosen.add(r)
            for kk in keys[r]:
                count[kk] += 1
        added[k] = need

    keep = np.ones(len(rows), dtype=bool)
    excess = len(rows) - budget
    protected = len(selection.rows)  # rows added for a floor are never given back
    for pos in range(protected - 1, -1, -1):
        if excess == 0:
            break
        r = rows[pos]
        if all(count[k] > target[k] for k in keys[r]):
            keep[pos] = False
            excess -= 1
            for k in keys[r]:
                count[k] -= 1
    for pos in range(len(rows) - 1, -1, -1):  # multi-label corner case: floors cannot all hold
        if excess == 0:
            break
        if keep[pos]:
            keep[pos] = False
            excess -= 1
            for k in keys[rows[pos]]:
                count[k] -= 1
    short = {k: target[k] - count[k] for k in names if count[k] < target[k]}
    out = Selection(
        rows=np.asarray(rows, dtype=np.int64)[keep],
        scores=np.asarray(scores)[keep],
        weights=np.asarray(weights)[keep],
        clusters=selection.clusters if not added else None,  # a top-up's clusters are its own group's
        diagnostics=dict(selection.diagnostics),
    )
    out.diagnostics["coverage_floor"] = {
        "by": by, "requested": int(floor), "applied": int(fitted), "keys": len(names),
        "rows_added": int(sum(added.values())), "keys_topped_up": len(added),
        "keys_short": short,
        "note": ("importance weights of a floored selection are the sampler's own, not re-derived for the floors"
                 if added else "every key already met its floor"),
    }
    return out

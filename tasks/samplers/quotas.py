"""Splitting a budget over clusters: in proportion to size (`allocate_quotas`) or to weights, capped by capacity (`allocate_weighted`)."""

import numpy as np

from ..errors import ConfigError


def allocate_quotas(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Split `budget` over clusters in proportion to their sizes, never above a cluster's size.

    Largest-remainder rounding (ties to the lower cluster index); clusters too small for their
    share are filled completely and the rest of the budget is split again, in proportion to size,
    over the clusters that still have room. The quotas sum to the budget exactly.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if budget > sizes.sum():
        raise ConfigError(f"Budget {budget} exceeds the {int(sizes.sum())} rows in the clusters.")
    return allocate_weighted(sizes.astype(np.float64), sizes, budget)



def allocate_weighted(weights: np.ndarray, capacity: np.ndarray, budget: int) -> np.ndarray:
    """Split `budget` over clusters in proportion to `weights`, never above a cluster's `capacity`.

    Largest-remainder rounding (ties to the lower cluster index); clusters whose share exceeds
    their capacity are filled and the rest is split again over the others. Zero-weight clusters get
    rows only when the positive-weight ones are full (then in proportion to their room), so the
    quotas always sum to the budget exactly.
    """
    weights = np.asarray(weights, dtype=np.float64)
    capacity = np.asarray(capacity, dtype=np.int64)
    if weights.shape != capacity.shape or np.any(~np.isfinite(weights)) or np.any(weights < 0):
        raise ConfigError("Cluster weights must be finite, non-negative and one per cluster.")
    if np.any(capacity < 0):
        raise ConfigError("Cluster capacities must be non-negative.")
    if budget > capacity.sum():
        raise ConfigError(f"Budget {budget} exceeds the {int(capacity.sum())} rows left in the clusters.")
    quotas = np.zeros(len(capacity), dtype=np.int64)
    remaining = int(budget)
    open_ = (capacity > 0) & (weights > 0)
    while remaining > 0:
        room = capacity - quotas
        if not open_.any():
            # Only zero-weight clusters have room left: the budget is exact, so fill them by room.
            weights = room.astype(np.float64)
            open_ = room > 0
            continue
        share = np.where(open_, weights, 0.0)
        ideal = remaining * share / share.sum()
        full = open_ & (ideal >= room)
        if full.any():
            # Saturate the clusters that cannot hold their share, then re-split the rest.
            remaining -= int(room[full].sum())
            quotas[full] = capacity[full]
            open_ &= ~full
            continue
        base = np.floor(ideal).astype(np.int64)
        leftover = remaining - int(base.sum())
        remainder = np.where(open_, ideal - base, -1.0)
        order = np.lexsort((np.arange(len(capacity)), -remainder))
        base[order[:leftover]] += 1
        quotas += base
        remaining = 0
    return quotas

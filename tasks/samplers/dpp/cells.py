"""Cutting the pool into cells: per-cell quotas under a cap, why a run is partitioned, and the kernel-rank check."""

import numpy as np

from ...errors import ConfigError
from ..quotas import allocate_quotas
from .greedy_map import _greedy_bytes
from .options import DPPOptions


def _check_rank(count: int, kernel_rank: int, opts: DPPOptions, where: str) -> None:
    if opts.kernel == "cosine" and opts.jitter == 0 and count > kernel_rank:
        raise ConfigError(
            f"dpp: a cosine kernel on {where} has rank <= {kernel_rank} (the embedding dimension), so without jitter "
            f"it cannot give {count} rows; set jitter > 0, use kernel='rbf', or partition='auto' (greedy mode) so each partition selects fewer."
        )


def _partition_reason(partition, count, kernel_rank, *, x, limit) -> str:
    if partition == "always":
        return "partition='always'"
    if _greedy_bytes(count, x.shape[0], x.shape[1]) > limit:
        return "Cholesky factor above memory_limit_gib"
    return "budget above the kernel rank"


def capped_quotas(sizes: np.ndarray, caps: np.ndarray, budget: int) -> np.ndarray:
    """`allocate_quotas` (in proportion to size) with a per-partition cap: saturated partitions are fixed, the rest re-split."""
    sizes = np.asarray(sizes, dtype=np.int64)
    caps = np.minimum(np.asarray(caps, dtype=np.int64), sizes)
    if budget > caps.sum():
        raise ConfigError(
            f"dpp: the partitions can hold at most {int(caps.sum())} rows, below the budget of {budget}; "
            "raise n_partitions, set jitter > 0 or use kernel='rbf', or lower the budget."
        )
    quotas = np.zeros(len(sizes), dtype=np.int64)
    open_ = caps > 0
    remaining = int(budget)
    while remaining > 0:
        idx = np.flatnonzero(open_)
        trial = allocate_quotas(sizes[idx], remaining)
        over = trial > caps[idx]
        if not over.any():
            quotas[idx] = trial
            break
        quotas[idx[over]] = caps[idx[over]]
        remaining -= int(caps[idx[over]].sum())
        open_[idx[over]] = False
    return quotas

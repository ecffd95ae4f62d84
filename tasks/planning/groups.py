"""Per-group selection: the budget split over the groups (the plan), and the one selection merged from theirs.

plan_groups   each group's quota: in proportion to its size, or a floor first (min_per_group)
merge_arrays  the groups' arrays interleaved by rank, largest group first; dedup's arrays by dropped row
merged_record selection.json of the merge: per-group diagnostics, summed seconds and dedup counts
"""

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from ..errors import ConfigError
from ..io.results import DedupSummary, Selection
from ..samplers.floors import floor_quotas
from ..samplers.quotas import allocate_quotas

ARRAYS = ("rows", "scores", "weights", "clusters")
DEDUP_ARRAYS = ("dedup_dropped", "dedup_kept_for", "dedup_similarity")


class GroupQuota(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    group: str
    size: int
    quota: int


def plan_groups(groups: pl.Series, n_budget: int, min_per_group: int | None = None) -> list[GroupQuota]:
    """The budget split over the groups in proportion to their sizes (largest remainder, capped by size);
    with `min_per_group`, each group first gets that floor (fitted to the budget). Largest group first;
    groups with a quota of 0 are left out."""
    if groups.null_count():
        raise ConfigError(f"Per-group selection: {groups.null_count()} rows have no group value; fill the group column or drop them.")
    counts = groups.rename("group").value_counts().sort(["count", "group"], descending=[True, False])
    names, sizes = counts["group"].to_list(), counts["count"].to_numpy()
    quotas = floor_quotas(sizes, n_budget, min_per_group) if min_per_group else allocate_quotas(sizes, n_budget)
    return [GroupQuota(group=g, size=int(n), quota=int(q)) for g, n, q in zip(names, sizes, quotas) if q > 0]


def merge_arrays(arrays: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One selection's arrays from the groups': rank 0 of every group (in plan order), then rank 1, ..."""
    order = sorted((rank, g) for g, a in enumerate(arrays) for rank in range(len(a["rows"])))
    merged = {k: np.concatenate([arrays[g][k][rank : rank + 1] for rank, g in order]) for k in ARRAYS}
    if any(DEDUP_ARRAYS[0] in a for a in arrays):  # each group deduplicated inside itself: all of their dropped rows
        for k in DEDUP_ARRAYS:
            merged[k] = np.concatenate([a[k] for a in arrays if k in a])
        by_row = np.argsort(merged[DEDUP_ARRAYS[0]], kind="stable")
        merged.update({k: merged[k][by_row] for k in DEDUP_ARRAYS})
    return merged


def merged_record(parts: list[Selection], plan: list[GroupQuota], *, key: str, sampler: str,
                  budget: int | float, seed: int, arrays: str, n_rows: int) -> Selection:
    """The merged selection (not reused): the groups' scalar diagnostics side by side, their seconds and dedup summed."""
    dedup = None
    if parts[0].dedup is not None:
        dedup = DedupSummary(threshold=parts[0].dedup.threshold, rows_dropped=int(sum(p.dedup.rows_dropped for p in parts)))
    per_group = [{**g.model_dump(), "diagnostics": {k: v for k, v in p.diagnostics.items() if not isinstance(v, (list, dict))}}
                 for g, p in zip(plan, parts)]
    return Selection(key=key, sampler=sampler, options=parts[0].options, budget=n_rows, budget_requested=budget,
                     seed=seed, arrays=arrays, has_clusters=False, diagnostics={"per_group": per_group},
                     seconds=float(sum(p.seconds for p in parts)), dedup=dedup)

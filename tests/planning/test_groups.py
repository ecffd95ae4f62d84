"""planning/groups.py: the per-group quotas and the merge of the groups' selections (plain code, no Prefect)."""

import numpy as np
import polars as pl
import pytest

from selectflow.tasks.errors import ConfigError
from selectflow.tasks.io.results import DedupSummary, Selection
from selectflow.tasks.planning.groups import GroupQuota, merge_arrays, merged_record, plan_groups


def test_quotas_follow_group_sizes_largest_group_first():
    groups = pl.Series("group", ["b"] * 30 + ["a"] * 60 + ["c"] * 10)
    plan = plan_groups(groups, 10)
    assert [(g.group, g.size, g.quota) for g in plan] == [("a", 60, 6), ("b", 30, 3), ("c", 10, 1)]


def test_a_floor_per_group_comes_first_and_empty_quotas_are_left_out():
    groups = pl.Series("group", ["a"] * 90 + ["b"] * 9 + ["c"])
    assert sum(g.quota for g in plan_groups(groups, 10, min_per_group=2)) == 10
    assert {g.group: g.quota for g in plan_groups(groups, 10, min_per_group=2)}["c"] == 1  # capped by its size
    assert [g.group for g in plan_groups(groups, 2)] == ["a"]  # b and c get no row: not planned


def test_rows_without_a_group_are_refused():
    with pytest.raises(ConfigError, match="no group value"):
        plan_groups(pl.Series("group", ["a", None, "b"]), 2)


def _arrays(rows, dedup=None):
    rows = np.asarray(rows)
    out = {"rows": rows, "scores": rows * 1.0, "weights": np.ones(len(rows)), "clusters": np.full(len(rows), -1)}
    if dedup is not None:
        out.update({"dedup_dropped": np.asarray(dedup[0]), "dedup_kept_for": np.asarray(dedup[1]),
                    "dedup_similarity": np.asarray(dedup[2], dtype=float)})
    return out


def test_merge_interleaves_by_rank_in_plan_order():
    merged = merge_arrays([_arrays([10, 11, 12]), _arrays([20]), _arrays([30, 31])])
    assert merged["rows"].tolist() == [10, 20, 30, 11, 31, 12]
    assert merged["scores"].tolist() == [10.0, 20.0, 30.0, 11.0, 31.0, 12.0]
    assert "dedup_dropped" not in merged


def test_merge_keeps_every_groups_dropped_rows_sorted_by_row():
    merged = merge_arrays([_arrays([1], ([7, 3], [1, 1], [0.99, 0.95])), _arrays([2], ([5], [2], [0.97]))])
    assert merged["dedup_dropped"].tolist() == [3, 5, 7]
    assert merged["dedup_kept_for"].tolist() == [1, 2, 1]
    assert merged["dedup_similarity"].tolist() == [0.95, 0.97, 0.99]


def _part(key, seconds, diagnostics, dedup=None):
    return Selection(key=key, sampler="kmeans", options={"k": 2}, budget=2, budget_requested=2, seed=0, arrays=f"{key}.npz",
                     has_clusters=True, diagnostics=diagnostics, seconds=seconds, dedup=dedup, reused=True)


def test_merged_record_sums_seconds_and_dedup_and_keeps_scalar_diagnostics():
    plan = [GroupQuota(group="a", size=5, quota=2), GroupQuota(group="b", size=4, quota=2)]
    parts = [_part("p1", 1.5, {"inertia": 2.0, "quotas": [1, 1]}, DedupSummary(threshold=0.9, rows_dropped=1)),
             _part("p2", 0.5, {"inertia": 3.0}, DedupSummary(threshold=0.9, rows_dropped=2))]
    merged = merged_record(parts, plan, key="m", sampler="kmeans", budget=0.5, seed=3, arrays="m.npz", n_rows=4)
    assert merged.budget == 4 and merged.budget_requested == 0.5 and merged.seed == 3 and not merged.has_clusters
    assert merged.seconds == 2.0 and merged.dedup == DedupSummary(threshold=0.9, rows_dropped=3)
    assert merged.diagnostics["per_group"] == [{"group": "a", "size": 5, "quota": 2, "diagnostics": {"inertia": 2.0}},
                                               {"group": "b", "size": 4, "quota": 2, "diagnostics": {"inertia": 3.0}}]
    assert not merged.reused and merged.options == {"k": 2}

"""Coverage floors: every group or label gets at least N rows when the budget allows, for every sampler."""

from dataclasses import replace

import numpy as np
import pytest

from selectflow.tasks.errors import ConfigError
from selectflow.tasks.samplers import SAMPLERS, SelectionInput, get_sampler
from selectflow.tasks.samplers.floors import apply_floors, fitted_floor, floor_quotas

from .conftest import clustered_embeddings


def skewed_input() -> SelectionInput:
    """One big group of 280 rows and four small ones (5 each), far from the big one in embedding space."""
    big = clustered_embeddings(280, 16, 4, seed=1)
    small = clustered_embeddings(20, 16, 4, seed=99)
    groups = np.array(["big"] * 280 + [f"small{i // 5}" for i in range(20)])
    labels = [("common",)] * 280 + [("common", f"rare{i // 10}") for i in range(20)]
    return SelectionInput(embeddings=np.vstack([big, small]), groups=groups, labels=labels,
                          ids=np.array([f"r{i:03d}" for i in range(300)]), quality=np.ones(300))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_group_gets_its_floor_and_the_budget_stays_exact(name):
    data = skewed_input()
    sampler = get_sampler(name)
    base = sampler.select(data, 30, seed=0)
    floored = apply_floors(sampler, data, base, 30, seed=0, floor=3, by="group")
    assert len(floored.rows) == 30 and len(np.unique(floored.rows)) == 30
    counts = {g: int(np.sum(data.groups[floored.rows] == g)) for g in np.unique(data.groups)}
    assert all(counts[f"small{i}"] >= 3 for i in range(4)), counts
    assert floored.diagnostics["coverage_floor"]["keys_short"] == {}
    # Rows given back are the sampler's lowest-ranked picks of the big group; the kept picks stay in order.
    kept = [r for r in base.rows if r in set(floored.rows)]
    assert list(floored.rows[: len(kept)]) == kept


def test_labels_floor_and_floor_fitted_to_the_budget():
    data = skewed_input()
    sampler = get_sampler("random")
    sel = apply_floors(sampler, data, sampler.select(data, 12, seed=1), 12, seed=1, floor=4, by="labels")
    have = {k: sum(k in data.labels[r] for r in sel.rows) for k in ("rare0", "rare1")}
    assert have == {"rare0": 4, "rare1": 4} or min(have.values()) >= 4
    # 5 groups x 3 rows = 15 > 10: the floor is lowered to 2 for everyone, and the diagnostics say so.
    assert fitted_floor(np.array([280, 5, 5, 5, 5]), 3, 10) == 2
    sel = apply_floors(sampler, data, sampler.select(data, 10, seed=1), 10, seed=1, floor=3, by="group")
    assert sel.diagnostics["coverage_floor"]["applied"] == 2
    assert all(np.sum(data.groups[sel.rows] == f"small{i}") >= 2 for i in range(4))


def test_floor_quotas_for_per_group_selection():
    sizes = np.array([280, 5, 5, 5, 5])
    quotas = floor_quotas(sizes, 30, 3)
    assert quotas.sum() == 30 and np.all(quotas[1:] >= 3) and np.all(quotas <= sizes)
    assert floor_quotas(sizes, 30, 10)[1:].tolist() == [5, 5, 5, 5]  # a group smaller than the floor gives all its rows


def test_floor_errors_name_the_missing_column():
    data = replace(skewed_input(), groups=None)
    sampler = get_sampler("random")
    with pytest.raises(ConfigError, match="--min-per-group needs a group column: pass --group COL"):
        apply_floors(sampler, data, sampler.select(data, 10, seed=0), 10, seed=0, floor=2, by="group")

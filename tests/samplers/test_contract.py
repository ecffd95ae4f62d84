"""The sampler contract, checked over every registered sampler (like scikit-learn's common checks)."""

import json
from dataclasses import replace

import numpy as np
import pytest

from selectflow.tasks.errors import ConfigError
from selectflow.tasks.samplers import SAMPLERS, get_sampler

ALL = sorted(SAMPLERS)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("budget", [1, 17, 120])
def test_exact_budget_distinct_rows_in_range(name, budget, small_input):
    sel = get_sampler(name).select(small_input, budget, seed=0)
    assert len(sel.rows) == budget
    assert len(np.unique(sel.rows)) == budget
    assert sel.rows.min() >= 0 and sel.rows.max() < small_input.n_rows
    assert len(sel.scores) == len(sel.weights) == budget
    assert np.all(np.isfinite(sel.scores))
    assert np.all(np.isfinite(sel.weights)) and np.all(sel.weights > 0)
    if sel.clusters is not None:
        assert len(sel.clusters) == budget and sel.clusters.min() >= 0


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_selection(name, small_input):
    a = get_sampler(name).select(small_input, 40, seed=11)
    b = get_sampler(name).select(small_input, 40, seed=11)
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.weights, b.weights)


@pytest.mark.parametrize("name", ALL)
def test_works_without_optional_columns(name, small_input):
    bare = replace(small_input, quality=None, labels=None, groups=None, ids=None, target_embeddings=None)
    sel = get_sampler(name).select(bare, 25, seed=3)
    assert len(np.unique(sel.rows)) == 25


@pytest.mark.parametrize("name", ALL)
def test_diagnostics_are_json(name, small_input):
    sel = get_sampler(name).select(small_input, 30, seed=1)
    json.dumps(sel.diagnostics)


@pytest.mark.parametrize("name", ALL)
def test_does_not_touch_global_random_state(name, small_input):
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    get_sampler(name).select(small_input, 20, seed=5)
    np.testing.assert_array_equal(before, np.random.get_state()[1])


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [0, -1, 301, 2.5])
def test_rejects_impossible_budgets(name, bad, small_input):
    with pytest.raises(ConfigError):
        get_sampler(name).select(small_input, bad, seed=0)


@pytest.mark.parametrize("name", ALL)
def test_unknown_option_is_rejected(name):
    with pytest.raises(ValueError):
        get_sampler(name, {"no_such_option": 1})


def test_unknown_sampler_lists_the_known_ones():
    with pytest.raises(ConfigError, match="kmeans"):
        get_sampler("nope")


@pytest.mark.parametrize("name", ALL)
def test_negative_quality_is_refused_or_used_consistently(name, small_input):
    """Samplers that need quality >= 0 say so, naming the row; the others still return a valid selection."""
    from selectflow.tasks.errors import InputError

    quality = small_input.quality.copy()
    quality[7] = -1.5
    data = replace(small_input, quality=quality)
    sampler = get_sampler(name)
    if sampler.quality_requirement():
        with pytest.raises(InputError, match=r"row 7 \(id row-7\) has -1.5"):
            sampler.select(data, 20, seed=0)
    else:
        sel = sampler.select(data, 20, seed=0)
        assert len(np.unique(sel.rows)) == 20


# Invariants on arbitrary small inputs (hypothesis): every sampler, any data shape it may meet.
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@st.composite
def arbitrary_inputs(draw):
    from selectflow.tasks.samplers import SelectionInput

    n = draw(st.integers(min_value=2, max_value=40))
    d = draw(st.integers(min_value=2, max_value=8))
    seed = draw(st.integers(min_value=0, max_value=2**16))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    if draw(st.booleans()):  # exact duplicate rows are common in real corpora
        x[: n // 2] = x[0]
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    quality = rng.uniform(0.1, 3.0, size=n) if draw(st.booleans()) else None
    labels = [tuple(sorted({f"t{int(v)}" for v in rng.integers(0, 4, size=rng.integers(0, 3))})) for _ in range(n)] \
        if draw(st.booleans()) else None
    budget = draw(st.integers(min_value=1, max_value=n))
    return SelectionInput(embeddings=x, quality=quality, labels=labels), budget, seed


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=arbitrary_inputs())
def test_invariants_on_arbitrary_small_inputs(name, case):
    data, budget, seed = case
    sel = get_sampler(name).select(data, budget, seed=seed % 1000)
    assert len(sel.rows) == budget and len(np.unique(sel.rows)) == budget
    assert np.all(np.isfinite(sel.scores)) and np.all(sel.weights > 0)
    again = get_sampler(name).select(data, budget, seed=seed % 1000)
    np.testing.assert_array_equal(sel.rows, again.rows)


@pytest.mark.parametrize("name", ALL)
def test_earlier_rounds_are_never_selected_again(name, small_input):
    first = get_sampler(name).select(small_input, 60, seed=2)
    later = replace(small_input, previous_rows=first.rows,
                    feedback=np.where(np.isin(np.arange(small_input.n_rows), first.rows), 1.0, np.nan))
    second = get_sampler(name, {"k": get_sampler(name).select(small_input, 60, seed=2).diagnostics["k"]}
                         if name == "kmeans" else None).select(later, 80, seed=2)
    assert len(np.unique(second.rows)) == 80
    assert not np.isin(second.rows, first.rows).any()
    with pytest.raises(ConfigError, match="not selected in earlier rounds"):
        get_sampler(name).select(later, small_input.n_rows - 59, seed=2)


@pytest.mark.parametrize("name", ALL)
def test_permuting_rows_keeps_the_selected_set(name, small_input):
    """Row order is not an input: the same rows (by id) in another order give the same selection."""
    order = np.random.default_rng(5).permutation(small_input.n_rows)
    shuffled = replace(
        small_input,
        embeddings=np.ascontiguousarray(small_input.embeddings[order]),
        quality=small_input.quality[order],
        labels=[small_input.labels[i] for i in order],
        groups=small_input.groups[order],
        ids=small_input.ids[order],
    )
    a = get_sampler(name).select(small_input, 45, seed=4)
    b = get_sampler(name).select(shuffled, 45, seed=4)
    assert set(small_input.ids[a.rows]) == set(shuffled.ids[b.rows])
    np.testing.assert_array_equal(small_input.ids[a.rows], shuffled.ids[b.rows])  # same order of selection too


@pytest.mark.parametrize("name", ALL)
def test_the_seed_changes_the_default_selection(name, small_input):
    """Every default, run as `select` runs it with no labels or quality column, is stochastic (seeded clustering,
    sampling or tie-breaks): another seed, another selection. (With tags and distinct quality scores MIG is the
    paper's deterministic greedy: nothing is left to chance there.)"""
    bare = replace(small_input, quality=None, labels=None)
    selections = {tuple(sorted(get_sampler(name).select(bare, 45, seed=s).rows)) for s in range(4)}
    assert len(selections) > 1


def test_rows_sorted_by_id_keep_the_index_and_earlier_rounds_in_step(small_input):
    """The index answers in the sampler's numbering after rows are sorted by id; earlier rounds follow their rows."""
    from selectflow.tasks.embedding.faiss_index import build_index, choose_params, searcher
    from selectflow.tasks.samplers.base import canonical_order, permute_input

    data = replace(small_input, knn=searcher(build_index(small_input.embeddings, choose_params(small_input.n_rows))),
                   previous_rows=np.array([3, 10, 250]))
    order = canonical_order(data)
    sorted_data = permute_input(data, order)
    assert list(sorted_data.ids) == sorted(small_input.ids)
    _, nearest = sorted_data.knn(sorted_data.embeddings[:20], 1)
    np.testing.assert_array_equal(nearest[:, 0], np.arange(20))  # each row finds itself at its new position
    assert set(sorted_data.ids[sorted_data.previous_rows]) == {"row-3", "row-10", "row-250"}

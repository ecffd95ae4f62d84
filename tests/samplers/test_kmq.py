"""kMQ sampler: static quotas and draws, iterative refinement, k by silhouette, k-center greedy."""

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from selectflow.tasks.errors import ConfigError, InputError
from selectflow.tasks.samplers import SelectionInput
from selectflow.tasks.samplers.clustering import kmeans
from selectflow.tasks.samplers.sensitivity import inclusion_probabilities
from selectflow.tasks.samplers.kmq import (
    KMeansSampler,
    default_k,
    kcenter_greedy,
    refine_cluster_weights,
    silhouette_k_grid,
)
from selectflow.tasks.samplers.quotas import allocate_quotas, allocate_weighted

from .conftest import clustered_embeddings


def separated_clusters(n_clusters: int, per_cluster: int, d: int, seed: int, noise: float = 0.05):
    """Tight, far-apart unit-norm clusters; returns embeddings and the true cluster of each row."""
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(d, n_clusters)))[0].T  # orthonormal: pairwise distance sqrt(2)
    truth = np.repeat(np.arange(n_clusters), per_cluster)
    x = centres[truth] + noise * rng.normal(size=(len(truth), d)) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), truth


pytestmark = pytest.mark.usefixtures("faiss_one_thread")


# ---------------------------------------------------------------- static kMQ: quotas


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 80), min_size=1, max_size=20), data=st.data())
def test_quotas_sum_to_budget_never_exceed_sizes_and_are_proportional(sizes, data):
    sizes = np.array(sizes)
    if sizes.sum() == 0:
        return
    budget = data.draw(st.integers(1, int(sizes.sum())))
    quotas = allocate_quotas(sizes, budget)
    assert quotas.sum() == budget
    assert np.all(quotas >= 0) and np.all(quotas <= sizes)
    # Largest-remainder rounding of b*|C_j|/N: within one row of the exact share.
    assert np.all(np.abs(quotas - budget * sizes / sizes.sum()) < 1)


def test_quota_rounding_ties_go_to_the_lower_cluster_index():
    np.testing.assert_array_equal(allocate_quotas(np.array([3, 3, 3]), 1), [1, 0, 0])
    np.testing.assert_array_equal(allocate_quotas(np.array([3, 3, 3]), 2), [1, 1, 0])


def test_budget_over_the_rows_is_rejected():
    with pytest.raises(ConfigError):
        allocate_quotas(np.array([2, 3]), 6)


def test_weighted_quotas_redistribute_the_shortfall_of_full_clusters():
    # Cluster 0 wants 25 rows but holds 2: the other 23 are split over the others by weight.
    np.testing.assert_array_equal(allocate_weighted(np.array([10.0, 1, 1]), np.array([2, 50, 50]), 30), [2, 14, 14])
    # Zero-weight clusters only get rows once every weighted cluster is full.
    np.testing.assert_array_equal(allocate_weighted(np.array([1.0, 0, 0]), np.array([5, 10, 30]), 5), [5, 0, 0])
    np.testing.assert_array_equal(allocate_weighted(np.array([1.0, 0, 0]), np.array([5, 10, 30]), 13), [5, 2, 6])


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.floats(0, 10), st.integers(0, 40)), min_size=1, max_size=15),
    data=st.data(),
)
def test_weighted_quotas_are_exact_and_capped(pairs, data):
    weights = np.array([w for w, _ in pairs])
    capacity = np.array([c for _, c in pairs])
    if capacity.sum() == 0:
        return
    budget = data.draw(st.integers(1, int(capacity.sum())))
    quotas = allocate_weighted(weights, capacity, budget)
    assert quotas.sum() == budget
    assert np.all(quotas >= 0) and np.all(quotas <= capacity)
    weighted_room = capacity[weights > 0].sum()
    if budget <= weighted_room:
        assert quotas[weights == 0].sum() == 0


# ---------------------------------------------------------------- static kMQ: draws


def _first_pick_counts(quality: np.ndarray, options: dict, n_seeds: int) -> np.ndarray:
    x = clustered_embeddings(len(quality), 8, 1, seed=0)
    data = SelectionInput(embeddings=x, quality=quality)
    sampler = KMeansSampler({"k": 1, **options})
    picks = [sampler.select(data, 1, seed=s).rows[0] for s in range(n_seeds)]
    return np.bincount(picks, minlength=len(quality))


def test_within_cluster_draws_follow_quality_weights():
    quality = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    counts = _first_pick_counts(quality, {}, 2000)
    expected = 2000 * quality / quality.sum()
    assert chisquare(counts, expected).pvalue > 1e-3
    # The test has power: uniform draws would be rejected outright.
    assert chisquare(counts, np.full(5, 400.0)).pvalue < 1e-6


def test_softmax_quality_weighting_follows_softmax():
    quality = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    counts = _first_pick_counts(quality, {"quality_weighting": "softmax"}, 2000)
    p = np.exp(quality) / np.exp(quality).sum()
    assert chisquare(counts, 2000 * p).pvalue > 1e-3
    assert chisquare(counts, np.full(5, 400.0)).pvalue < 1e-6


def test_exact_budget_deterministic_and_seed_dependent(small_input):
    a = KMeansSampler().select(small_input, 57, seed=4)
    b = KMeansSampler().select(small_input, 57, seed=4)
    c = KMeansSampler().select(small_input, 57, seed=5)
    assert len(a.rows) == 57 and len(np.unique(a.rows)) == 57
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert not np.array_equal(np.sort(a.rows), np.sort(c.rows))
    counts = np.bincount(a.clusters, minlength=a.diagnostics["k"])
    np.testing.assert_array_equal(counts, a.diagnostics["quotas"])


def test_default_k_is_a_fifth_of_the_budget_capped_by_max_k(small_input):
    sel = KMeansSampler().select(small_input, 57, seed=0)
    assert sel.diagnostics["k"] == round(57 / 5)
    assert default_k(10_000, 196_000) == 512 and default_k(10_000, 196_000, max_k=4096) == 2000
    assert default_k(3, 100) == 1 and default_k(500, 300) == 100
    assert KMeansSampler({"rows_per_cluster": 1}).select(small_input, 20, seed=0).diagnostics["k"] == 20


def test_default_selection_depends_on_the_seed(small_input):
    data = replace(small_input, quality=None)
    picks = [tuple(np.sort(KMeansSampler().select(data, 40, seed=s).rows)) for s in range(4)]
    assert len(set(picks)) == 4


def test_balanced_inclusion_frequencies_follow_quality():
    """One cluster, budget 3: inclusion probabilities are min(1, c*quality) summing to 3 (exact, not successive draws)."""
    quality = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 8.0, 0.5, 0.5, 1.0])
    x = clustered_embeddings(len(quality), 8, 1, seed=0)
    data = SelectionInput(embeddings=x, quality=quality)
    draws, counts = 2000, np.zeros(len(quality))
    for s in range(draws):
        counts[KMeansSampler({"k": 1}).select(data, 3, seed=s).rows] += 1
    pi, _ = inclusion_probabilities(quality, 3)
    assert pi[6] == 1.0 and counts[6] == draws
    fractional = pi < 1
    se = np.sqrt(pi[fractional] * (1 - pi[fractional]) / draws)
    assert np.max(np.abs(counts[fractional] / draws - pi[fractional]) / se) < 4.5


def test_balanced_draws_rarely_take_both_twins_unlike_independent_draws():
    """Near-duplicates inside a cluster are paired first by the tree, so at most one of them survives."""
    rng = np.random.default_rng(3)
    base = clustered_embeddings(200, 16, 4, seed=3)
    twin = base + 1e-3 * rng.standard_normal(base.shape).astype(np.float32)
    x = np.concatenate([base, twin / np.linalg.norm(twin, axis=1, keepdims=True)]).astype(np.float32)
    data = SelectionInput(embeddings=x)

    def both_twins(options):
        total = 0
        for seed in range(5):
            chosen = np.zeros(400, dtype=bool)
            chosen[KMeansSampler(options).select(data, 80, seed=seed).rows] = True
            total += int(np.sum(chosen[:200] & chosen[200:]))
        return total

    assert both_twins({}) == 0
    assert both_twins({"within_cluster": "independent"}) >= 5


# ---------------------------------------------------------------- iterative kMQ: weights


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.floats(0, 5),  # prior weight
            st.one_of(st.just(float("nan")), st.floats(-10, 10)),  # cluster feedback, NaN = none
            st.integers(0, 5),  # rows left
        ),
        min_size=1,
        max_size=12,
    ),
    weighting=st.sampled_from(["multiplicative", "softmax"]),
)
def test_refined_weights_are_a_distribution_with_zero_on_exhausted_clusters(rows, weighting):
    prior, s, capacity = (np.array(c) for c in zip(*rows))
    if capacity.sum() == 0:
        return
    weights, info = refine_cluster_weights(prior, s, capacity, weighting=weighting)
    assert np.all(np.isfinite(weights)) and np.all(weights >= 0)
    assert weights.sum() == pytest.approx(1.0)
    assert np.all(weights[capacity == 0] == 0)


def test_multiplicative_rule_is_eq6_renormalised():
    prior = np.array([0.5, 0.3, 0.2])
    s = np.array([1.0, 2.0, 4.0])
    weights, info = refine_cluster_weights(prior, s, np.array([9, 9, 9]), weighting="multiplicative")
    expected = s / s.sum() * prior
    np.testing.assert_allclose(weights, expected / expected.sum())
    assert info["feedback_shift"] == 0.0


def test_non_positive_feedback_is_shifted_keeping_order_and_support():
    weights, info = refine_cluster_weights(np.full(4, 0.25), np.array([-3.0, -1.0, 0.0, 2.0]), np.full(4, 5), weighting="multiplicative")
    assert info["feedback_shift"] > 3.0
    assert np.all(np.diff(weights) > 0) and weights[0] > 0


def test_softmax_with_uniform_prior_is_the_reference_code_softmax():
    s = np.array([0.1, -0.4, 1.3, 0.0])
    weights, _ = refine_cluster_weights(np.full(4, 0.25), s, np.full(4, 3), weighting="softmax")
    np.testing.assert_allclose(weights, np.exp(s) / np.exp(s).sum())


def test_clusters_without_feedback_keep_a_neutral_weight():
    prior = np.array([0.25, 0.25, 0.25, 0.25])
    weights, _ = refine_cluster_weights(prior, np.array([1.0, 3.0, np.nan, 2.0]), np.full(4, 5), weighting="multiplicative")
    # The neutral factor is the mean observed feedback (2.0), so cluster 2 ties with cluster 3.
    assert weights[2] == pytest.approx(weights[3])
    assert weights[0] < weights[2] < weights[1]


# ---------------------------------------------------------------- iterative kMQ: rounds


@pytest.fixture(scope="module")
def six_clusters():
    x, truth = separated_clusters(6, 100, 24, seed=1)
    quality = np.random.default_rng(2).uniform(0.5, 3.0, len(x))
    return SelectionInput(embeddings=x, quality=quality), truth


def _round_budgets(total: int, rounds: int) -> list[int]:
    base = [total // rounds] * rounds
    for i in range(total - sum(base)):
        base[i] += 1
    return base


@pytest.mark.parametrize("weighting", ["multiplicative", "softmax"])
def test_rounds_never_repeat_a_row_and_select_the_total_budget(six_clusters, weighting):
    data, truth = six_clusters
    total, rounds = 200, 3
    first = KMeansSampler({"k": 6}).select(data, _round_budgets(total, rounds)[0], seed=3)
    selected = list(first.rows)
    options = {**first.diagnostics["next_round_options"], "refinement_weighting": weighting}
    for budget in _round_budgets(total, rounds)[1:]:
        previous = np.array(selected)
        feedback = np.full(len(truth), np.nan)
        feedback[previous] = truth[previous] - 1.5  # some clusters negative, so the shift path runs
        sel = KMeansSampler(options).select(replace(data, previous_rows=previous, feedback=feedback), budget, seed=3)
        assert len(sel.rows) == budget
        assert not np.isin(sel.rows, previous).any()
        assert sum(sel.diagnostics["cluster_weights"]) == pytest.approx(1.0)
        selected.extend(sel.rows)
        options = {**options, **sel.diagnostics["next_round_options"]}
    assert len(selected) == total and len(set(selected)) == total


def _round_two(data, first, feedback_of_cluster: dict[int, float]):
    previous = first.rows
    feedback = np.full(data.n_rows, np.nan)
    for c, value in feedback_of_cluster.items():
        feedback[previous[first.clusters == c]] = value
    options = first.diagnostics["next_round_options"]
    return KMeansSampler(options).select(replace(data, previous_rows=previous, feedback=feedback), 60, seed=3)


def test_higher_feedback_in_a_cluster_raises_its_share_next_round(six_clusters):
    data, _ = six_clusters
    first = KMeansSampler({"k": 6}).select(data, 60, seed=3)
    flat = _round_two(data, first, {c: 1.0 for c in range(6)})
    boosted = _round_two(data, first, {**{c: 1.0 for c in range(6)}, 2: 3.0})
    assert boosted.diagnostics["cluster_weights"][2] > flat.diagnostics["cluster_weights"][2]
    assert boosted.diagnostics["quotas"][2] > flat.diagnostics["quotas"][2]
    assert np.sum(boosted.clusters == 2) > np.sum(flat.clusters == 2)


def test_exhausted_cluster_gets_weight_zero_and_no_rows(six_clusters):
    data, _ = six_clusters
    clustering = kmeans(data.embeddings, 6, seed=3)
    everything_in_0 = np.flatnonzero(clustering.assignments == 0)
    feedback = np.full(data.n_rows, np.nan)
    feedback[everything_in_0] = 100.0  # high feedback, yet nothing is left to take
    sel = KMeansSampler({"k": 6}).select(replace(data, previous_rows=everything_in_0, feedback=feedback), 50, seed=3)
    assert sel.diagnostics["cluster_weights"][0] == 0.0
    assert sel.diagnostics["exhausted_clusters"] == 1
    assert not np.isin(sel.rows, everything_in_0).any() and 0 not in set(sel.clusters.tolist())


def test_clustering_is_the_same_across_rounds(six_clusters):
    data, _ = six_clusters
    first = KMeansSampler({"k": 6}).select(data, 30, seed=9)
    second = KMeansSampler({"k": 6}).select(replace(data, previous_rows=first.rows), 30, seed=9)
    assert first.diagnostics["cluster_sizes"] == second.diagnostics["cluster_sizes"]
    assert first.diagnostics["inertia"] == second.diagnostics["inertia"]


def test_refinement_round_errors_say_what_to_pass(six_clusters):
    data, _ = six_clusters
    previous = np.arange(10)
    with pytest.raises(ConfigError, match="k"):
        KMeansSampler().select(replace(data, previous_rows=previous), 20, seed=0)
    with pytest.raises(ConfigError, match="earlier rounds"):
        KMeansSampler({"k": 6}).select(replace(data, previous_rows=previous), data.n_rows - 5, seed=0)
    with pytest.raises(InputError, match="previous_rows"):
        KMeansSampler().select(replace(data, feedback=np.ones(data.n_rows)), 20, seed=0)
    with pytest.raises(InputError, match="outside"):
        KMeansSampler({"k": 6}).select(replace(data, previous_rows=np.array([data.n_rows])), 20, seed=0)


def test_option_combinations_are_validated():
    with pytest.raises(ValueError, match="silhouette"):
        KMeansSampler({"k": 8, "k_selection": "silhouette"})
    with pytest.raises(ValueError, match="one weight per cluster"):
        KMeansSampler({"k": 3, "previous_cluster_weights": [0.5, 0.5]})
    with pytest.raises(ValueError):
        KMeansSampler({"previous_cluster_weights": [0.5, -0.1]})


# ---------------------------------------------------------------- k by silhouette


def test_silhouette_grid_brackets_the_budget_default():
    # The default k is budget/5 (13 for 64 rows): the grid spans a quarter of it to twice it.
    assert silhouette_k_grid(64, 10_000) == [4, 8, 16]
    assert silhouette_k_grid(1, 10) == []
    # Capped by max_k like the default itself.
    assert silhouette_k_grid(10_000, 196_000) == [128, 256, 512]


@pytest.mark.parametrize("seed", [0, 1])
def test_silhouette_picks_the_true_k_on_separated_clusters(seed):
    x, _ = separated_clusters(8, 80, 32, seed=seed)
    sel = KMeansSampler({"k_selection": "silhouette", "silhouette_sample_size": 400}).select(
        SelectionInput(embeddings=x), 64, seed=seed
    )
    d = sel.diagnostics
    assert d["silhouette_k_grid"] == [4, 8, 16] and len(d["silhouette_scores"]) == 3
    assert d["k"] == 8 and int(np.argmax(d["silhouette_scores"])) == 1


# ---------------------------------------------------------------- k-center greedy


def _naive_kcenter(x: np.ndarray, first: int, budget: int) -> list[int]:
    chosen = [first]
    while len(chosen) < budget:
        d = np.min(np.linalg.norm(x[:, None, :].astype(np.float64) - x[chosen][None], axis=2), axis=1)
        d[chosen] = -1
        chosen.append(int(np.argmax(d)))
    return chosen


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(5, 60), budget=st.integers(1, 5))
def test_kcenter_distances_never_increase_and_match_brute_force(seed, n, budget):
    x = clustered_embeddings(n, 6, 3, seed=seed)
    rows, scores, radius = kcenter_greedy(x, budget, seed)
    assert len(set(rows.tolist())) == budget
    assert np.all(np.diff(scores) <= 1e-6)
    assert radius <= scores[-1] + 1e-6
    assert rows.tolist() == _naive_kcenter(x, int(rows[0]), budget)


def test_kcenter_covers_every_cluster_before_repeating_one():
    x, truth = separated_clusters(7, 40, 16, seed=5)
    for start in ("random", "mean"):
        sel = KMeansSampler({"method": "kcenter", "kcenter_start": start}).select(SelectionInput(embeddings=x), 21, seed=2)
        assert sorted(truth[sel.rows[:7]]) == list(range(7))
        assert np.all(np.diff(sel.scores) <= 1e-6)
        assert sel.scores[6] > 1.0 > sel.scores[7]  # inter-cluster distance ~1.41, intra-cluster ~0.07


def test_kcenter_counts_previous_rows_as_centres():
    x, truth = separated_clusters(5, 30, 16, seed=6)
    previous = np.flatnonzero(truth < 3)[::10]  # a few rows of clusters 0, 1, 2
    sel = KMeansSampler({"method": "kcenter"}).select(SelectionInput(embeddings=x, previous_rows=previous), 4, seed=0)
    assert sorted(truth[sel.rows[:2]]) == [3, 4]
    assert not np.isin(sel.rows, previous).any()


# ---------------------------------------------------------------- every mode keeps the contract


MODES = [
    {},
    {"method": "kcenter"},
    {"method": "kcenter", "kcenter_start": "mean"},
    {"k_selection": "silhouette", "silhouette_sample_size": 200},
]


@pytest.mark.parametrize("options", MODES, ids=json.dumps)
@pytest.mark.parametrize("budget", [1, 17, 120])
def test_modes_select_exact_deterministic_budgets(options, budget, small_input):
    a = KMeansSampler(options).select(small_input, budget, seed=8)
    b = KMeansSampler(options).select(replace(small_input, quality=None, labels=None, groups=None), budget, seed=8)
    c = KMeansSampler(options).select(small_input, budget, seed=8)
    for sel in (a, b):
        assert len(sel.rows) == budget and len(np.unique(sel.rows)) == budget
        assert np.all(np.isfinite(sel.scores)) and np.all(sel.weights == 1.0)
        json.dumps(sel.diagnostics)
    np.testing.assert_array_equal(a.rows, c.rows)
    np.testing.assert_array_equal(a.scores, c.scores)


@pytest.mark.parametrize("weighting", ["multiplicative", "softmax"])
def test_refinement_round_on_the_contract_fixture(weighting, small_input):
    first = KMeansSampler().select(small_input, 40, seed=1)
    feedback = np.full(small_input.n_rows, np.nan)
    feedback[first.rows] = np.random.default_rng(0).normal(size=40)
    data = replace(small_input, previous_rows=first.rows, feedback=feedback)
    options = {**first.diagnostics["next_round_options"], "refinement_weighting": weighting}
    a = KMeansSampler(options).select(data, 40, seed=1)
    b = KMeansSampler(options).select(data, 40, seed=1)
    np.testing.assert_array_equal(a.rows, b.rows)
    assert not np.isin(a.rows, first.rows).any()
    json.dumps(a.diagnostics)

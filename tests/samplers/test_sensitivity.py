"""Sensitivity / leverage sampling: the linear-algebra facts, the coreset bound, and unbiased fixed-size weights."""

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selectflow.tasks.errors import ConfigError, ResourceError
from selectflow.tasks.samplers import SelectionInput
from selectflow.tasks.samplers import sensitivity as sens
from selectflow.tasks.samplers.sensitivity import memory as sens_memory
from selectflow.tasks.samplers.clustering import assign, kmeans
from selectflow.tasks.samplers.sensitivity import (
    SensitivitySampler,
    inclusion_probabilities,
    kmeans_plus_plus,
    kmeans_sensitivity,
    leverage_scores,
    lewis_weights,
    lightweight_probabilities,
    sample_fixed_size,
)

from .conftest import clustered_embeddings

METHODS = ["kmeans-coreset", "lightweight", "leverage", "lewis"]


def unit_rows(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sq_cost(x, centres):
    """Per-row squared distance to the nearest centre, float64 (brute force)."""
    diff = x[:, None, :].astype(np.float64) - centres[None, :, :].astype(np.float64)
    return np.einsum("nkd,nkd->nk", diff, diff).min(axis=1)


# ---------------------------------------------------------------- leverage scores


def test_leverage_scores_sum_to_rank_full_and_deficient():
    rng = np.random.default_rng(0)
    full = rng.standard_normal((400, 12))
    assert leverage_scores(full).sum() == pytest.approx(12, abs=1e-8)
    low_rank = rng.standard_normal((400, 3)) @ rng.standard_normal((3, 12))
    tau = leverage_scores(low_rank)
    assert tau.sum() == pytest.approx(3, abs=1e-8)
    # Stored in float32 the matrix is only rank 3 up to rounding; still rank 3 at that precision.
    assert leverage_scores(low_rank.astype(np.float32)).sum() == pytest.approx(3, abs=1e-5)
    assert np.all(tau >= 0) and np.all(tau <= 1 + 1e-12)
    # Against the definition via the thin SVD.
    u, s, _ = np.linalg.svd(low_rank, full_matrices=False)
    u = u[:, s > 1e-8 * s[0]]
    np.testing.assert_allclose(tau, np.sum(u**2, axis=1), atol=1e-10)


def test_leverage_scores_invariant_under_invertible_right_transform():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((300, 8))
    r = rng.standard_normal((8, 8)) + 3 * np.eye(8)
    np.testing.assert_allclose(leverage_scores(a @ r), leverage_scores(a), atol=1e-10)


def test_orthogonal_row_has_leverage_one():
    rng = np.random.default_rng(2)
    a = np.zeros((50, 6))
    a[:, :5] = rng.standard_normal((50, 5))
    a[17] = 0.0
    a[17, 5] = 0.3  # the only row with a component along e6
    tau = leverage_scores(a)
    assert tau[17] == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.delete(tau, 17) < 1.0)


def test_duplicated_rows_share_their_leverage():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((40, 5))
    row = rng.standard_normal(5)
    k = 4
    with_copies = np.vstack([base, np.tile(row, (k, 1))])
    scaled_once = np.vstack([base, math.sqrt(k) * row])
    tau = leverage_scores(with_copies)
    # k copies of a are the same Gram matrix as one copy of sqrt(k)·a, and split its leverage equally.
    np.testing.assert_allclose(tau[-k:], leverage_scores(scaled_once)[-1] / k, rtol=1e-10)
    # A direction only the copies span: each copy gets exactly 1/k.
    ortho = np.zeros((30, 4))
    ortho[:27, :3] = rng.standard_normal((27, 3))
    ortho[27:, 3] = 2.0
    np.testing.assert_allclose(leverage_scores(ortho)[27:], 1 / 3, atol=1e-12)


def test_ridge_leverage_sums_to_effective_dimension():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((200, 10)) * np.linspace(0.1, 3, 10)
    lam = 7.5
    s = np.linalg.svd(a, compute_uv=False)
    tau = leverage_scores(a, ridge=lam)
    assert tau.sum() == pytest.approx(np.sum(s**2 / (s**2 + lam)), rel=1e-10)
    assert np.all(tau < leverage_scores(a))
    with pytest.raises(ConfigError):
        leverage_scores(a, ridge=-1.0)


# ---------------------------------------------------------------- Lewis weights


def test_lewis_weights_at_p2_are_leverage_scores():
    a = np.random.default_rng(5).standard_normal((250, 7))
    np.testing.assert_allclose(lewis_weights(a, p=2.0), leverage_scores(a), atol=1e-12)


@pytest.mark.parametrize("p", [1.0, 1.5, 3.0])
def test_lewis_weights_fixed_point(p):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((300, 6)) * rng.uniform(0.2, 5.0, size=(300, 1))
    w, info = lewis_weights(a, p=p, n_iter=100, tol=1e-9, return_info=True)
    assert info["converged"]
    assert w.sum() == pytest.approx(6, rel=1e-6)
    # Residual of the defining equation w_i = (a_iᵀ (Aᵀ W^{1-2/p} A)⁻¹ a_i)^{p/2}, recomputed from scratch.
    g = a.T @ (a * (w ** (1 - 2 / p))[:, None])
    rhs = np.einsum("ij,ij->i", a @ np.linalg.inv(g), a) ** (p / 2)
    assert np.max(np.abs(rhs / w - 1)) < 1e-7
    # Invariant under A -> AR.
    r = rng.standard_normal((6, 6)) + 2 * np.eye(6)
    np.testing.assert_allclose(lewis_weights(a @ r, p=p, n_iter=100, tol=1e-9), w, rtol=1e-6)


def test_lewis_rejects_p_outside_contraction_range():
    with pytest.raises(ConfigError):
        lewis_weights(np.eye(3), p=4.0)


# ---------------------------------------------------------------- clustering sensitivities


def test_kmeans_sensitivity_matches_the_formula():
    d2 = np.array([0.0, 1.0, 3.0, 0.0, 2.0])
    labels = np.array([0, 0, 0, 1, 1])
    k, n = 2, 5
    alpha = max(math.log(k), 1.0)
    cbar = d2.mean()
    expected = [
        2 * alpha * d2[i] / cbar + 4 * alpha * d2[labels == labels[i]].sum() / ((labels == labels[i]).sum() * cbar) + 4 * n / (labels == labels[i]).sum()
        for i in range(n)
    ]
    np.testing.assert_allclose(kmeans_sensitivity(d2, labels, k), expected)
    np.testing.assert_array_equal(kmeans_sensitivity(np.zeros(4), np.zeros(4, dtype=int), 3), np.ones(4))


def test_kmeans_plus_plus_distances_and_assignments():
    x = clustered_embeddings(500, 8, 5, seed=1)
    centres, d2, labels = kmeans_plus_plus(x, 7, np.random.default_rng(0))
    assert len(np.unique(centres)) == 7
    exact_d2, exact_labels = assign(x, x[centres])
    np.testing.assert_allclose(d2, sq_cost(x, x[centres]), atol=1e-5)
    assert np.mean(labels == exact_labels) > 0.99  # only float ties may differ
    assert np.all(d2[centres] == 0)
    again = kmeans_plus_plus(x, 7, np.random.default_rng(0))
    np.testing.assert_array_equal(again[0], centres)


def test_outlier_gets_the_largest_sampling_probability():
    """Four tight clusters and one row far from all of them (unit norm bounds how far it can be)."""
    rng = np.random.default_rng(2)
    centres = unit_rows(4, 8, 11)
    x = centres[rng.integers(0, 4, 400)] + 0.02 * rng.standard_normal((400, 8)).astype(np.float32)
    outlier = 123
    x[outlier] = -centres.mean(axis=0)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    for seed in range(5):
        for k in (4, 9):
            _, d2, labels = kmeans_plus_plus(x, k, np.random.default_rng(seed))
            s = kmeans_sensitivity(d2, labels, k)
            assert int(np.argmax(s)) == outlier
        sel = SensitivitySampler(PURE).select(SelectionInput(embeddings=x), 20, seed=seed)
        assert outlier in sel.rows
        assert sel.scores[list(sel.rows).index(outlier)] == sel.scores.max()
        # The default's defensive mixture (η = 0.9) bounds every importance weight by N/(η·budget).
        default = SensitivitySampler().select(SelectionInput(embeddings=x), 20, seed=seed)
        assert default.weights.max() <= 400 / (0.9 * 20) + 1e-9
    q = lightweight_probabilities(x)
    assert int(np.argmax(q)) == outlier


def test_identical_points_get_weight_n_over_budget():
    x = np.tile(unit_rows(1, 6, 0), (50, 1))
    for method in ["lightweight", "kmeans-coreset"]:
        sel = SensitivitySampler({"method": method}).select(SelectionInput(embeddings=x), 10, seed=0)
        np.testing.assert_allclose(sel.weights, 5.0, rtol=1e-12)
    np.testing.assert_allclose(lightweight_probabilities(x), 1 / 50)


# ---------------------------------------------------------------- fixed-size design


def _reference_inclusion(q, budget):
    """The textbook iteration: cap at 1, rescale the rest, repeat."""
    pi = np.zeros_like(q)
    capped = np.zeros(len(q), dtype=bool)
    while True:
        free = ~capped & (q > 0)
        if not free.any():
            pi[capped] = 1.0
            return pi
        c = (budget - capped.sum()) / q[free].sum()
        new = free & (c * q >= 1)
        if not new.any():
            pi[capped] = 1.0
            pi[free] = c * q[free]
            return pi
        capped |= new


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 80), st.data())
def test_inclusion_probabilities_cap_and_sum(n, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 10**6)))
    q = rng.random(n) ** data.draw(st.sampled_from([1, 3, 8]))
    budget = data.draw(st.integers(1, n))
    pi, c = inclusion_probabilities(q, budget)
    assert pi.sum() == pytest.approx(budget, abs=1e-9)
    assert np.all(pi <= 1.0) and np.all(pi > 0)
    np.testing.assert_allclose(pi, _reference_inclusion(q, budget), atol=1e-9)


@pytest.mark.parametrize("scheme", ["pivotal", "systematic"])
def test_empirical_inclusion_frequencies_match_pi(scheme):
    rng = np.random.default_rng(8)
    q = 0.05 + rng.random(120) ** 3
    q[[7, 70]] = 3.0  # large enough to be taken with certainty
    budget, draws = 25, 2000
    counts = np.zeros(120)
    for r in range(draws):
        rows, pi, _ = sample_fixed_size(q, budget, np.random.default_rng(r), scheme=scheme)
        assert len(rows) == budget and len(np.unique(rows)) == budget
        counts[rows] += 1
    assert pi[7] == pi[70] == 1.0 and counts[7] == counts[70] == draws
    fractional = pi < 1
    se = np.sqrt(pi[fractional] * (1 - pi[fractional]) / draws)
    assert np.max(np.abs(counts[fractional] / draws - pi[fractional]) / se) < 4.5
    # The check has power: the uncapped i.i.d. probabilities budget·q/Σq are rejected.
    naive = budget * q[fractional] / q.sum()
    assert np.max(np.abs(counts[fractional] / draws - naive) / se) > 4.5


def test_fewer_positive_rows_than_budget_is_a_config_error():
    with pytest.raises(ConfigError, match="uniform_mix"):
        inclusion_probabilities(np.array([1.0, 0.0, 0.0, 2.0]), 3)


# ---------------------------------------------------------------- the sampler: unbiased and accurate


PURE = {"uniform_mix": 0.0}  # the papers' importance designs, far from uniform: the power check applies


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"order": "random"},
        PURE,
        {**PURE, "sampling": "systematic"},
        {**PURE, "order": "cluster"},
        {**PURE, "method": "lightweight"},
        {**PURE, "method": "leverage", "ridge": 0.1},
        {**PURE, "method": "lewis", "lewis_proxy": "root-leverage"},
        {"max_oversampling": 1.5, "uniform_mix": 0.5},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "default",
)
def test_weighted_kmeans_cost_is_unbiased(options):
    """E[Σ_S w_i cost(x_i, Q)] = cost(X, Q) for fixed centres Q, over seeds (the k-means++ solution and
    the tree order are re-drawn with each seed, which keeps the estimator unbiased). The tolerance is
    4 standard errors."""
    x = clustered_embeddings(240, 8, 5, seed=4)
    rng = np.random.default_rng(0)
    outliers = [10, 60, 110, 200]
    far = -x.mean(axis=0) + 0.3 * rng.standard_normal((len(outliers), 8)).astype(np.float32)
    x[outliers] = far / np.linalg.norm(far, axis=1, keepdims=True)
    # Cluster centres as Q: most rows are cheap, the outliers expensive, so a weighting that does not
    # undo the preference for outliers is visibly biased.
    centres = kmeans(x, 5, seed=0).centroids
    cost = sq_cost(x, centres)
    sampler = SensitivitySampler(options)
    data = SelectionInput(embeddings=x)
    runs = 400
    estimates, sums_of_weights, unweighted = np.empty(runs), np.empty(runs), np.empty(runs)
    for seed in range(runs):
        sel = sampler.select(data, 15, seed=seed)
        estimates[seed] = np.sum(sel.weights * cost[sel.rows])
        sums_of_weights[seed] = sel.weights.sum()
        unweighted[seed] = cost[sel.rows].mean() * len(x)

    def z(values, truth):
        return (values.mean() - truth) / (values.std(ddof=1) / math.sqrt(runs))

    assert abs(z(estimates, cost.sum())) < 4
    assert abs(z(sums_of_weights, len(x))) < 4
    # Same test on the unweighted estimate N·mean(cost): the importance weights are what removes the bias
    # (only where the design is far from uniform; the default mixes in 90% uniform on purpose).
    if options.get("uniform_mix") == 0.0:
        assert z(unweighted, cost.sum()) > 4


def test_documented_accuracy_on_clustered_data():
    """Documented sample size: N=20000, D=16, 20 clusters, budget 1000 (5%) -> relative k-means cost
    error below ε = 0.05 for random centre sets of 10 data rows (kmeans-coreset, default options)."""
    n = 20_000
    x = clustered_embeddings(n, 16, 20, seed=5)
    rng = np.random.default_rng(0)
    costs = [assign(x, x[rng.choice(n, 10, replace=False)])[0].astype(np.float64) for _ in range(4)]
    data = SelectionInput(embeddings=x)
    for seed in range(3):
        sel = SensitivitySampler().select(data, 1000, seed=seed)
        for cost in costs:
            assert abs(np.sum(sel.weights * cost[sel.rows]) / cost.sum() - 1) < 0.05


# ---------------------------------------------------------------- the sampler: contract-level properties


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 60),
    d=st.integers(1, 6),
    method=st.sampled_from(METHODS),
    sampling=st.sampled_from(["pivotal", "systematic"]),
    data=st.data(),
)
def test_exactly_budget_distinct_rows_with_valid_weights(n, d, method, sampling, data):
    x = unit_rows(n, d, data.draw(st.integers(0, 10**6)))
    budget = data.draw(st.integers(1, n))
    sel = SensitivitySampler({"method": method, "sampling": sampling}).select(SelectionInput(embeddings=x), budget, seed=data.draw(st.integers(0, 1000)))
    assert len(sel.rows) == budget and len(np.unique(sel.rows)) == budget
    assert np.all(np.isfinite(sel.weights)) and np.all(sel.weights >= 1 - 1e-9)
    assert np.all(sel.scores > 0) and np.all(sel.scores <= 1)
    np.testing.assert_allclose(sel.weights, 1 / sel.scores)
    if budget == n:
        np.testing.assert_allclose(sel.weights, 1.0)


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_and_diagnostics(method):
    x = clustered_embeddings(300, 16, 6, seed=3)
    data = SelectionInput(embeddings=x)
    a = SensitivitySampler({"method": method}).select(data, 40, seed=9)
    b = SensitivitySampler({"method": method}).select(data, 40, seed=9)
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.weights, b.weights)
    diag = json.loads(json.dumps(a.diagnostics))
    assert diag["method"] == method
    if method == "lightweight":
        assert diag["total_sensitivity"] is None  # additive guarantee, no sensitivity bound
    else:
        assert diag["total_sensitivity"] > 0
    assert 1 <= diag["effective_sample_size"] <= 40 + 1e-9
    hist = diag["histograms"]["Importance weights"]
    assert sum(hist["counts"]) == 40 and len(hist["edges"]) == len(hist["counts"]) + 1
    assert all(len(curve) <= 500 for curve in diag["curves"].values())
    if method == "kmeans-coreset":
        assert a.clusters is not None and diag["k"] == round(2 * math.sqrt(40))
        # Σ s / N = 2α + 4α + 4k for the Bachem-Lucic-Krause bound.
        assert diag["total_sensitivity"] == pytest.approx(6 * diag["alpha"] + 4 * diag["k_centres_found"])
    if method == "leverage":
        assert diag["total_sensitivity"] == pytest.approx(16, abs=1e-6)


def test_options_are_validated():
    with pytest.raises(ValueError):
        SensitivitySampler({"method": "nope"})
    with pytest.raises(ValueError):
        SensitivitySampler({"p": 4.0})
    with pytest.raises(ValueError):
        SensitivitySampler({"leverage_mix": 1.5})
    x = unit_rows(20, 4, 0)
    with pytest.raises(ConfigError, match="k=50"):
        SensitivitySampler({"k": 50}).select(SelectionInput(embeddings=x), 5, seed=0)


def test_dense_memory_estimate_raises_resource_error(monkeypatch):
    monkeypatch.setattr(sens_memory, "MEMORY_LIMIT_BYTES", 10_000)
    x = unit_rows(100, 16, 0)
    with pytest.raises(ResourceError, match="kmeans-coreset"):
        SensitivitySampler({"method": "leverage"}).select(SelectionInput(embeddings=x), 5, seed=0)


def test_faiss_centres_option_runs():
    x = clustered_embeddings(300, 16, 6, seed=3)
    sel = SensitivitySampler({"centres": "faiss-kmeans", "k": 6}).select(SelectionInput(embeddings=x), 30, seed=0)
    assert len(np.unique(sel.rows)) == 30 and sel.diagnostics["centres"] == "faiss-kmeans"


# ---------------------------------------------------------------- spatial order and balanced designs


def twin_rows(n_pairs: int, d: int, seed: int, noise: float = 1e-3) -> np.ndarray:
    """n_pairs random unit rows, each followed by a near-duplicate (cosine > 0.99) at the end of the array."""
    rng = np.random.default_rng(seed)
    base = unit_rows(n_pairs, d, seed)
    twin = base + noise * rng.standard_normal(base.shape).astype(np.float32)
    x = np.concatenate([base, twin / np.linalg.norm(twin, axis=1, keepdims=True)])
    return x.astype(np.float32)


def _twin_gaps(order: np.ndarray, n_pairs: int) -> np.ndarray:
    pos = np.empty(len(order), dtype=np.int64)
    pos[order] = np.arange(len(order))
    return np.abs(pos[:n_pairs] - pos[n_pairs:])


@pytest.mark.parametrize("leaf_size", [1024, 16])
def test_spatial_order_is_a_seeded_permutation_that_keeps_twins_adjacent(leaf_size):
    x = twin_rows(150, 12, seed=1)
    a = sens.spatial_order(x, np.random.default_rng(3), leaf_size=leaf_size)
    b = sens.spatial_order(x, np.random.default_rng(3), leaf_size=leaf_size)
    c = sens.spatial_order(x, np.random.default_rng(4), leaf_size=leaf_size)
    np.testing.assert_array_equal(np.sort(a), np.arange(len(x)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    gaps = _twin_gaps(a, 150)
    # Exact nearest-neighbour matching inside leaves pairs every twin; PCA median splits rarely cut one.
    assert np.mean(gaps == 1) == 1.0 if leaf_size == 1024 else np.mean(gaps == 1) > 0.8


def test_spatial_order_over_the_chunked_levels_and_groups(monkeypatch):
    """Segments larger than a chunk take the multi-pass path; groups stay contiguous and in sorted order."""
    monkeypatch.setattr(sens_memory, "CHUNK_BYTES", 1)  # 256-row chunks
    x = twin_rows(700, 8, seed=2)
    groups = (np.arange(1400) % 700) // 350  # two groups, each twin pair inside one group
    order = sens.spatial_order(x, np.random.default_rng(0), groups=groups, leaf_size=64)
    np.testing.assert_array_equal(np.sort(order), np.arange(1400))
    assert np.all(np.diff(groups[order]) >= 0)
    assert np.mean(_twin_gaps(order, 700) == 1) > 0.8


def test_pivotal_sampling_within_groups_gives_exact_counts_and_marginals():
    rng = np.random.default_rng(5)
    groups = np.repeat([0, 1, 2], [30, 50, 20])
    q = 0.1 + rng.random(100)
    pi = np.zeros(100)
    for g, quota in zip(range(3), [4, 7, 3]):
        pi[groups == g] = inclusion_probabilities(q[groups == g], quota)[0]
    order = np.lexsort((rng.random(100), groups))
    draws, counts = 3000, np.zeros(100)
    for r in range(draws):
        rows = sens.pivotal_sample(pi, order, np.random.default_rng(r), groups=groups)
        np.testing.assert_array_equal(np.bincount(groups[rows], minlength=3), [4, 7, 3])
        counts[rows] += 1
    se = np.sqrt(pi * (1 - pi) / draws)
    assert np.max(np.abs(counts / draws - pi) / se) < 4.5


def test_cap_oversampling_bounds_the_ratio_to_uniform():
    rng = np.random.default_rng(0)
    q = rng.random(500) ** 6
    q /= q.sum()
    capped = sens.cap_oversampling(q, 2.0)
    assert capped.sum() == pytest.approx(1.0)
    assert capped.max() * 500 == pytest.approx(2.0)
    below = capped * 500 < 2.0 - 1e-9
    # q' ∝ min(q, t): rows under the cap keep their relative probabilities, and every capped row had q >= t.
    scale = capped[below] / q[below]
    np.testing.assert_allclose(scale, scale[0])
    assert q[~below].min() >= q[below].max()
    np.testing.assert_array_equal(sens.cap_oversampling(np.full(10, 0.1), 2.0), np.full(10, 0.1))


def test_default_selection_depends_on_the_seed():
    x = clustered_embeddings(400, 16, 6, seed=3)
    data = SelectionInput(embeddings=x)
    picks = [tuple(np.sort(SensitivitySampler().select(data, 40, seed=s).rows)) for s in range(4)]
    assert len(set(picks)) == 4


def test_default_rarely_takes_both_twins_unlike_a_random_order():
    """The tree order makes near-duplicates pivotal siblings: with π < 1/2 at most one of them survives."""
    x = twin_rows(300, 16, seed=6)
    data = SelectionInput(embeddings=x)

    def both_twins(options):
        total = 0
        for seed in range(5):
            chosen = np.zeros(600, dtype=bool)
            chosen[SensitivitySampler(options).select(data, 120, seed=seed).rows] = True
            total += int(np.sum(chosen[:300] & chosen[300:]))
        return total

    assert both_twins({}) <= 2
    assert both_twins({"order": "random"}) >= 10

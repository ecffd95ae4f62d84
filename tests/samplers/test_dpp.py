"""DPP sampler: greedy MAP against brute force, log-det bookkeeping, rank checks, exact k-DPP law, partitions."""

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from selectflow.tasks.errors import ConfigError, ResourceError
from selectflow.tasks.samplers import SelectionInput
from selectflow.tasks.samplers.dpp import (
    DPPSampler,
    capped_quotas,
    fast_greedy_map,
    log_det_diversity,
    log_elementary_symmetric,
    naive_greedy_map,
    sample_k_dpp,
)
from selectflow.tasks.samplers.quotas import allocate_quotas


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def reference_kernel(x, kernel, sigma, jitter, quality=None, power=1.0):
    """L = diag(q)(K + eps I)diag(q) written out directly, independent of the module's helpers."""
    x64 = x.astype(np.float64)
    x64 /= np.linalg.norm(x64, axis=1, keepdims=True)  # the kernels are defined on exactly unit-norm rows
    if kernel == "rbf":
        sq = np.sum((x64[:, None, :] - x64[None, :, :]) ** 2, axis=-1)
        k = np.exp(-sq / (2 * sigma**2))
    else:
        k = x64 @ x64.T
    k = k + jitter * np.eye(len(x))
    if quality is None:
        return k
    q = (quality / quality.max()) ** power
    return q[:, None] * k * q[None, :]


def select(x, budget, seed=0, quality=None, **options):
    """The greedy MAP properties are tested in mode='greedy' (the default mode is now partitioned sampling)."""
    options.setdefault("mode", "greedy")
    return DPPSampler(options).select(SelectionInput(embeddings=x, quality=quality), budget, seed)


@pytest.mark.parametrize("kernel", ["rbf", "cosine"])
@pytest.mark.parametrize("with_quality", [False, True])
def test_greedy_equals_brute_force_slogdet(kernel, with_quality):
    x = unit_rows(40, 10, seed=1)
    quality = np.random.default_rng(2).uniform(0.3, 3.0, 40) if with_quality else None
    sel = select(x, 9, quality=quality, kernel=kernel, sigma=0.9, partition="never")
    lmat = reference_kernel(x, kernel, 0.9, 1e-6, quality)
    # Without quality every row ties for the first pick, which the seed breaks; the rest is greedy.
    first = None if with_quality else sel.rows[0]
    np.testing.assert_array_equal(sel.rows, naive_greedy_map(lmat, 9, first=first))


@pytest.mark.parametrize("kernel", ["rbf", "cosine"])
def test_sum_of_gains_is_log_det_and_gains_never_increase(kernel):
    x = unit_rows(200, 24, seed=3)
    quality = np.random.default_rng(4).uniform(0.1, 2.0, 200)
    sel = select(x, 24, quality=quality, kernel=kernel, sigma=1.1, partition="never")
    lmat = reference_kernel(x, kernel, 1.1, 1e-6, quality)
    sign, logdet = np.linalg.slogdet(lmat[np.ix_(sel.rows, sel.rows)])
    assert sign > 0
    assert sel.scores.sum() == pytest.approx(logdet, abs=1e-8)
    assert np.all(np.diff(sel.scores) <= 1e-12)
    curve = sel.diagnostics["curves"]["Log-det of the selection"]
    assert curve[-1] == pytest.approx(logdet, abs=1e-8)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(5, 60),
    d=st.integers(2, 12),
    frac=st.floats(0.1, 1.0),
    kernel=st.sampled_from(["rbf", "cosine"]),
)
def test_gains_non_increasing_and_log_det_below_zero_for_unit_diagonal(seed, n, d, frac, kernel):
    x = unit_rows(n, d, seed)
    budget = max(1, int(frac * n))
    rows, gains = fast_greedy_map(x, budget, kernel=kernel, sigma=1.0, jitter=1e-3)
    assert len(np.unique(rows)) == budget
    assert np.all(np.diff(gains) <= 1e-9)
    # Unit diagonal (up to the jitter): every pivot <= 1 + eps, so the log det is at most budget*log(1+eps).
    assert gains.sum() <= budget * math.log1p(1e-3) + 1e-9


@pytest.mark.parametrize("kernel", ["rbf", "cosine"])
def test_exact_duplicate_of_a_selected_row_is_never_selected(kernel):
    distinct = unit_rows(50, 32, seed=5)
    x = np.concatenate([distinct, distinct[:20]])  # rows 50..69 duplicate rows 0..19
    original = np.concatenate([np.arange(50), np.arange(20)])
    quality = np.random.default_rng(6).uniform(0.5, 1.5, 70)
    budget = 30 if kernel == "cosine" else 45  # below the 50 distinct rows (and the cosine rank 32)
    sel = select(x, budget, quality=quality, kernel=kernel, partition="never")
    assert len(np.unique(original[sel.rows])) == budget
    if kernel == "rbf":
        # The budget forces duplicates only past the 50 distinct rows: they come last, and rows stay exact.
        forced = select(x, 60, quality=quality, kernel=kernel, partition="never")
        assert len(forced.rows) == 60
        assert len(np.unique(original[forced.rows[:50]])) == 50


def test_duplicates_without_jitter_fail_loudly_instead_of_returning_fewer_rows():
    distinct = unit_rows(30, 32, seed=7)
    x = np.concatenate([distinct, distinct[:10]])
    with pytest.raises(ConfigError, match="numerical rank"):
        select(x, 35, kernel="rbf", jitter=0.0, partition="never")


def test_rank_check_cosine_without_jitter():
    x = unit_rows(100, 8, seed=8)
    with pytest.raises(ConfigError, match="rank <= 8"):
        select(x, 12, kernel="cosine", jitter=0.0, partition="never")
    with pytest.raises(ConfigError, match="rank <= 8"):
        select(x, 12, kernel="cosine", jitter=0.0, mode="sample", partition="never")
    # Within the rank it works, and so does partitioning (each partition stays within the rank).
    assert len(select(x, 8, kernel="cosine", jitter=0.0, partition="never").rows) == 8
    auto = select(x, 30, kernel="cosine", jitter=0.0, partition="auto")
    assert auto.diagnostics["partitioned"] and len(np.unique(auto.rows)) == 30
    assert np.bincount(auto.clusters).max() <= 8
    # Jitter makes the kernel full rank: the budget is met, and the picks past the rank are reported.
    jittered = select(x, 12, kernel="cosine", jitter=1e-4, partition="never")
    assert len(np.unique(jittered.rows)) == 12
    assert jittered.diagnostics["picks_beyond_kernel_rank"] == 4


def test_log_elementary_symmetric_matches_direct_sums_and_does_not_overflow():
    lam = np.array([0.5, 2.0, 3.0, 0.1, 7.0])
    table = log_elementary_symmetric(np.log(lam), 3)
    for k in range(4):
        direct = sum(np.prod(lam[list(c)]) for c in itertools.combinations(range(5), k))
        assert math.exp(table[k, 5]) == pytest.approx(direct, rel=1e-12)
    big = np.full(200, 1e5)
    table = log_elementary_symmetric(np.log(big), 150)
    assert np.isfinite(table[150, 200])  # the direct value, about 1e750 * C(200,150), overflows float64
    vecs = np.linalg.qr(np.random.default_rng(0).normal(size=(200, 200)))[0]
    rows = sample_k_dpp(big, vecs, 150, np.random.default_rng(1))
    assert len(np.unique(rows)) == 150


def test_k_dpp_subset_frequencies_match_det_law():
    rng = np.random.default_rng(11)
    feats = rng.normal(size=(6, 6)) * np.array([1.5, 1.2, 1.0, 0.8, 0.5, 0.3])
    lmat = feats @ feats.T + 0.05 * np.eye(6)
    k = 3
    subsets = list(itertools.combinations(range(6), k))
    dets = np.array([np.linalg.det(lmat[np.ix_(s, s)]) for s in subsets])
    expected = dets / dets.sum()
    eigvals, eigvecs = np.linalg.eigh(lmat)
    draws = 8_000
    sampler_rng = np.random.default_rng(12)
    counts = np.zeros(len(subsets))
    index = {s: i for i, s in enumerate(subsets)}
    for _ in range(draws):
        rows = sample_k_dpp(eigvals, eigvecs, k, sampler_rng)
        assert len(set(rows.tolist())) == k
        counts[index[tuple(sorted(rows.tolist()))]] += 1
    assert chisquare(counts, expected * draws).pvalue > 1e-3
    # And the inclusion probabilities, tightly: 4 standard errors.
    incl = np.array([sum(expected[j] for j, s in enumerate(subsets) if i in s) for i in range(6)])
    seen = np.array([sum(counts[j] for j, s in enumerate(subsets) if i in s) for i in range(6)]) / draws
    assert np.all(np.abs(seen - incl) <= 4 * np.sqrt(incl * (1 - incl) / draws))


def test_sample_mode_exact_size_seeded_and_refuses_large_pools():
    x = unit_rows(150, 12, seed=13)
    a = select(x, 20, seed=3, mode="sample")
    b = select(x, 20, seed=3, mode="sample")
    c = select(x, 20, seed=4, mode="sample")
    assert len(np.unique(a.rows)) == 20
    np.testing.assert_array_equal(a.rows, b.rows)
    assert set(a.rows.tolist()) != set(c.rows.tolist())
    assert np.all(np.isfinite(a.scores))
    with pytest.raises(ConfigError, match="sample_max_rows"):
        select(x, 20, mode="sample", sample_max_rows=100, partition="never")


def test_partitioned_mode_returns_exactly_the_budget_merged_by_gain():
    x = unit_rows(2000, 16, seed=14)
    quality = np.random.default_rng(15).uniform(0.5, 2.0, 2000)
    sel = select(x, 201, quality=quality, partition="always", partition_budget=25)
    assert len(sel.rows) == 201 and len(np.unique(sel.rows)) == 201
    assert sel.diagnostics["partitioned"] and sel.diagnostics["n_partitions"] >= 8
    assert np.all(np.diff(sel.scores) <= 0)
    again = select(x, 201, quality=quality, partition="always", partition_budget=25)
    np.testing.assert_array_equal(sel.rows, again.rows)


def test_memory_limit_switches_to_partitions_or_names_the_option():
    x = unit_rows(2000, 16, seed=16)
    # The 200 x 2000 float64 factor is 3.2 MB: above a 2 MB limit.
    auto = select(x, 200, memory_limit_gib=0.002, partition="auto")
    assert auto.diagnostics["partitioned"]
    assert auto.diagnostics["partition_reason"] == "Cholesky factor above memory_limit_gib"
    assert auto.diagnostics["largest_factor_gib"] <= 0.002
    assert len(np.unique(auto.rows)) == 200
    with pytest.raises(ResourceError, match="partition='auto'"):
        select(x, 200, memory_limit_gib=0.002, partition="never")


def test_previous_rows_are_conditioned_on_and_never_selected_again():
    x = unit_rows(120, 16, seed=17)
    full = select(x, 30, partition="never")
    data = SelectionInput(embeddings=x, previous_rows=full.rows[:10])
    later = DPPSampler({"mode": "greedy", "partition": "never"}).select(data, 20, seed=0)
    # Conditioning on the first 10 picks continues the same greedy run.
    np.testing.assert_array_equal(later.rows, full.rows[10:])
    np.testing.assert_allclose(later.scores, full.scores[10:], atol=1e-9)


def test_quality_power_zero_ignores_quality():
    x = unit_rows(80, 12, seed=18)
    quality = np.random.default_rng(19).uniform(0.1, 5.0, 80)
    np.testing.assert_array_equal(select(x, 15, quality=quality, quality_power=0).rows, select(x, 15).rows)
    assert not np.array_equal(select(x, 15, quality=quality).rows, select(x, 15).rows)


def test_log_det_diversity_prefers_diverse_selections():
    x = unit_rows(3000, 16, seed=20)
    diverse = fast_greedy_map(x, 50, kernel="rbf", sigma=1.0)[0]
    # Rows nearest row 0: a redundant selection.
    crowded = np.argsort(-(x @ x[0]))[:50]
    a = log_det_diversity(x, diverse, sigma=1.0)
    b = log_det_diversity(x, crowded, sigma=1.0)
    assert a["log_det_per_row"] <= 0 and b["log_det_per_row"] <= 0
    assert b["log_det_per_row"] < a["log_det_per_row"]
    k = np.exp(-np.sum((x[diverse, None].astype(float) - x[None, diverse]) ** 2, -1) / 2) + 1e-6 * np.eye(50)
    assert a["log_det"] == pytest.approx(np.linalg.slogdet(k / (1 + 1e-6))[1], abs=1e-6)
    # Large selections: fixed-size seeded subsets.
    big = log_det_diversity(x, np.arange(2500), subset_size=400, n_subsets=3, seed=1)
    assert big["subset_size"] == 400 and big["n_subsets"] == 3
    assert big == log_det_diversity(x, np.arange(2500), subset_size=400, n_subsets=3, seed=1)


def test_capped_quotas_sum_to_budget_within_caps():
    sizes = np.array([500, 100, 60, 40, 300])
    np.testing.assert_array_equal(capped_quotas(sizes, sizes, 200), allocate_quotas(sizes, 200))
    caps = np.minimum(sizes, 64)
    quotas = capped_quotas(sizes, caps, 250)
    assert quotas.sum() == 250 and np.all(quotas <= caps)
    with pytest.raises(ConfigError):
        capped_quotas(sizes, caps, 300)


def test_works_without_quality_and_with_zero_quality_rows():
    x = unit_rows(60, 8, seed=21)
    quality = np.ones(60)
    quality[:10] = 0.0
    sel = DPPSampler({"mode": "greedy", "partition": "never"}).select(replace(SelectionInput(embeddings=x), quality=quality), 55, seed=0)
    assert len(np.unique(sel.rows)) == 55 and np.all(np.isfinite(sel.scores))
    # Zero-quality rows only once the positive ones run out.
    assert set(sel.rows[:50].tolist()) == set(range(10, 60))


# -- the default: exact k-DPP draws inside k-means partitions ---------------------------------------


def dense_and_outliers(seed=30):
    """900 rows in 3 tight groups and 100 scattered outliers (10% of the pool)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 32))
    dense = centres[rng.integers(0, 3, 900)] + 0.15 * rng.normal(size=(900, 32))
    x = np.concatenate([dense, rng.normal(size=(100, 32))])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_default_samples_in_proportion_instead_of_chasing_outliers():
    x = dense_and_outliers()
    default = DPPSampler().select(SelectionInput(embeddings=x), 60, seed=0)
    assert default.diagnostics["mode"] == "sample" and default.diagnostics["partitioned"]
    assert default.diagnostics["n_partitions"] >= 30  # ceil(budget / partition_budget)
    assert default.diagnostics["bandwidth"] == "partition" and "partition_sigma_min_median_max" in default.diagnostics
    assert len(np.unique(default.rows)) == 60
    outliers_default = np.mean(default.rows >= 900)
    # Pool-wide greedy MAP without quality is k-center-like: it spends the budget on the outliers.
    greedy = DPPSampler({"mode": "greedy", "partition": "never"}).select(SelectionInput(embeddings=x), 60, seed=0)
    assert np.mean(greedy.rows >= 900) > 0.5
    assert outliers_default < 0.3


def test_default_selection_depends_on_the_seed_and_is_reproducible():
    x = unit_rows(600, 16, seed=31)
    data = SelectionInput(embeddings=x)
    a = DPPSampler().select(data, 40, seed=1)
    b = DPPSampler().select(data, 40, seed=1)
    c = DPPSampler().select(data, 40, seed=2)
    np.testing.assert_array_equal(a.rows, b.rows)
    assert set(a.rows.tolist()) != set(c.rows.tolist())
    # Greedy too: the first pick of each partition is a seeded tie-break, not row 0.
    g1 = DPPSampler({"mode": "greedy"}).select(data, 40, seed=1)
    g2 = DPPSampler({"mode": "greedy"}).select(data, 40, seed=2)
    assert set(g1.rows.tolist()) != set(g2.rows.tolist())
    p1 = DPPSampler({"mode": "greedy", "partition": "never"}).select(data, 10, seed=1)
    p2 = DPPSampler({"mode": "greedy", "partition": "never"}).select(data, 10, seed=2)
    assert p1.rows[0] != p2.rows[0]


def test_partitioned_sampling_quotas_follow_partition_sizes_and_skip_previous_rows():
    x = unit_rows(1500, 12, seed=32)
    previous = np.arange(0, 1500, 3)
    sel = DPPSampler({"workers": 2}).select(SelectionInput(embeddings=x, previous_rows=previous), 100, seed=0)
    assert len(np.unique(sel.rows)) == 100 and not set(sel.rows.tolist()) & set(previous.tolist())
    assert np.all(np.isfinite(sel.scores)) and np.all(np.diff(sel.scores) <= 0)
    lo, _, hi = sel.diagnostics["partition_quota_min_median_max"]
    assert hi - lo <= 3  # near-equal partitions of a uniform cloud get near-equal quotas
    # Same draw whatever the number of workers.
    one = DPPSampler({"workers": 1}).select(SelectionInput(embeddings=x, previous_rows=previous), 100, seed=0)
    np.testing.assert_array_equal(sel.rows, one.rows)


def test_partitions_above_sample_max_rows_are_split():
    x = unit_rows(3000, 8, seed=33)
    sel = DPPSampler({"sample_max_rows": 200, "partition_budget": 50}).select(SelectionInput(embeddings=x), 60, seed=0)
    assert len(np.unique(sel.rows)) == 60
    assert sel.diagnostics["partition_size_min_median_max"][2] <= 200

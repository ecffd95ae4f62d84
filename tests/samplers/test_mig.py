"""MIG: the properties of algorithms.md §1.8, checked against independent dense computations."""

import json
from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from selectflow.tasks.errors import ConfigError, InputError, ResourceError
from selectflow.tasks.samplers import SelectionInput
from selectflow.tasks.samplers.mig import (
    Candidates,
    MIGOptions,
    MIGSampler,
    Phi,
    build_problem,
    calibrate_threshold,
    greedy,
    information,
    propagation_matrix,
    similarity_graph,
)

from .conftest import clustered_embeddings


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    # FAISS's OpenMP threads spin against each other on tiny inputs on a shared 2-core machine.
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def unit_rows(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def tagged_input(n=240, n_tags=40, seed=0, quality=True):
    """Rows with 1-3 tags drawn from a skewed vocabulary, so label saturation matters."""
    rng = np.random.default_rng(seed)
    x = clustered_embeddings(n, 16, 8, seed=seed + 1)
    p = 1.0 / np.arange(1, n_tags + 1)
    p /= p.sum()
    labels = [tuple(f"t{int(t)}" for t in rng.choice(n_tags, size=rng.integers(1, 4), replace=False, p=p)) for _ in range(n)]
    q = rng.uniform(0.5, 5.0, size=n) if quality else None
    return SelectionInput(embeddings=x, quality=q, labels=labels)


def dense_phi(kind, b, alpha):
    if kind == "exp":
        return (lambda x: 1 - np.exp(-alpha * x)), (lambda x: alpha * np.exp(-alpha * x))
    return (lambda x: x**b), (lambda x: b * (x + 1e-6) ** (b - 1))


def dense_greedy(ehat, budget, kind="pow", b=0.8, alpha=1.0, gain="exact"):
    """The reference code's loop on a dense N x K matrix, written independently of the mig package."""
    phi, dphi = dense_phi(kind, b, alpha)
    x = np.zeros(ehat.shape[1])
    free = np.ones(ehat.shape[0], dtype=bool)
    picked = []
    for _ in range(budget):
        g = (phi(x + ehat) - phi(x)).sum(axis=1) if gain == "exact" else ehat @ dphi(x)
        g[~free] = -np.inf
        d = int(np.argmax(g))
        picked.append(d)
        free[d] = False
        x += ehat[d]
    return np.array(picked)


# --- label graph and propagation -------------------------------------------------------------


def test_propagation_matrix_is_non_negative_row_stochastic_and_matches_the_reference_code():
    emb = unit_rows(120, 8, seed=1)
    w = similarity_graph(emb, calibrate_threshold(emb, 6.0), max_edges=10**6)
    for alpha in (0.5, 1.0, 2.0):
        a = propagation_matrix(w, alpha).toarray()
        assert a.min() >= 0
        np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        # Reference code: P = W' / W'.sum(axis=0) with W' = I + alpha*offdiag(W); e_hat = e P = A e.
        w_prime = np.eye(120) + alpha * w.toarray()
        np.testing.assert_allclose(a.T, w_prime / w_prime.sum(axis=0), atol=1e-12)


def test_propagation_is_identity_when_threshold_exceeds_every_similarity():
    emb = unit_rows(60, 8, seed=2)
    sims = emb @ emb.T
    np.fill_diagonal(sims, -1)
    w = similarity_graph(emb, float(sims.max()) + 1e-6, max_edges=10**6)
    assert w.nnz == 0
    np.testing.assert_array_equal(propagation_matrix(w, 1.0).toarray(), np.eye(60))
    # No propagation weight: A = I whatever the graph.
    w_dense = similarity_graph(emb, 0.0, max_edges=10**6)
    assert w_dense.nnz > 0
    np.testing.assert_array_equal(propagation_matrix(w_dense, 0.0).toarray(), np.eye(60))


def test_graph_keeps_exactly_the_pairs_at_or_above_the_threshold_and_is_symmetric():
    emb = unit_rows(200, 6, seed=3)
    tau = 0.6
    w = similarity_graph(emb, tau, max_edges=10**6).toarray()
    sims = (emb.astype(np.float64) @ emb.T.astype(np.float64))
    np.fill_diagonal(sims, -1)
    expected = sims >= tau
    # Pairs within float32 rounding of tau may fall on either side.
    borderline = np.abs(sims - tau) < 1e-6
    assert np.array_equal((w > 0)[~borderline], expected[~borderline])
    np.testing.assert_array_equal(w, w.T)
    assert np.all(np.diag(w) == 0)


def test_threshold_is_calibrated_to_the_target_degree():
    emb = unit_rows(500, 16, seed=4)
    for degree in (2.0, 8.0, 20.0):
        w = similarity_graph(emb, calibrate_threshold(emb, degree), max_edges=10**7)
        assert abs(w.nnz / 500 - degree) <= 0.05 * degree + 0.01


def test_graph_that_would_exceed_the_memory_budget_is_refused():
    emb = unit_rows(300, 4, seed=5)
    with pytest.raises(ResourceError, match="similarity_threshold"):
        similarity_graph(emb, 0.0, max_edges=100)


# --- information measure ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(["pow", "exp"]),
    b=st.floats(0.1, 1.0),
    alpha=st.floats(0.1, 5.0),
)
def test_exact_information_is_monotone_and_submodular(seed, kind, b, alpha):
    rng = np.random.default_rng(seed)
    n, k = 12, 7
    ehat = rng.uniform(0, 2, size=(n, k)) * (rng.random((n, k)) < 0.5)
    phi = Phi(kind=kind, b=b, alpha=alpha)
    big = rng.random(n) < 0.6
    small = big & (rng.random(n) < 0.5)
    outside = np.flatnonzero(~big)
    if len(outside) == 0:
        return
    e = rng.choice(outside)

    def info(mask):
        return information(ehat[mask].sum(axis=0), phi)

    def plus(mask):
        m = mask.copy()
        m[e] = True
        return m

    gain_small = info(plus(small)) - info(small)
    gain_big = info(plus(big)) - info(big)
    assert gain_small >= gain_big - 1e-9
    assert gain_big >= -1e-12


def test_increment_matches_phi_difference():
    x = np.array([0.0, 0.3, 2.0, 50.0])
    e = np.array([0.5, 0.0, 1.0, 0.25])
    for phi in (Phi("pow", 0.8), Phi("pow", 0.5), Phi("exp", alpha=2.0), Phi("pow", 1.0)):
        np.testing.assert_allclose(phi.increment(x, phi.cache(x), e), phi.value(x + e) - phi.value(x), rtol=1e-9, atol=1e-15)


# --- greedy -----------------------------------------------------------------------------------

GAINS = ["exact", "linearized"]


@lru_cache(maxsize=None)
def greedy_problem(make):
    data = tagged_input(seed=11, quality="no_quality" not in make)
    if make.startswith("clusters"):
        data = replace(data, labels=None)
    return data, build_problem(data, MIGOptions(), seed=2, budget=150)


@pytest.mark.parametrize("gain", GAINS)
@pytest.mark.parametrize("phi", [Phi("pow", 0.8), Phi("pow", 0.3), Phi("exp", alpha=1.5)])
@pytest.mark.parametrize("make", ["tags", "tags_no_quality", "clusters", "clusters_no_quality"])
def test_lazy_greedy_selects_exactly_what_plain_greedy_selects(gain, phi, make):
    data, problem = greedy_problem(make)
    budget = 150
    per_row = Candidates.one_per_row(problem.candidates.ehat_rows(), problem.candidates.tie_rank)
    plain = greedy(per_row, budget, phi, gain=gain, lazy=False)
    lazy_per_row = greedy(per_row, budget, phi, gain=gain, lazy=True)
    lazy_grouped = greedy(problem.candidates, budget, phi, gain=gain, lazy=True)
    np.testing.assert_array_equal(lazy_per_row.rows, plain.rows)
    np.testing.assert_array_equal(lazy_grouped.rows, plain.rows)
    np.testing.assert_array_equal(lazy_grouped.gains, plain.gains)
    assert lazy_grouped.bound_violations == lazy_per_row.bound_violations == 0
    # The lazy heap re-scores far fewer candidates than plain greedy's budget x rows.
    assert lazy_grouped.evaluations < plain.evaluations / 3


@pytest.mark.parametrize("gain", GAINS)
def test_sampler_runs_the_lazy_greedy_on_its_problem(gain):
    data, problem = greedy_problem("clusters")
    sel = MIGSampler(MIGOptions(gain=gain)).select(data, 150, seed=2)
    per_row = Candidates.one_per_row(problem.candidates.ehat_rows(), problem.candidates.tie_rank)
    plain = greedy(per_row, 150, problem.phi, gain=gain, lazy=False)
    np.testing.assert_array_equal(sel.rows, plain.rows)
    np.testing.assert_array_equal(sel.scores, plain.gains)


@pytest.mark.parametrize("gain", GAINS)
@pytest.mark.parametrize("phi", ["pow", "exp"])
def test_selection_matches_an_independent_dense_greedy(gain, phi):
    data = tagged_input(seed=5)
    opts = MIGOptions(gain=gain, phi=phi, phi_b=0.8, phi_alpha=0.7)
    sel = MIGSampler(opts).select(data, 80, seed=0)
    ehat = build_problem(data, opts, seed=0).candidates.ehat_rows().toarray()
    np.testing.assert_array_equal(sel.rows, dense_greedy(ehat, 80, kind=phi, b=0.8, alpha=0.7, gain=gain))


def test_linearized_score_of_a_fixed_row_never_increases():
    data = tagged_input(seed=6)
    opts = MIGOptions(gain="linearized", phi_b=0.8)
    problem = build_problem(data, opts, seed=0)
    ehat = problem.candidates.ehat_rows().toarray()
    rows = MIGSampler(opts).select(data, 60, seed=0).rows
    _, dphi = dense_phi("pow", 0.8, 1.0)
    x = np.zeros(ehat.shape[1])
    previous = ehat @ dphi(x)
    for r in rows:
        x += ehat[r]
        current = ehat @ dphi(x)
        assert np.all(current <= previous * (1 + 1e-12))
        previous = current


@pytest.mark.parametrize("gain", GAINS)
def test_marginal_gains_do_not_increase_along_the_ranking(gain):
    sel = MIGSampler(MIGOptions(gain=gain)).select(tagged_input(seed=7), 120, seed=0)
    assert np.all(np.diff(sel.scores) <= 1e-12 * sel.scores[0])
    assert np.all(np.diff(sel.diagnostics["curves"]["Information E(S) by rows selected"]) >= 0)


@pytest.mark.parametrize("gain", GAINS)
@pytest.mark.parametrize("source", ["labels", "clusters"])
def test_linear_phi_reduces_to_top_b_by_propagated_mass(gain, source):
    data = tagged_input(seed=8)
    opts = MIGOptions(gain=gain, phi_b=1.0, label_source=source)
    sel = MIGSampler(opts).select(data, 70, seed=0)
    mass = np.asarray(build_problem(data, opts, seed=0).candidates.ehat_rows().sum(axis=1)).ravel()
    top = np.lexsort((np.arange(len(mass)), -mass))[:70]
    np.testing.assert_array_equal(np.sort(sel.rows), np.sort(top))
    np.testing.assert_array_equal(sel.rows, top)


@pytest.mark.parametrize("budget", [10, 25, 60])
@pytest.mark.parametrize("prop_weight", [0.0, 1.0])
def test_covers_at_least_as_many_labels_as_top_b_by_quality(budget, prop_weight):
    data = tagged_input(n=300, n_tags=80, seed=9, quality=False)
    sel = MIGSampler(MIGOptions(prop_weight=prop_weight)).select(data, budget, seed=0)
    # With constant quality, top-B by quality is the first B rows (ties by index).
    def covered(rows):
        return len({label for r in rows for label in data.labels[r]})

    assert covered(sel.rows) >= covered(np.arange(budget))
    assert covered(sel.rows) > covered(np.arange(budget)) or budget >= 60
    assert sel.diagnostics["labels_covered"] == covered(sel.rows)


def test_without_propagation_first_picks_cover_new_labels():
    # prop_weight 0 and constant quality: MIG is a weighted coverage; it never repeats a label
    # set while an uncovered label remains.
    data = tagged_input(n=200, n_tags=30, seed=10, quality=False)
    sel = MIGSampler(MIGOptions(prop_weight=0.0)).select(data, 10, seed=0)
    seen = set()
    for r in sel.rows:
        assert not set(data.labels[r]) <= seen
        seen |= set(data.labels[r])


# --- sampler ----------------------------------------------------------------------------------


def test_tag_free_labels_are_multi_granularity_clusters():
    data = replace(tagged_input(n=400, seed=12), labels=None)
    sel = MIGSampler(MIGOptions(cluster_levels=3, base_clusters=5)).select(data, 40, seed=1)
    d = sel.diagnostics
    assert d["label_source"] == "clusters"
    assert d["cluster_levels"] == [5, 10, 20]
    assert d["n_labels"] == 35 and d["labels_per_row_mean"] == 3.0
    assert all(name.startswith(("c5:", "c10:", "c20:")) for name in d["most_selected_labels"])
    assert len(d["similarity_threshold"]) == 3
    assert sel.clusters is not None and sel.clusters.max() < 5


def test_same_seed_same_selection_and_json_diagnostics():
    data = replace(tagged_input(seed=13), labels=None)
    a = MIGSampler().select(data, 50, seed=4)
    b = MIGSampler().select(data, 50, seed=4)
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert json.dumps(a.diagnostics) == json.dumps(b.diagnostics)
    assert len(a.diagnostics["curves"]["Information E(S) by rows selected"]) == 50


def test_curve_is_subsampled_for_long_runs():
    data = replace(tagged_input(n=1200, seed=14), labels=None)
    sel = MIGSampler().select(data, 900, seed=0)
    curve = sel.diagnostics["curves"]["Information E(S) by rows selected"]
    assert 400 <= len(curve) <= 500
    assert curve[-1] == pytest.approx(sel.diagnostics["information"])


def test_previous_rounds_are_never_selected_again_and_seed_the_information():
    data = tagged_input(seed=15)
    full = MIGSampler().select(data, 90, seed=0)
    first = MIGSampler().select(data, 40, seed=0)
    np.testing.assert_array_equal(first.rows, full.rows[:40])
    second = MIGSampler().select(replace(data, previous_rows=first.rows), 50, seed=0)
    assert not set(second.rows) & set(first.rows)
    np.testing.assert_array_equal(second.rows, full.rows[40:])
    assert second.diagnostics["previous_rows"] == 40


def test_rows_without_labels_come_last_in_tie_order():
    data = tagged_input(n=100, seed=16)
    labels = list(data.labels)
    for r in (3, 50, 97):
        labels[r] = ()
    data = replace(data, labels=labels)
    sel = MIGSampler().select(data, 100, seed=0)
    rank = build_problem(data, MIGOptions(), seed=0).candidates.tie_rank
    np.testing.assert_array_equal(sel.rows[-3:], sorted([3, 50, 97], key=lambda r: rank[r]))
    np.testing.assert_array_equal(sel.scores[-3:], 0.0)
    # The reference code's argmax order: lowest row first.
    sel = MIGSampler(MIGOptions(tie_break="row")).select(data, 100, seed=0)
    np.testing.assert_array_equal(sel.rows[-3:], [3, 50, 97])


def test_errors_say_what_to_change():
    data = tagged_input(seed=17)
    with pytest.raises(InputError, match="label_source='clusters'"):
        MIGSampler(MIGOptions(label_source="labels")).select(replace(data, labels=None), 5, seed=0)
    with pytest.raises(InputError, match="no labels"):
        MIGSampler().select(replace(data, labels=[()] * data.n_rows), 5, seed=0)
    one_label_each = [(f"t{i}",) for i in range(3000)]
    with pytest.raises(ResourceError, match="memory_budget_gib"):
        MIGSampler(MIGOptions(memory_budget_gib=0.01, similarity_threshold=0.0)).select(
            SelectionInput(embeddings=unit_rows(3000, 4, seed=0), labels=one_label_each), 5, seed=0
        )
    with pytest.raises(ConfigError, match="earlier rounds"):
        MIGSampler().select(replace(data, previous_rows=np.arange(200)), 100, seed=0)
    for bad in ({"phi_b": 0.0}, {"phi_b": 1.5}, {"similarity_threshold": 1.2}, {"gain": "approx"}, {"target_degree": -1}):
        with pytest.raises(ValidationError):
            MIGOptions(**bad)


def test_sparse_candidates_scale_rows_as_the_dense_definition():
    # e_hat_i = A (s_i 1[L_i]), and s_i / |L_i| per label with normalize_by_label_count.
    data = tagged_input(n=120, seed=18)
    for normalize in (False, True):
        problem = build_problem(data, MIGOptions(normalize_by_label_count=normalize), seed=0)
        ind = problem.labels.indicator.toarray()
        s = data.quality / (ind.sum(axis=1) if normalize else 1.0)
        expected = (s[:, None] * ind) @ problem.propagation.toarray().T
        np.testing.assert_allclose(problem.candidates.ehat_rows().toarray(), expected, rtol=1e-12, atol=1e-15)
        assert sp.issparse(problem.candidates.unit)
        assert problem.candidates.unit.shape[0] < data.n_rows


# --- departures from the paper (see the module docstring) ---------------------------------------


@pytest.mark.parametrize("mode", ["conserve", "balanced", "share"])
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_each_label_propagates_exactly_its_own_mass(mode, alpha):
    emb = unit_rows(150, 8, seed=21)
    w = similarity_graph(emb, calibrate_threshold(emb, 6.0), max_edges=10**6)
    a = propagation_matrix(w, alpha, mode).toarray()
    assert a.min() >= 0
    # Column q is where label q's unit of mass goes: it sums to 1 for every label, whatever its degree.
    np.testing.assert_allclose(a.sum(axis=0), 1.0, rtol=0, atol=1e-9)
    e = np.random.default_rng(0).uniform(0, 3, size=150)
    assert (a @ e).sum() == pytest.approx(e.sum(), rel=1e-9)
    if mode == "balanced":
        # Doubly stochastic: a uniform selection stays uniform, so no label is favoured for having few neighbours.
        np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=0, atol=1e-8)
        np.testing.assert_allclose(a, a.T, atol=1e-9)
    if mode == "share":
        has_neighbours = np.asarray(w.sum(axis=0)).ravel() > 0
        np.testing.assert_allclose(np.diag(a)[has_neighbours], 1 / (1 + alpha))


def test_paper_propagation_does_not_conserve_mass():
    # The reason for the departure: under Eq. 6 a label hands out sum_p w'_pq / d_p units, not 1.
    emb = unit_rows(150, 8, seed=21)
    w = similarity_graph(emb, calibrate_threshold(emb, 6.0), max_edges=10**6)
    out = propagation_matrix(w, 1.0, "paper").toarray().sum(axis=0)
    assert out.min() < 0.95 and out.max() > 1.05


def test_sampler_propagates_each_rows_label_mass_unchanged():
    data = tagged_input(n=200, seed=22)
    for mode in ("conserve", "balanced", "share"):
        problem = build_problem(data, MIGOptions(propagation=mode), seed=0)
        assert problem.graph.offdiag.nnz > 0
        mass = np.asarray(problem.candidates.ehat_rows().sum(axis=1)).ravel()
        own = data.quality * np.diff(problem.labels.indicator.indptr)
        np.testing.assert_allclose(mass, own, rtol=1e-9)


def test_degree_is_relative_to_the_number_of_labels_and_tau_stays_positive():
    data = replace(tagged_input(n=2000, seed=23), labels=None)
    opts = MIGOptions(prop_weight=1.0, relative_degree=0.1)
    problem = build_problem(data, opts, seed=0, budget=200)
    degrees = np.diff(problem.graph.offdiag.indptr)
    for (start, end), tau in zip(problem.labels.blocks, problem.graph.thresholds):
        # Each level gets ~10% of its other labels as neighbours: small levels are not near-complete graphs.
        assert degrees[start:end].mean() == pytest.approx(0.1 * (end - start - 1), rel=0.15, abs=0.5)
        assert tau > 0
    # The former absolute degree of 8 is still available.
    fixed = build_problem(data, MIGOptions(prop_weight=1.0, target_degree=8), seed=0, budget=200)
    s, e = fixed.labels.blocks[-1]
    assert np.diff(fixed.graph.offdiag.indptr)[s:e].mean() == pytest.approx(8, rel=0.1)


def test_tag_free_default_has_no_propagation_and_labels_follow_the_budget():
    data = SelectionInput(embeddings=clustered_embeddings(3000, 16, 12, seed=24))
    for budget in (40, 300):
        sel = MIGSampler().select(data, budget, seed=0)
        d = sel.diagnostics
        assert d["cluster_levels"][-1] == budget and d["cluster_levels"][0] == round(budget / 4)
        assert d["prop_weight"] == 0.0 and d["average_degree"] == 0.0
    # With a labels column, or an explicit graph option, the paper's propagation stays on.
    assert MIGSampler().select(tagged_input(seed=24), 30, seed=0).diagnostics["prop_weight"] == 1.0
    explicit = MIGSampler(MIGOptions(target_degree=3)).select(data, 40, seed=0).diagnostics
    assert explicit["prop_weight"] == 1.0 and explicit["average_degree"] > 0


def test_nested_clusters_split_each_parent():
    data = SelectionInput(embeddings=clustered_embeddings(3000, 16, 12, seed=25))
    opts = MIGOptions(nested_clusters=True)
    problem = build_problem(data, opts, seed=0, budget=200)
    assert problem.labels.nested
    ind = problem.labels.indicator.toarray().astype(bool)
    (s0, e0), (s1, e1) = problem.labels.blocks[0], problem.labels.blocks[-1]
    fine, coarse = ind[:, s1:e1].argmax(axis=1), ind[:, s0:e0].argmax(axis=1)
    # Every finest cluster lies inside one coarse cluster, so label sets are exactly the finest clusters.
    for f in np.unique(fine):
        assert len(np.unique(coarse[fine == f])) == 1
    assert problem.candidates.unit.shape[0] == e1 - s1
    sel = MIGSampler(opts).select(data, 200, seed=0)
    assert len(np.unique(sel.rows)) == 200


@pytest.mark.parametrize("make", ["tag_free", "tags_constant_quality"])
def test_the_seed_changes_the_selection(make):
    data = SelectionInput(embeddings=clustered_embeddings(1500, 16, 10, seed=26))
    if make == "tags_constant_quality":
        data = replace(tagged_input(n=400, seed=26, quality=False))
    selections = {tuple(sorted(MIGSampler().select(data, 60, seed=s).rows)) for s in range(4)}
    assert len(selections) == 4


def test_ties_follow_the_seed_not_the_row_order():
    # Constant quality, one label for everyone: every row ties. The reference code takes rows 0..B-1.
    x = unit_rows(500, 8, seed=27)
    data = SelectionInput(embeddings=x, labels=[("same",)] * 500)
    row = MIGSampler(MIGOptions(tie_break="row", central_share=1.0)).select(data, 20, seed=0).rows
    np.testing.assert_array_equal(np.sort(row), np.arange(20))
    seeded = MIGSampler(MIGOptions(central_share=1.0)).select(data, 20, seed=0).rows
    assert np.median(seeded) > 100  # drawn over the whole file, not from its start


@pytest.mark.parametrize("budget", [1, 37, 300, 1499, 1500])
def test_exact_budget_of_distinct_rows(budget):
    data = SelectionInput(embeddings=clustered_embeddings(1500, 16, 10, seed=28))
    sel = MIGSampler().select(data, budget, seed=3)
    assert len(sel.rows) == budget and len(np.unique(sel.rows)) == budget
    assert sel.rows.min() >= 0 and sel.rows.max() < 1500


def test_central_share_offers_typical_rows_of_a_label_set_first():
    # Inside each label set, the half nearest the mean direction of the rows' finest cluster ranks before
    # every other row; the seed orders rows only within those two tiers.
    data = SelectionInput(embeddings=clustered_embeddings(1200, 16, 6, seed=29))
    problem = build_problem(data, MIGOptions(central_share=0.5), seed=0, budget=60)
    finest, sets = problem.labels.finest, problem.labels.set_ids
    x = data.embeddings - data.embeddings.mean(axis=0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    means = np.zeros((finest.max() + 1, x.shape[1]))
    np.add.at(means, finest, x)
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-30)
    cos = np.einsum("ij,ij->i", x, means[finest])
    rank = problem.candidates.tie_rank
    core_rows, rest = [], []
    for g in np.unique(sets):
        rows = np.flatnonzero(sets == g)
        order = rows[np.argsort(-cos[rows], kind="stable")]
        k = int(np.ceil(0.5 * len(rows)))
        core_rows.extend(order[:k])
        rest.extend(order[k:])
    # Near-ties of float32 cosines may swap a pair at the border of the half; allow a few.
    assert np.mean(rank[core_rows] < len(core_rows)) > 0.99
    assert np.mean(rank[rest] >= len(core_rows)) > 0.99

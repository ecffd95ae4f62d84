"""Influence sampler: the score identities of algorithms.md §4 and the selection rules, on small inputs."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from selectflow.tasks.errors import ConfigError, ResourceError
from selectflow.tasks.samplers import SelectionInput
from selectflow.tasks.samplers.influence import (
    InfluenceSampler,
    ProxyModel,
    classes_from_labels,
    el2n,
    forgetting,
    forgetting_scores,
    grand,
    layer_factors,
    linear_per_example_grads,
    per_example_grads,
    ranked_band,
    select_rows,
    self_influence,
    target_influence,
    train_proxy,
    ucb_select,
    vog,
)
from selectflow.tasks.samplers.quotas import allocate_quotas


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # The proxies here are tiny; extra threads only add synchronisation (and the CPU is shared).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def blobs(n=240, d=12, k=4, seed=0, spread=0.6):
    """Unit-norm rows around k random centres, with their centre as label."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = rng.integers(0, k, n)
    x = centres[y] + spread * rng.normal(size=(n, d)) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="module")
def toy():
    x, y = blobs()
    linear = train_proxy(x, y, 4, model="linear", batch_size=32, lr=10.0, epochs=2, n_checkpoints=4, seed=0)
    mlp = train_proxy(x, y, 4, model="mlp", hidden=16, batch_size=32, lr=2.0, epochs=2, n_checkpoints=4, seed=0)
    return x, y, linear, mlp


def fixed_proxy(params, kind="linear", copies=1, lrs=None):
    n_classes = int(params["b" if kind == "linear" else "b2"].shape[0])
    return ProxyModel(
        kind=kind,
        n_classes=n_classes,
        checkpoints=[{k: v.clone() for k, v in params.items()} for _ in range(copies)],
        checkpoint_steps=list(range(1, copies + 1)),
        checkpoint_lrs=lrs or [1.0] * copies,
        total_steps=copies,
    )


# ----------------------------------------------------------------------------- score identities


def test_el2n_is_zero_for_a_perfect_prediction():
    x = np.eye(3, dtype=np.float32)
    proxy = fixed_proxy({"W": torch.eye(3) * 200.0, "b": torch.zeros(3)})
    np.testing.assert_allclose(el2n(proxy, x, np.arange(3)), 0.0, atol=1e-12)
    # A confidently wrong prediction is at the other end: √2.
    np.testing.assert_allclose(el2n(proxy, x, np.array([1, 2, 0])), math.sqrt(2), atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 50.0), c=st.integers(2, 6))
def test_el2n_lies_in_zero_sqrt2(seed, scale, c):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(20, 5, generator=gen).numpy()
    y = torch.randint(0, c, (20,), generator=gen).numpy()
    proxy = fixed_proxy({"W": scale * torch.randn(c, 5, generator=gen), "b": torch.randn(c, generator=gen)})
    e = el2n(proxy, x, y)
    assert np.all(e >= 0) and np.all(e <= math.sqrt(2) + 1e-9)


def test_grand_equals_el2n_times_input_norm_for_the_linear_head(toy):
    x, y, linear, _ = toy
    # Rows of different norms, so the factor ‖[h, 1]‖ actually varies.
    xs = x * np.linspace(0.2, 3.0, len(x), dtype=np.float32)[:, None]
    h_norm = np.sqrt((xs.astype(np.float64) ** 2).sum(1) + 1.0)
    for ckpts in (1, 2, None):
        np.testing.assert_allclose(grand(linear, xs, y, ckpts), el2n(linear, xs, y, ckpts) * h_norm, rtol=1e-6)


def test_closed_form_linear_gradients_equal_autograd(toy):
    x, y, linear, _ = toy
    xt, yt = torch.from_numpy(x[:50]), torch.from_numpy(y[:50])
    for params in linear.checkpoints[:2]:
        closed = linear_per_example_grads(params, xt, yt)
        auto = per_example_grads(params, xt, yt).double()
        torch.testing.assert_close(closed, auto, rtol=1e-4, atol=1e-6)


def test_mlp_layer_factors_equal_autograd_gradients(toy):
    x, y, _, mlp = toy
    xt, yt = torch.from_numpy(x[:40]), torch.from_numpy(y[:40])
    params = mlp.checkpoints[-1]
    auto = per_example_grads(params, xt, yt).double()
    (d1, a1), (d2, a2) = layer_factors(params, xt, yt)
    # Each layer's gradient is δ aᵀ for W and δ for b; params order is W1, b1, W2, b2.
    rebuilt = torch.cat(
        [(d1[:, :, None] * a1.double()[:, None, :]).reshape(40, -1), d1, (d2[:, :, None] * a2.double()[:, None, :]).reshape(40, -1), d2],
        dim=1,
    )
    torch.testing.assert_close(rebuilt, auto, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grand(mlp, x[:40], y[:40], [3]), torch.linalg.vector_norm(auto, dim=1).numpy(), rtol=1e-4)


@pytest.mark.parametrize("cosine", [False, True])
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_factored_target_influence_equals_per_example_gradients(toy, kind, cosine):
    x, y, linear, mlp = toy
    proxy = linear if kind == "linear" else mlp
    targets, target_y = x[200:215], y[200:215]
    fast = target_influence(proxy, x[:60], y[:60], targets=targets, target_y=target_y, cosine=cosine)
    slow = target_influence(proxy, x[:60], y[:60], targets=targets, target_y=target_y, cosine=cosine, method="per_example")
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-7)
    if cosine:
        assert np.all(np.abs(fast) <= 1 + 1e-9)


def test_target_influence_is_the_mean_pairwise_tracin(toy):
    x, y, linear, _ = toy
    rows, targets = x[:8], x[100:103]
    expected = np.zeros(8)
    for t, eta in enumerate(linear.checkpoint_lrs):
        g = linear_per_example_grads(linear.checkpoints[t], torch.from_numpy(rows), torch.from_numpy(y[:8]))
        gt = linear_per_example_grads(linear.checkpoints[t], torch.from_numpy(targets), torch.from_numpy(y[100:103]))
        expected += eta * (g @ gt.T).mean(1).numpy()
    np.testing.assert_allclose(target_influence(linear, rows, y[:8], targets=targets, target_y=y[100:103]), expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_tracin_self_influence_is_non_negative_and_matches_autograd(toy, kind):
    x, y, linear, mlp = toy
    proxy = linear if kind == "linear" else mlp
    s = self_influence(proxy, x, y)
    assert np.all(s >= 0) and s.max() > 0
    expected = sum(
        eta * (per_example_grads(p, torch.from_numpy(x[:20]), torch.from_numpy(y[:20])).double() ** 2).sum(1).numpy()
        for p, eta in zip(proxy.checkpoints, proxy.checkpoint_lrs)
    )
    np.testing.assert_allclose(s[:20], expected, rtol=1e-4)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_vog_is_zero_when_checkpoints_are_identical(toy, kind):
    x, y, linear, mlp = toy
    trained = linear if kind == "linear" else mlp
    frozen = fixed_proxy(trained.checkpoints[-1], kind=kind, copies=3)
    for output in ("logit", "log_softmax"):
        np.testing.assert_allclose(vog(frozen, x, y, normalize="none", output=output), 0.0, atol=1e-12)
    # ...and positive once the checkpoints differ.
    assert vog(trained, x, y, normalize="none").min() > 0


def test_vog_normalisation(toy):
    x, y, linear, _ = toy
    per_class = vog(linear, x, y, normalize="class")
    for c in range(4):
        np.testing.assert_allclose(per_class[y == c].mean(), 0.0, atol=1e-9)
        np.testing.assert_allclose(per_class[y == c].std(), 1.0, rtol=1e-6)
    dataset = vog(linear, x, y, normalize="dataset")
    np.testing.assert_allclose([dataset.mean(), dataset.std()], [0.0, 1.0], atol=1e-6)
    # The logit gradient of a linear head is the class's weight row: VoG only ranks classes.
    raw = vog(linear, x, y, normalize="none", output="logit")
    for c in range(4):
        assert np.ptp(raw[y == c]) < 1e-9


def test_forgetting_counts_transitions_and_never_learned_rows_rank_highest():
    history = np.array(
        [
            [1, 0, 0, 1],
            [0, 1, 0, 1],
            [1, 0, 0, 1],
            [0, 1, 0, 1],
        ],
        dtype=bool,
    )
    # Row 0 forgets twice, row 1 once, row 2 never learns (max + 1 = 3), row 3 never forgets.
    np.testing.assert_array_equal(forgetting(history), [2, 1, 3, 0])
    np.testing.assert_array_equal(forgetting_scores(np.zeros(3), np.zeros(3, bool)), [1, 1, 1])


def test_forgetting_from_training_uses_dense_evaluations():
    x, y = blobs(n=200, spread=1.6, seed=2)  # overlapping classes so some rows flip
    proxy = train_proxy(x, y, 4, batch_size=20, epochs=2, lr=10.0, forgetting_every=2, seed=0)
    assert proxy.n_forgetting_evals == 10  # 20 steps, every 2nd
    scores = forgetting_scores(proxy.forgetting_counts, proxy.ever_correct)
    assert scores.max() >= 1
    if (~proxy.ever_correct).any():
        assert np.all(scores[~proxy.ever_correct] == scores[proxy.ever_correct].max() + 1)


def test_target_influence_is_highest_for_near_duplicates_of_targets():
    rng = np.random.default_rng(0)
    x, y = blobs(n=400, d=16, k=4, seed=0, spread=0.5)
    special = np.arange(5)  # a rare class scattered away from the blobs
    x[special] = rng.normal(size=(5, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y[special] = 4
    targets = (x[special] + 1e-3 * rng.normal(size=(5, 16))).astype(np.float32)
    for model, lr in (("linear", 10.0), ("mlp", 2.0)):
        proxy = train_proxy(x, y, 5, model=model, hidden=32, batch_size=32, lr=lr, epochs=3, seed=0)
        for cosine in (False, True):
            s = target_influence(proxy, x, y, targets=targets, target_y=y[special], cosine=cosine)
            assert set(np.argsort(-s)[:5]) == set(special), (model, cosine)



def test_sampler_target_score_picks_near_duplicates_of_the_targets():
    # The rare class is a tight group, so its class mean is the targets' nearest centroid.
    rng = np.random.default_rng(1)
    x, y = blobs(n=400, d=16, k=4, seed=0, spread=0.5)
    special = np.arange(10, 16)
    x[special] = rng.normal(size=16) + 0.3 * rng.normal(size=(6, 16)) / 4
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y[special] = 4
    targets = (x[special[:3]] + 1e-3 * rng.normal(size=(3, 16))).astype(np.float32)
    data = SelectionInput(embeddings=x, labels=[(f"c{c}",) for c in y], target_embeddings=targets)
    # The special rows are near-duplicates of each other: the default skips those, so turn that off here.
    sel = InfluenceSampler({"score": "target", "balance": "none", "dedup_similarity": None}).select(data, 6, seed=0)
    assert sel.diagnostics["target_classes"] == {"4": 3}
    assert sel.diagnostics["mode"] == "top"  # mode auto keeps the top for the target score (LESS)
    assert set(sel.rows) == set(special)


# ----------------------------------------------------------------------------- selection rules


def test_ranked_band_drops_the_right_rows():
    scores = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 0.0, 6.0, 4.0])
    band = ranked_band(scores, drop_easiest=0.2, drop_hardest=0.3)
    # Lowest two (0, 1) and highest three (7, 8, 9) are gone.
    assert sorted(scores[band]) == [2.0, 3.0, 4.0, 5.0, 6.0]


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(10, 80),
    easiest=st.floats(0, 0.45),
    hardest=st.floats(0, 0.45),
    mode=st.sampled_from(["top", "bottom", "middle"]),
    seed=st.integers(0, 100),
)
def test_drop_fractions_remove_exactly_the_extremes(n, easiest, hardest, mode, seed):
    scores = np.random.default_rng(seed).permutation(n).astype(float)  # distinct, so the band is unambiguous
    kept = n - math.floor(easiest * n) - math.floor(hardest * n)
    rows, _ = select_rows(scores, kept, mode=mode, drop_easiest=easiest, drop_hardest=hardest, seed=seed)
    assert len(set(rows)) == kept
    assert scores[rows].min() == math.floor(easiest * n)
    assert scores[rows].max() == n - 1 - math.floor(hardest * n)


def test_drops_apply_within_each_class():
    scores = np.concatenate([np.arange(10.0), 100 + np.arange(10.0)])
    classes = np.repeat([0, 1], 10)
    rows, _ = select_rows(scores, 12, mode="middle", drop_easiest=0.2, drop_hardest=0.2, classes=classes, seed=0)
    expected = set(range(2, 8)) | set(range(12, 18))
    assert set(rows) == expected


def test_top_and_bottom_order_with_ties_by_row():
    scores = np.array([1.0, 3.0, 3.0, 0.0, 2.0])
    np.testing.assert_array_equal(select_rows(scores, 5, mode="top")[0], [1, 2, 4, 0, 3])
    np.testing.assert_array_equal(select_rows(scores, 5, mode="bottom")[0], [3, 0, 4, 1, 2])


def test_too_few_rows_after_drops_is_a_config_error():
    with pytest.raises(ConfigError, match="drop_easiest"):
        select_rows(np.arange(10.0), 6, mode="middle", drop_easiest=0.3, drop_hardest=0.3)


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=6),
    frac=st.floats(0.05, 1.0),
    mode=st.sampled_from(["top", "bottom", "middle"]),
)
def test_stratified_selection_respects_class_quotas(sizes, frac, mode):
    classes = np.repeat(np.arange(len(sizes)), sizes)
    scores = np.random.default_rng(len(sizes)).normal(size=len(classes))
    budget = max(1, int(frac * len(classes)))
    rows, info = select_rows(scores, budget, mode=mode, classes=classes, seed=1)
    got = np.bincount(classes[rows], minlength=len(sizes))
    np.testing.assert_array_equal(got, allocate_quotas(np.array(sizes), budget))
    if mode == "top":
        # Inside a class, the selected rows are its best.
        for c in range(len(sizes)):
            members = np.flatnonzero(classes == c)
            chosen = rows[classes[rows] == c]
            assert set(chosen) == set(members[np.argsort(-scores[members], kind="stable")][: len(chosen)])


def test_sampler_stratifies_by_label():
    x, y = blobs(n=300, seed=4)
    y = np.where(np.arange(300) < 150, 0, np.where(np.arange(300) < 250, 1, 2))  # 150/100/50
    labels = [(f"L{c}", "extra") for c in y]
    sel = InfluenceSampler({"balance": "class"}).select(SelectionInput(embeddings=x, labels=labels), 30, seed=0)
    assert sel.diagnostics["selected_class_counts"] == {"L0": 15, "L1": 10, "L2": 5}
    assert sel.diagnostics["class_counts"] == {"L0": 150, "L1": 100, "L2": 50}
    assert "el2n (class L0)" in sel.diagnostics["histograms"]


def test_label_rules():
    labels = [("b", "a"), ("a",), ("c", "a"), ()]
    y, names = classes_from_labels(labels, "first")
    assert [names[i] for i in y] == ["b", "a", "c", "(none)"]
    y, names = classes_from_labels(labels, "most_frequent")
    assert [names[i] for i in y] == ["a", "a", "a", "(none)"]


def test_ucb_greedy_exploits_and_exploration_spreads():
    clusters = np.repeat(np.arange(5), 40)
    scores = clusters * 10.0 + np.tile(np.arange(40.0), 5)  # cluster 4 holds every top score
    greedy, _ = ucb_select(scores, clusters, 40, alpha=0.0, batch=5)
    assert set(clusters[greedy]) == {4}
    np.testing.assert_array_equal(greedy, np.arange(199, 159, -1))
    spread, info = ucb_select(scores, clusters, 40, alpha=2.0, batch=5)
    assert set(clusters[spread]) == set(range(5)) and len(set(spread)) == 40
    assert np.bincount(clusters[spread], minlength=5)[4] >= np.bincount(clusters[spread], minlength=5)[0]
    assert info["ucb_arms_used"] == 5


def test_ucb_respects_drops_and_budget():
    clusters = np.arange(100) % 4
    scores = np.arange(100.0)
    rows, _ = ucb_select(scores, clusters, 30, mode="middle", alpha=1.0, drop_easiest=0.1, drop_hardest=0.2, seed=3)
    assert len(set(rows)) == 30 and scores[rows].min() >= 10 and scores[rows].max() < 80


# ----------------------------------------------------------------------------- the sampler


@pytest.fixture(scope="module")
def corpus():
    x, y = blobs(n=300, d=16, k=5, seed=1)
    return SelectionInput(
        embeddings=x,
        labels=[(f"topic{c}",) for c in y],
        target_embeddings=x[:8].copy(),
    )


@pytest.mark.parametrize(
    "options",
    [
        {"score": "el2n"},
        {"score": "grand", "model": "mlp", "hidden": 16},
        {"score": "forgetting", "balance": "none"},
        {"score": "vog", "vog_normalize": "dataset", "mode": "middle", "drop_easiest": 0.2, "drop_hardest": 0.1},
        {"score": "target", "target_cosine": True, "target_labels": "nearest_centroid"},
        {"score": "self_influence", "balance": "ucb", "k": 6},
        {"score": "el2n", "label_source": "clusters", "k": 5, "lr_schedule": "linear", "momentum": 0.5},
    ],
)
def test_sampler_is_deterministic_and_reports(corpus, options):
    a = InfluenceSampler(options).select(corpus, 40, seed=7)
    b = InfluenceSampler(options).select(corpus, 40, seed=7)
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert np.all(a.weights == 1.0)
    assert a.diagnostics["score"] == options["score"]
    assert len(a.diagnostics["histograms"]) <= 11
    assert all(len(v) <= 500 for v in a.diagnostics["curves"].values())


def test_top_selection_has_the_highest_scores(corpus):
    sel = InfluenceSampler({"balance": "none", "mode": "top"}).select(corpus, 30, seed=0)
    assert np.all(np.diff(sel.scores) <= 0)
    bottom = InfluenceSampler({"balance": "none", "mode": "bottom"}).select(corpus, 30, seed=0)
    assert sel.scores.min() >= bottom.scores.max()


def test_middle_mode_depends_on_the_seed(corpus):
    opts = {"mode": "middle", "drop_easiest": 0.3, "drop_hardest": 0.1, "balance": "none"}
    a = InfluenceSampler(opts).select(corpus, 40, seed=1)
    b = InfluenceSampler(opts).select(corpus, 40, seed=2)
    assert set(a.rows) != set(b.rows)


def test_target_score_without_targets_asks_for_a_target_corpus(corpus):
    with pytest.raises(ConfigError, match="target"):
        InfluenceSampler({"score": "target"}).select(replace(corpus, target_embeddings=None), 10, seed=0)


def test_previous_rows_are_never_selected_again(corpus):
    previous = np.arange(0, 300, 2)
    sel = InfluenceSampler({"balance": "none"}).select(replace(corpus, previous_rows=previous), 100, seed=0)
    assert not set(sel.rows) & set(previous)


def test_leaves_global_torch_state_alone(corpus):
    torch.manual_seed(5)
    before = torch.random.get_rng_state().clone()
    torch.set_num_threads(2)  # the sampler runs on `threads` (default 1) and must restore this
    try:
        InfluenceSampler({"model": "mlp", "hidden": 8}).select(corpus, 10, seed=0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert torch.equal(before, torch.random.get_rng_state())


def test_too_many_classes_is_a_resource_error():
    sampler = InfluenceSampler()
    with pytest.raises(ResourceError, match="label_source='clusters'"):
        sampler._check_memory(n=5_000_000, d=384, c=2_000_000, batch_size=1024)


# ----------------------------------------------------------------------------- the default


def test_default_is_score_stratified_and_depends_on_the_seed(corpus):
    unlabeled = replace(corpus, labels=None, target_embeddings=None)
    a = InfluenceSampler().select(unlabeled, 40, seed=1)
    b = InfluenceSampler().select(unlabeled, 40, seed=1)
    c = InfluenceSampler().select(unlabeled, 40, seed=2)
    np.testing.assert_array_equal(a.rows, b.rows)
    assert set(a.rows.tolist()) != set(c.rows.tolist())
    assert a.diagnostics["mode"] == "stratified"


def test_stratified_mode_draws_one_row_per_score_stratum():
    scores = np.arange(100.0)
    for seed in range(5):
        rows, _ = select_rows(scores, 10, mode="stratified", seed=seed)
        # Strata of 10 consecutive ranks: exactly one pick in each, and a different draw per seed.
        np.testing.assert_array_equal(np.bincount(scores[rows].astype(int) // 10, minlength=10), np.ones(10))
    assert len({tuple(sorted(select_rows(scores, 10, mode="stratified", seed=s)[0])) for s in range(5)}) > 1


def test_near_duplicates_are_skipped_while_rows_remain():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(20, 8))
    x = np.concatenate([base, base + 1e-3 * rng.normal(size=(20, 8))])  # row i+20 duplicates row i
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    scores = np.concatenate([np.arange(20.0), np.arange(20.0) + 0.5])  # duplicates sit next to each other by score
    rows, info = select_rows(scores, 20, mode="top", embeddings=x, dedup_similarity=0.95)
    assert len(set((rows % 20).tolist())) == 20 and info["near_duplicates_skipped"] > 0
    plain, _ = select_rows(scores, 20, mode="top")
    assert len(set((plain % 20).tolist())) == 10  # top-k keeps the pairs together
    # A quota only duplicates can fill is still met.
    rows, _ = select_rows(scores, 30, mode="top", embeddings=x, dedup_similarity=0.95)
    assert len(set(rows.tolist())) == 30

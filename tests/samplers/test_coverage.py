"""Coverage sampler (the default) and the two coverage baselines: k-means medoids and facility location."""

import numpy as np
import pytest
from pydantic import ValidationError

from selectflow.tasks.reporting.metrics import near_duplicate_rate
from selectflow.tasks.samplers import SelectionInput, get_sampler
from selectflow.tasks.samplers.coverage import (
    CoverageSampler,
    default_neighbors,
    facility_location,
    facility_location_objective,
    kmeans_medoids,
    knn_graph,
    partitioned_knn_graph,
)

from .conftest import clustered_embeddings


pytestmark = pytest.mark.usefixtures("faiss_one_thread")


def planted_rare_cluster(seed: int = 0, big: int = 10, per_big: int = 190, rare: int = 10, d: int = 32):
    """`big` broad clusters and one tight rare cluster, all around orthogonal centres; the rare rows come last."""
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(d, big + 1)))[0].T
    truth = np.r_[np.repeat(np.arange(big), per_big), np.full(rare, big)]
    noise = np.where(truth == big, 0.2, 0.8)[:, None]
    x = centres[truth] + noise * rng.normal(size=(len(truth), d)) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), truth == big


def with_near_duplicates(seed: int = 0, bases: int = 250, copies: int = 4, d: int = 32):
    """`bases` points of a clustered cloud, each repeated `copies` times with tiny noise (cosine > 0.99)."""
    rng = np.random.default_rng(seed)
    base = clustered_embeddings(bases, d, 8, seed=seed)
    x = np.repeat(base, copies, axis=0) + 0.01 * rng.normal(size=(bases * copies, d)) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


# ---------------------------------------------------------------- the sampler


@pytest.mark.parametrize("budget", [1, 2, 37, 299, 300])
def test_exact_budget_distinct_rows(budget):
    x = clustered_embeddings(300, 16, 6, seed=3)
    sel = CoverageSampler().select(SelectionInput(embeddings=x), budget, seed=0)
    assert len(sel.rows) == budget and len(np.unique(sel.rows)) == budget
    assert sel.rows.min() >= 0 and sel.rows.max() < 300
    assert np.all(sel.weights == 1.0) and len(sel.scores) == budget


@pytest.mark.parametrize("options", [{"greedy_fraction": 0.0}, {"greedy_fraction": 1.0}, {"gamma": 0.0}, {"near_duplicate_similarity": 1.0}, {"n_neighbors": 2}])
def test_exact_budget_for_every_mode(options):
    x = with_near_duplicates(bases=60, copies=5)
    for budget in (1, 50, 200, 300):
        sel = CoverageSampler(options).select(SelectionInput(embeddings=x), budget, seed=1)
        assert len(np.unique(sel.rows)) == budget


def test_same_seed_same_selection_and_the_seed_changes_it():
    inp = SelectionInput(embeddings=clustered_embeddings(500, 16, 6, seed=3))
    a = CoverageSampler().select(inp, 50, seed=0).rows
    assert np.array_equal(a, CoverageSampler().select(inp, 50, seed=0).rows)
    others = [set(CoverageSampler().select(inp, 50, seed=s).rows.tolist()) for s in (1, 2, 3)]
    assert all(o != set(a.tolist()) for o in others)


def test_keeps_a_planted_rare_cluster_that_random_usually_misses():
    x, rare = planted_rare_cluster()
    inp = SelectionInput(embeddings=x)
    budget = 40  # 2% of 1910 rows; the rare cluster is 0.5% of them (random keeps it with probability ~0.19)
    seeds = range(20)
    kept = [rare[CoverageSampler().select(inp, budget, seed=s).rows].any() for s in seeds]
    random_kept = [rare[get_sampler("random").select(inp, budget, seed=s).rows].any() for s in seeds]
    assert sum(kept) >= 16  # measured 18 of 20 with the defaults
    assert sum(random_kept) <= 8  # measured 4 of 20
    # Sharper sampling (closer to greedy) keeps it every time.
    assert all(rare[CoverageSampler({"gamma": 4.0}).select(inp, budget, seed=s).rows].any() for s in range(10))


def test_near_duplicate_rate_below_random():
    x = with_near_duplicates()
    inp = SelectionInput(embeddings=x)
    budget = 100
    ours = np.mean([near_duplicate_rate(x, CoverageSampler().select(inp, budget, seed=s).rows) for s in range(3)])
    random = np.mean([near_duplicate_rate(x, get_sampler("random").select(inp, budget, seed=s).rows) for s in range(3)])
    assert random > 0.05
    assert ours < random / 5


def test_covers_better_than_random():
    x = clustered_embeddings(800, 16, 10, seed=5)
    inp = SelectionInput(embeddings=x)
    graph = knn_graph(x, default_neighbors(800, 40))
    ours = facility_location_objective(x, CoverageSampler().select(inp, 40, seed=0).rows, graph=graph)
    random = max(facility_location_objective(x, get_sampler("random").select(inp, 40, seed=s).rows, graph=graph) for s in range(5))
    assert ours > random


def test_all_greedy_without_exclusion_is_facility_location():
    x = clustered_embeddings(400, 16, 8, seed=1)
    options = {"greedy_fraction": 1.0, "near_duplicate_similarity": 1.0, "n_neighbors": 20}
    sel = CoverageSampler(options).select(SelectionInput(embeddings=x), 30, seed=0)
    graph = knn_graph(x, 20)
    reference = facility_location(x, 30, seed=0, graph=graph)
    assert facility_location_objective(x, sel.rows, graph=graph) == pytest.approx(
        facility_location_objective(x, reference, graph=graph), rel=1e-9)


def test_uses_the_index_when_given():
    x = clustered_embeddings(300, 16, 6, seed=3)
    calls = []

    def knn(queries, k):
        calls.append(k)
        sims = queries @ x.T
        rows = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sims, rows, axis=1), rows

    a = CoverageSampler().select(SelectionInput(embeddings=x, knn=knn), 20, seed=0).rows
    b = CoverageSampler().select(SelectionInput(embeddings=x), 20, seed=0).rows
    assert calls and set(a.tolist()) == set(b.tolist())


@pytest.mark.parametrize("bad", [{"gamma": -1}, {"greedy_fraction": 1.5}, {"n_neighbors": 1}, {"near_duplicate_similarity": 0}, {"k": 3}])
def test_options_are_validated(bad):
    with pytest.raises(ValidationError):
        CoverageSampler(bad)


def test_default_neighbours_are_relative_to_rows_per_pick():
    assert default_neighbors(10_000, 500) == 50
    assert default_neighbors(10_000, 100) == 100
    assert default_neighbors(10_000, 1000) == 25
    assert default_neighbors(10_000, 5000) == 20
    assert default_neighbors(10, 5) == 10


# ---------------------------------------------------------------- the baselines


@pytest.mark.parametrize("budget", [1, 7, 60, 299, 300])
def test_baselines_return_exactly_budget_distinct_rows(budget):
    x = clustered_embeddings(300, 16, 6, seed=3)
    for rows in (kmeans_medoids(x, budget, seed=0), facility_location(x, budget, seed=0)):
        assert len(rows) == budget and len(np.unique(rows)) == budget
        assert rows.min() >= 0 and rows.max() < 300


def test_kmeans_medoids_fill_empty_clusters():
    # 5 distinct points repeated: k-means with k = 12 must leave clusters empty, and still 12 distinct rows come back.
    base = clustered_embeddings(5, 8, 5, seed=0)
    x = np.repeat(base, 6, axis=0)
    rows = kmeans_medoids(x, 12, seed=0)
    assert len(np.unique(rows)) == 12


def test_facility_location_objective_at_least_random():
    x = clustered_embeddings(600, 16, 8, seed=2)
    graph = knn_graph(x, 50)
    ours = facility_location_objective(x, facility_location(x, 30, seed=0, graph=graph), graph=graph)
    rng = np.random.default_rng(0)
    for _ in range(10):
        assert ours >= facility_location_objective(x, rng.choice(600, 30, replace=False), graph=graph)


def test_facility_location_is_greedy():
    # Lazy greedy picks exactly what plain greedy (every gain re-evaluated at each step) picks.
    x = clustered_embeddings(120, 8, 4, seed=4)
    graph = knn_graph(x, 15)
    chosen: list[int] = []
    for _ in range(8):
        gains = [facility_location_objective(x, chosen + [j], graph=graph) if j not in chosen else -1 for j in range(120)]
        chosen.append(int(np.argmax(gains)))
    assert facility_location(x, 8, seed=0, graph=graph).tolist() == chosen


def test_partitioned_graph_finds_the_exact_neighbours_on_clustered_data():
    x = clustered_embeddings(3000, 16, 12, seed=6)
    exact_s, exact_r = knn_graph(x, 20)
    approx_s, approx_r = partitioned_knn_graph(x, 20, seed=0, cell_rows=300)
    assert approx_r.shape == exact_r.shape and (approx_r >= 0).all()
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(exact_r, approx_r)])
    assert recall > 0.9
    assert np.all(np.diff(approx_s, axis=1) <= 1e-6)  # sorted, best first
    assert np.all(approx_s <= exact_s + 1e-5)  # never better than the exact k-th neighbours


def test_large_pools_use_the_partitioned_graph():
    x = clustered_embeddings(2000, 16, 8, seed=2)
    sel = CoverageSampler({"exact_graph_rows": 500}).select(SelectionInput(embeddings=x), 100, seed=0)
    assert sel.diagnostics["graph"].startswith("k-means cells")
    assert len(np.unique(sel.rows)) == 100

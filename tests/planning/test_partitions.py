"""Partitioned selection: fitting, routing shard by shard, the budget over partitions, the merge with border checks, IVF."""

import tracemalloc

import numpy as np
import pytest

from selectflow.tasks.errors import ConfigError
from selectflow.tasks.planning.partition_merge import (NEAR_DUPLICATE, border_pairs, build_ivf_from_shards,
                                                       merge_partitions, select_in_partition)
from selectflow.tasks.planning.partitions import (allocate_partition_budget, assign_partitions, fit_partitions,
                                                  load_partition, partition_seed, partition_sizes, route_shards,
                                                  sample_rows, spare_counts)
from selectflow.tasks.samplers.random import RandomSampler

D = 32
K = 4


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    """2,850 clustered unit rows (6 centres) plus 150 near-duplicate pairs planted across the middle of two centres."""
    rng = np.random.default_rng(7)
    centres = _unit(rng.normal(size=(6, D)))
    x = centres[rng.integers(0, 6, 2850)] + 0.25 * rng.normal(size=(2850, D))
    pairs = []
    for _ in range(150):
        a, b = rng.choice(6, 2, replace=False)
        mid = _unit((centres[a] + centres[b])[None] + 0.05 * rng.normal(size=(1, D)))[0]
        step = 0.04 * (centres[a] - centres[b])
        pairs += [mid + step, mid - step]
    x = _unit(np.concatenate([x, np.asarray(pairs)]))
    return x[np.random.default_rng(8).permutation(len(x))]


def _shards(x, sizes, tmp_path, dtype=np.float32):
    paths, start = [], 0
    for i, n in enumerate(sizes):
        p = tmp_path / f"emb-{i:03d}.npy"
        np.save(p, x[start : start + n].astype(dtype))
        paths.append(p)
        start += n
    assert start == len(x)
    return paths


class CountingShard:
    """An array-like shard that fails if more than `limit` rows are read at once, or the whole shard is materialised."""

    def __init__(self, array, limit):
        self._a, self.limit = array, limit
        self.shape, self.dtype = array.shape, array.dtype
        self.max_read = self.total_read = 0

    def __getitem__(self, index):
        out = self._a[index]
        assert len(out) <= self.limit, f"read {len(out)} rows at once (limit {self.limit})"
        self.max_read = max(self.max_read, len(out))
        self.total_read += len(out)
        return out

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole shard was materialised")


@pytest.fixture(scope="module")
def centroids(data):
    return fit_partitions([data[:1000], data[1000:]], k=K, seed=3, chunk_rows=128)


def test_fit_is_seeded_and_independent_of_shards_and_chunks(data, centroids):
    again = fit_partitions([data[:500], data[500:2000], data[2000:]], k=K, seed=3, chunk_rows=1000)
    np.testing.assert_array_equal(centroids, again)
    assert centroids.shape == (K, D) and np.allclose(np.linalg.norm(centroids, axis=1), 1, atol=1e-6)
    assert not np.array_equal(centroids, fit_partitions([data], k=K, seed=4))
    pos, rows = sample_rows([data[:100], data[100:]], 50, seed=1, chunk_rows=7)
    np.testing.assert_allclose(rows, data[pos], atol=1e-6)


def test_routing_chunk_by_chunk_equals_all_at_once_and_covers_every_row_once(data, centroids, tmp_path):
    whole = assign_partitions(data, centroids)
    assert np.array_equal(whole, np.argmax(data.astype(np.float64) @ centroids.T.astype(np.float64), axis=1))
    paths = _shards(data, [1000, 1, 1149, 1000], tmp_path)
    routed = route_shards(paths, centroids=centroids, out_dir=tmp_path / "parts", chunk_rows=97)
    assert [r.row_offset for r in routed] == [0, 1000, 1001, 2150]
    sizes = partition_sizes(tmp_path / "parts", len(paths))
    np.testing.assert_array_equal(sizes, np.bincount(whole, minlength=K))
    seen = []
    for p in range(K):
        part = load_partition(tmp_path / "parts", p, len(paths))
        np.testing.assert_array_equal(part.rows, np.flatnonzero(whole == p))
        np.testing.assert_allclose(part.embeddings, data[part.rows], atol=1e-6)
        seen.append(part.rows)
    seen = np.concatenate(seen)
    assert len(seen) == len(data) and np.array_equal(np.sort(seen), np.arange(len(data)))


def test_assignment_ties_go_to_the_lower_partition():
    cents = _unit(np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]))
    x = _unit(np.array([[2.0, 1.0, 1.0], [0.0, 0.0, 1.0]]))
    np.testing.assert_array_equal(assign_partitions(x, cents), [0, 2])


def test_routing_reads_one_chunk_at_a_time(data, centroids, tmp_path):
    shards = [CountingShard(data[:1600], 100), CountingShard(data[1600:], 100)]
    route_shards(shards, centroids=centroids, out_dir=tmp_path / "parts", chunk_rows=100)
    assert all(s.max_read == 100 for s in shards)
    assert all(s.total_read == 2 * s.shape[0] for s in shards)  # two passes: assign, then copy
    fit_partitions(shards, k=K, seed=3, chunk_rows=100)  # the sample is read in windows too


def test_routing_peak_memory_is_a_chunk_not_the_matrix(tmp_path):
    n, d = 40_000, 64  # 10 MB as float32
    x = _unit(np.random.default_rng(0).normal(size=(n, d)))
    paths = _shards(x, [20_000, 20_000], tmp_path)
    cents = x[:8].copy()
    del x
    tracemalloc.start()
    route_shards(paths, centroids=cents, out_dir=tmp_path / "parts", chunk_rows=1_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < n * d * 4 / 8, f"routing peaked at {peak} bytes"


def test_float16_shards(data, centroids, tmp_path):
    paths = _shards(data, [1500, 1650], tmp_path, dtype=np.float16)
    route_shards(paths, centroids=centroids, out_dir=tmp_path / "parts", chunk_rows=500)
    part = load_partition(tmp_path / "parts", 0, len(paths))
    assert part.embeddings.dtype == np.float32 and np.allclose(np.linalg.norm(part.embeddings, axis=1), 1, atol=1e-5)


def test_budget_is_exact_and_proportional():
    sizes = np.array([1000, 10, 333, 0, 2657])
    for budget in (1, 7, 100, 399, 4000):
        q = allocate_partition_budget(sizes, budget)
        assert q.sum() == budget and np.all(q <= sizes)
        assert np.all(np.abs(q - budget * sizes / sizes.sum()) < 1)
    with pytest.raises(ConfigError):
        allocate_partition_budget(sizes, 5000)
    q = allocate_partition_budget(sizes, 100, weights=np.array([1.0, 0, 0, 0, 1.0]))  # a sampler's own rule
    np.testing.assert_array_equal(q, [50, 0, 0, 0, 50])
    q = allocate_partition_budget(sizes, 100, weights=np.array([1.0, 0, 0, 0, 1.0]), capacity=np.array([20, 10, 333, 0, 9999]))
    np.testing.assert_array_equal(q, [20, 0, 0, 0, 80])
    s = spare_counts(np.array([100, 0, 10, 5]), np.array([200, 50, 11, 5]))
    np.testing.assert_array_equal(s, [5, 0, 1, 0])
    assert partition_seed(1, 2) == partition_seed(1, 2) != partition_seed(1, 3)


def _write_selection(path, partition, quota, rows, emb):
    np.savez(path, partition=np.int64(partition), quota=np.int64(quota), rows=np.asarray(rows, np.int64),
             scores=np.zeros(len(rows)), weights=np.ones(len(rows)), clusters=np.full(len(rows), -1, np.int64),
             embeddings=_unit(np.asarray(emb, np.float64)))


def test_merge_replaces_a_border_duplicate_by_the_next_clean_spare(tmp_path):
    e = np.eye(6)
    dup = e[0] + 0.01 * e[5]  # cosine 0.99995 to e[0]
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    _write_selection(a, 0, 2, [10, 11, 12], [e[0], e[1], e[2]])
    # partition 1: its rank-0 pick duplicates partition 0's; its first spare duplicates it too, the second is clean
    _write_selection(b, 1, 2, [20, 21, 22, 23], [dup, e[3], e[0] - 0.01 * e[5], e[4]])
    m = merge_partitions([b, a], budget=4)
    assert sorted(m.rows.tolist()) == [10, 11, 21, 23]
    assert m.rows.tolist() == [10, 23, 11, 21]  # rank 0 of each (ties of quota: lower partition first), then rank 1
    assert (m.report.border_duplicates, m.report.replaced, m.report.spares_skipped, m.report.unresolved) == (1, 1, 1, 0)
    _write_selection(b, 1, 2, [20, 21, 22], [dup, e[3], e[0]])  # no clean spare: the pick is kept
    m = merge_partitions([a, b], budget=4)
    assert sorted(m.rows.tolist()) == [10, 11, 20, 21] and m.report.unresolved == 1
    with pytest.raises(Exception):
        merge_partitions([a, b], budget=5)


def _pipeline(data, tmp_path, shard_sizes, chunk_rows, seed, budget=900):
    tmp_path.mkdir()
    paths = _shards(data, shard_sizes, tmp_path)
    cents = fit_partitions(paths, k=K, seed=seed, chunk_rows=chunk_rows)
    route_shards(paths, centroids=cents, out_dir=tmp_path / "parts", chunk_rows=chunk_rows)
    sizes = partition_sizes(tmp_path / "parts", len(paths))
    quotas = allocate_partition_budget(sizes, budget)
    spares = spare_counts(quotas, sizes, fraction=0.2)
    outs = [select_in_partition(partition_dir=tmp_path / "parts", partition=p, n_shards=len(paths), sampler=RandomSampler(),
                                quota=int(quotas[p]), spares=int(spares[p]), seed=seed, out_path=tmp_path / f"sel/p-{p}.npz")
            for p in range(K)]
    return merge_partitions(outs, budget=budget), quotas


def test_partitioned_selection_end_to_end(data, tmp_path):
    merged, quotas = _pipeline(data, tmp_path / "a", [1000, 2150], 256, seed=5)
    assert len(merged.rows) == 900 and len(np.unique(merged.rows)) == 900
    np.testing.assert_array_equal(np.bincount(merged.partitions, minlength=K), quotas)
    assert merged.report.border_duplicates > 0 and merged.report.unresolved == 0
    i, j = border_pairs(data[merged.rows], merged.partitions, NEAR_DUPLICATE)
    assert len(i) == 0
    x = data[merged.rows].astype(np.float64)
    sims = x @ x.T
    cross = merged.partitions[:, None] != merged.partitions[None, :]
    assert sims[cross].max() < NEAR_DUPLICATE
    again, _ = _pipeline(data, tmp_path / "b", [7, 3000, 143], 61, seed=5)  # other shards, other chunks
    np.testing.assert_array_equal(merged.rows, again.rows)
    assert merged.report.to_dict() == again.report.to_dict()
    other, _ = _pipeline(data, tmp_path / "c", [1000, 2150], 256, seed=6)
    assert not np.array_equal(np.sort(other.rows), np.sort(merged.rows))


def test_ivf_over_shards(data, tmp_path):
    paths = _shards(data, [1000, 2150], tmp_path)
    index, params = build_ivf_from_shards(paths, seed=0, nlist=8, nprobe=8, chunk_rows=300)
    assert index.ntotal == len(data) and params.kind == "ivf"
    _, found = index.search(data[[0, 1500, 3149]], 1)
    np.testing.assert_array_equal(found[:, 0], [0, 1500, 3149])
    same, _ = build_ivf_from_shards([data], seed=0, nlist=8, nprobe=8, chunk_rows=3150)
    np.testing.assert_array_equal(index.search(data[:50], 5)[1], same.search(data[:50], 5)[1])
    pq, params = build_ivf_from_shards(paths, seed=0, nlist=4, pq_m=8)
    assert pq.ntotal == len(data) and params.kind == "ivfpq"


def test_bench_generator_writes_float16_shards_and_ids(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    import polars as pl

    path = Path(__file__).resolve().parents[2] / "bench" / "bench_partitions.py"
    spec = importlib.util.spec_from_file_location("bench_partitions_under_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    m = bench.generate(str(tmp_path), rows=2500, shard_rows=1000, seed=1, n_clusters=20)
    assert [s["rows"] for s in m["shards"]] == [1000, 1000, 500]
    assert json.loads((tmp_path / "manifest.json").read_text())["rows"] == 2500
    shards = [tmp_path / s["path"] for s in m["shards"]]
    first = np.load(shards[0])
    assert first.dtype == np.float16 and first.shape == (1000, 384)
    assert np.allclose(np.linalg.norm(first.astype(np.float32), axis=1), 1, atol=2e-3)
    corpus = pl.read_parquet(tmp_path / "corpus.parquet")
    assert corpus.height == 2500 and corpus["id"].n_unique() == 2500 and corpus["id"][1000] == "r0000001000"
    again = bench.generate(str(tmp_path / "again"), rows=2500, shard_rows=1000, seed=1, n_clusters=20)
    np.testing.assert_array_equal(np.load(tmp_path / "again" / again["shards"][2]["path"]), np.load(shards[2]))
    routed = route_shards(shards, centroids=fit_partitions(shards, k=3, seed=0), out_dir=tmp_path / "parts", chunk_rows=400)
    assert sum(sum(r.counts) for r in routed) == 2500

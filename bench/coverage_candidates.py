"""Candidates measured while choosing the default sampler (`coverage`), as plain functions for tune_quality.py.

Each is `f(embeddings, budget, seed, knn=None, **options) -> rows` (exactly `budget` distinct rows):

    OMP_NUM_THREADS=1 .venv/bin/python bench/tune_quality.py coverage_candidates.km_member \\
        coverage_candidates.rfl:frac=0.5 coverage_candidates.flmix:frac=0.5 coverage ...

The two baselines live in the package (selectflow.tasks.samplers.coverage.kmeans_medoids and
.facility_location); the chosen method is the registered `coverage` sampler. The k-NN graph of the pool
is cached per embedding matrix, so candidates share it within one run.

`python bench/coverage_candidates.py skew OUT_EMB OUT_DATA` writes the long-tailed demo subset used as a
third corpus (each template keeps a log-uniform 5..200 of its 200 rows, seed 11; about 2,000 rows).
"""

import heapq
import math
import sys

import numpy as np

from selectflow.tasks.samplers.clustering import kmeans
from selectflow.tasks.samplers.coverage import facility_location, knn_graph
from selectflow.tasks.samplers.quotas import allocate_quotas

_CACHE: dict = {}


def _graph(x, knn, k):
    key = ("graph", id(x), x.shape, k)
    if key not in _CACHE:
        _CACHE[key] = knn_graph(x, k, knn)
    return _CACHE[key]


def _reverse(x, knn, k, row_weight=None):
    sims, nbrs = _graph(x, knn, k)
    n = len(x)
    valid = (nbrs >= 0).ravel()
    served = np.repeat(np.arange(n), nbrs.shape[1])[valid]
    server = nbrs.ravel()[valid]
    w = np.maximum(sims.ravel()[valid], 0.0).astype(np.float64)
    if row_weight is not None:
        w = w * row_weight[served]
    order = np.argsort(server, kind="stable")
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(server, minlength=n), out=indptr[1:])
    return indptr, served[order], w[order]


def _lazy_greedy(indptr, served, w, n, budget, start, tie, allowed=None, quota=None, strata=None):
    """Lazy greedy facility location continuing from `start`, optionally under per-stratum quotas."""
    best = np.zeros(n)
    taken = np.zeros(n, bool)
    out = list(start)
    for j in out:
        taken[j] = True
        sl = slice(indptr[j], indptr[j + 1])
        np.maximum.at(best, served[sl], w[sl])
    heap = []
    for j in np.flatnonzero(~taken):
        sl = slice(indptr[j], indptr[j + 1])
        heap.append((-np.maximum(w[sl] - best[served[sl]], 0).sum(), tie[j], j))
    heapq.heapify(heap)
    while len(out) < budget and heap:
        _, t, j = heapq.heappop(heap)
        if quota is not None and quota[strata[j]] == 0:
            continue
        sl = slice(indptr[j], indptr[j + 1])
        g = np.maximum(w[sl] - best[served[sl]], 0).sum()
        if heap and (-g, t) > heap[0][:2]:
            heapq.heappush(heap, (-g, t, j))
            continue
        out.append(j)
        if quota is not None:
            quota[strata[j]] -= 1
        np.maximum.at(best, served[sl], w[sl])
    return out


def _poisson(x, m, rng, tau, start=()):
    """Rows in random order, skipping any at cosine > tau to one already kept (blue-noise random)."""
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    if len(start):
        index.add(np.ascontiguousarray(x[list(start)]))
    taken = np.zeros(len(x), bool)
    taken[list(start)] = True
    out, skipped = [], []
    for i in rng.permutation(len(x)):
        if len(out) >= m:
            break
        if taken[i]:
            continue
        if index.ntotal:
            s, _ = index.search(x[i : i + 1], 1)
            if s[0, 0] > tau:
                skipped.append(i)
                continue
        index.add(x[i : i + 1])
        out.append(i)
    return out + skipped[: m - len(out)]


def _fill(out, n, budget, rng):
    if len(out) < budget:
        rest = np.setdiff1d(np.arange(n), out)
        out = list(out) + list(rng.permutation(rest)[: budget - len(out)])
    return np.asarray(out[:budget], dtype=np.int64)


def km_member(embeddings, budget, seed, knn=None, near=1.0):
    """k-means with k = budget, one seeded random member per cluster (among its `near` share closest to the centroid)."""
    n = len(embeddings)
    rng = np.random.default_rng([seed, 1])
    cl = kmeans(embeddings, budget, seed)
    out = []
    for c in range(budget):
        m = np.flatnonzero(cl.assignments == c)
        if len(m):
            m = m[np.argsort(cl.distances[m], kind="stable")[: max(1, math.ceil(near * len(m)))]]
            out.append(int(rng.choice(m)))
    return _fill(out, n, budget, rng)


def poisson(embeddings, budget, seed, knn=None, tau=0.95):
    """Random with near-duplicate suppression: random order, skip rows at cosine > tau to a kept row."""
    rng = np.random.default_rng(seed)
    return _fill(_poisson(embeddings, budget, rng, tau), len(embeddings), budget, rng)


def flmix(embeddings, budget, seed, knn=None, frac=0.5, tau=0.95, k=50):
    """Facility location (lazy greedy) for frac * budget rows, then near-duplicate-suppressed random."""
    m = int(round(frac * budget))
    first = list(facility_location(embeddings, m, seed, graph=_graph(embeddings, knn, k))) if m else []
    rng = np.random.default_rng([seed, 2])
    rest = _poisson(embeddings, budget - m, rng, tau, start=first)
    return _fill(first + rest, len(embeddings), budget, rng)


def rfl(embeddings, budget, seed, knn=None, frac=0.5, tau=0.95, k=50):
    """Near-duplicate-suppressed random for (1 - frac) * budget rows, then facility location continuing from them."""
    n = len(embeddings)
    rng = np.random.default_rng(seed)
    first = _poisson(embeddings, budget - int(round(frac * budget)), rng, tau)
    indptr, served, w = _reverse(embeddings, knn, k)
    return _fill(_lazy_greedy(indptr, served, w, n, budget, first, rng.random(n)), n, budget, rng)


def stochastic_greedy(embeddings, budget, seed, knn=None, R=8, k=50):
    """Stochastic greedy facility location: each pick is the best of R random unpicked rows."""
    n = len(embeddings)
    rng = np.random.default_rng(seed)
    indptr, served, w = _reverse(embeddings, knn, k)
    best = np.zeros(n)
    taken = np.zeros(n, bool)
    out = []
    for _ in range(budget):
        cand = rng.choice(np.flatnonzero(~taken), size=min(R, n - len(out)), replace=False)
        gains = [np.maximum(w[indptr[j] : indptr[j + 1]] - best[served[indptr[j] : indptr[j + 1]]], 0).sum() for j in cand]
        j = int(cand[int(np.argmax(gains))])
        out.append(j)
        taken[j] = True
        sl = slice(indptr[j], indptr[j + 1])
        np.maximum.at(best, served[sl], w[sl])
    return np.asarray(out)


def density_fl(embeddings, budget, seed, knn=None, beta=1.0, m=10, k=50):
    """Facility location with row i weighted by (1 - similarity to its m-th neighbour)^beta (sparse rows count more)."""
    n = len(embeddings)
    sims, _ = _graph(embeddings, knn, k)
    r = np.maximum(1.0 - sims[:, min(m, sims.shape[1] - 1)].astype(np.float64), 1e-6) ** beta
    indptr, served, w = _reverse(embeddings, knn, k, row_weight=r / r.mean())
    rng = np.random.default_rng(seed)
    return _fill(_lazy_greedy(indptr, served, w, n, budget, [], rng.random(n)), n, budget, rng)


def partition_fl(embeddings, budget, seed, knn=None, clusters_per_sqrt_budget=2.0, k=50):
    """Facility location under a partition matroid: k-means strata (k = c * sqrt(budget)) with quotas by size."""
    n = len(embeddings)
    kc = max(1, min(int(round(clusters_per_sqrt_budget * math.sqrt(budget))), budget, n))
    cl = kmeans(embeddings, kc, seed)
    quota = allocate_quotas(np.bincount(cl.assignments, minlength=kc), budget)
    indptr, served, w = _reverse(embeddings, knn, k)
    rng = np.random.default_rng(seed)
    out = _lazy_greedy(indptr, served, w, n, budget, [], rng.random(n), quota=quota, strata=cl.assignments)
    return _fill(out, n, budget, rng)


def make_skewed_demo(emb_in, data_in, emb_out, data_out, seed=11, low=5, high=200):
    import polars as pl

    e = pl.read_parquet(emb_in)
    d = pl.read_ndjson(data_in) if data_in.endswith(".jsonl") else pl.read_parquet(data_in)
    rng = np.random.default_rng(seed)
    templates = np.array(d["template"].to_list())
    names = sorted(set(templates.tolist()))
    sizes = {t: int(round(math.exp(rng.uniform(math.log(low), math.log(high))))) for t in names}
    keep = []
    for t in names:
        rows = np.flatnonzero(templates == t)
        keep += sorted(rng.choice(rows, min(sizes[t], len(rows)), replace=False).tolist())
    keep = np.sort(np.array(keep))
    e[keep].write_parquet(emb_out)
    d[keep].write_parquet(data_out)
    return len(keep)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "skew":
    print(make_skewed_demo("/tmp/demo_emb.parquet", "../shared/data/instructions_demo.jsonl", sys.argv[2], sys.argv[3]), "rows")

"""Coverage baselines: plain k-means medoids and facility location, as plain functions of arrays.

These are the strong baselines of the evaluation (issue 11): both cover the embedding space well
(low coverage distance, no near-duplicates) but lose rare regions (template coverage below random).

- `kmeans_medoids`: FAISS k-means with k = budget (seeded), one medoid per cluster (the row nearest
  its centroid); an empty cluster takes the not-yet-selected row nearest its centroid.
- `facility_location`: lazy greedy maximisation of F(S) = sum_i max_{j in S} sim(i, j) over a k-NN
  similarity graph (Nemhauser et al. 1978; lazy evaluations, Minoux 1978), similarities clipped at 0;
  ties between equal gains are broken by a seeded random key.

No Prefect import; every function takes an integer seed and uses no global random state.
"""

import heapq

import numpy as np

from ..errors import ConfigError
from .clustering import kmeans

# Rows per k-NN query batch (bounds memory of the (batch, k) result and of the flat search).
KNN_CHUNK = 16384


def _check(embeddings: np.ndarray, budget: int) -> np.ndarray:
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ConfigError(f"Embeddings must be a non-empty (rows, dim) matrix; got shape {x.shape}.")
    if not 1 <= int(budget) <= x.shape[0]:
        raise ConfigError(f"Budget of {budget} rows is outside 1..{x.shape[0]}.")
    return x


def kmeans_medoids(embeddings: np.ndarray, budget: int, seed: int, n_iter: int = 20) -> np.ndarray:
    """Exactly `budget` distinct rows: one medoid (row nearest its centroid) per k-means cluster, k = budget.

    Rows come in cluster order. FAISS k-means can leave clusters empty; each empty cluster (in
    cluster order) takes the not-yet-selected row nearest its centroid (ties to the lower row).
    """
    x = _check(embeddings, budget)
    n = x.shape[0]
    budget = int(budget)
    clustering = kmeans(x, budget, int(seed), n_iter=n_iter)
    a = clustering.assignments
    order = np.lexsort((np.arange(n), clustering.distances, a))  # by cluster, then distance, then row
    first = np.r_[True, a[order][1:] != a[order][:-1]]
    medoid_of = np.full(budget, -1, dtype=np.int64)
    medoid_of[a[order][first]] = order[first]
    taken = np.zeros(n, dtype=bool)
    taken[medoid_of[medoid_of >= 0]] = True
    for c in np.flatnonzero(medoid_of < 0):
        sims = x @ clustering.centroids[c]
        sims[taken] = -np.inf
        row = int(np.argmax(sims))  # first maximum: ties to the lower row
        medoid_of[c] = row
        taken[row] = True
    return medoid_of


def knn_graph(
    embeddings: np.ndarray, n_neighbors: int = 50, knn=None
) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, rows), each (N, k): every row's k nearest rows by inner product (itself included).

    `knn` is a SelectionInput-style search function (queries, k) -> (similarities, rows); without one,
    an exact FAISS inner-product index is built. Missing neighbours (an approximate index can return
    fewer than k) have row -1 and similarity -inf.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = x.shape[0]
    k = int(max(1, min(n_neighbors, n)))
    if knn is None:
        import faiss

        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        knn = lambda q, kk: index.search(np.ascontiguousarray(q, dtype=np.float32), int(kk))  # noqa: E731
    sims = np.empty((n, k), dtype=np.float32)
    rows = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, KNN_CHUNK):
        s, r = knn(x[start : start + KNN_CHUNK], k)
        s, r = np.asarray(s, dtype=np.float32), np.asarray(r, dtype=np.int64)
        s = np.where(r >= 0, s, -np.inf)
        sims[start : start + len(s)], rows[start : start + len(s)] = s, r
    return sims, rows


def facility_location_objective(embeddings: np.ndarray, rows: np.ndarray, knn=None, n_neighbors: int = 50,
                                graph: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """F(S) = sum_i max_{j in S and j in kNN(i)} max(sim(i, j), 0): what `facility_location` maximises."""
    sims, nbrs = graph if graph is not None else knn_graph(embeddings, n_neighbors, knn)
    selected = np.zeros(sims.shape[0], dtype=bool)
    selected[np.asarray(rows, dtype=np.int64)] = True
    hit = (nbrs >= 0) & selected[np.maximum(nbrs, 0)]
    return float(np.where(hit, np.maximum(sims, 0.0), 0.0).max(axis=1).sum(dtype=np.float64))


def facility_location(
    embeddings: np.ndarray,
    budget: int,
    seed: int,
    knn=None,
    n_neighbors: int = 50,
    graph: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Exactly `budget` distinct rows, in greedy order, maximising facility location over a k-NN graph.

    Candidate j serves row i when j is among i's `n_neighbors` nearest rows (itself included), with
    similarity max(sim(i, j), 0). Lazy greedy: a candidate's stale gain is an upper bound (the
    objective is submodular), so it is re-evaluated only when it reaches the top of the heap. Equal
    gains are ordered by a random key drawn from `seed`. Once every gain is 0 the remaining rows
    follow that same random order, so the budget is always met exactly.
    """
    x = _check(embeddings, budget)
    n = x.shape[0]
    budget = int(budget)
    sims, nbrs = graph if graph is not None else knn_graph(x, n_neighbors, knn)
    valid = nbrs >= 0
    served = np.repeat(np.arange(n, dtype=np.int64), nbrs.shape[1])[valid.ravel()]
    server = nbrs.ravel()[valid.ravel()]
    weight = np.maximum(sims.ravel()[valid.ravel()], 0.0).astype(np.float64)
    # Reverse graph in CSR form: for candidate j, the rows it serves and their similarities.
    order = np.argsort(server, kind="stable")
    served, weight = served[order], weight[order]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(server, minlength=n), out=indptr[1:])
    gains = np.bincount(server, weights=np.maximum(sims.ravel()[valid.ravel()], 0.0), minlength=n)
    tie = np.random.default_rng(int(seed)).random(n)
    heap = [(-float(gains[j]), float(tie[j]), j) for j in range(n)]
    heapq.heapify(heap)
    best = np.zeros(n, dtype=np.float64)  # current max similarity of each row to the selection
    chosen: list[int] = []
    while len(chosen) < budget:
        _, t, j = heapq.heappop(heap)
        lo, hi = indptr[j], indptr[j + 1]
        who = served[lo:hi]
        gain = float(np.maximum(weight[lo:hi] - best[who], 0.0).sum())
        if heap and (-gain, t) > heap[0][:2]:
            heapq.heappush(heap, (-gain, t, j))  # stale bound: re-queue with the fresh gain
            continue
        chosen.append(j)
        np.maximum.at(best, who, weight[lo:hi])
    return np.asarray(chosen, dtype=np.int64)

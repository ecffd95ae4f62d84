"""Coverage baselines: plain k-means medoids and facility location, as plain functions of arrays.

These are the strong baselines of the evaluation (issue 11): both cover the embedding space well
(low coverage distance, no near-duplicates) but lose rare regions (template coverage below random).

- `kmeans_medoids`: FAISS k-means with k = budget (seeded), one medoid per cluster (the row nearest
  its centroid); an empty cluster takes the not-yet-selected row nearest its centroid.
- `facility_location`: lazy greedy maximisation of F(S) = sum_i max_{j in S} sim(i, j) over a k-NN
  similarity graph (Nemhauser et al. 1978; lazy evaluations, Minoux 1978), similarities clipped at 0;
  ties between equal gains are broken by a seeded random key.

- `CoverageSampler` (registered as "coverage", the default of `selectflow select`): gain-sampled
  facility location. See its docstring.

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
    index_dtype = np.int32 if n < 2**31 - 1 else np.int64
    if knn is None:
        # Exact inner-product search up to 100k rows, IVF above (the pipeline's own index choice).
        from ..embedding.faiss_index import build_index, choose_params

        index = build_index(x, choose_params(n), seed=0)
        knn = lambda q, kk: index.search(np.ascontiguousarray(q, dtype=np.float32), int(kk))  # noqa: E731
    sims = np.empty((n, k), dtype=np.float32)
    rows = np.empty((n, k), dtype=index_dtype)
    for start in range(0, n, KNN_CHUNK):
        s, r = knn(x[start : start + KNN_CHUNK], k)
        s, r = np.asarray(s, dtype=np.float32), np.asarray(r, dtype=np.int64)
        s = np.where(r >= 0, s, -np.inf)
        sims[start : start + len(s)], rows[start : start + len(s)] = s, r
    return sims, rows


def partitioned_knn_graph(
    embeddings: np.ndarray, n_neighbors: int, seed: int, *, cell_rows: int = 1000, probes: int = 3, n_iter: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """An approximate k-NN graph for large pools: exact search inside k-means cells and their neighbours.

    The pool is cut into about N / `cell_rows` FAISS k-means cells (seeded); the rows of a cell are
    compared (FAISS exact search: BLAS products and a heap per row) with every row of the `probes` cells whose
    centroids are nearest that cell's centroid (the cell itself first). Cost is about
    N * probes * cell_rows * D multiply-adds, against N^2 * D for exact search. Same layout as
    `knn_graph`: (similarities, rows), each (N, k), missing neighbours -1 / -inf.
    """
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = x.shape[0]
    k = int(max(1, min(n_neighbors, n)))
    n_cells = int(max(1, min(n, -(-n // int(cell_rows)))))
    clustering = kmeans(x, n_cells, int(seed), n_iter=n_iter)
    a = clustering.assignments
    order = np.argsort(a, kind="stable")
    bounds = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(np.bincount(a, minlength=n_cells), out=bounds[1:])
    c = clustering.centroids
    near_cells = np.argsort(-(c @ c.T), axis=1, kind="stable")[:, : max(1, min(int(probes), n_cells))]
    index_dtype = np.int32 if n < 2**31 - 1 else np.int64
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    rows = np.full((n, k), -1, dtype=index_dtype)
    for cell in range(n_cells):
        members = order[bounds[cell] : bounds[cell + 1]]
        if len(members) == 0:
            continue
        probe = np.unique(np.r_[cell, near_cells[cell]])
        cand = np.concatenate([order[bounds[p] : bounds[p + 1]] for p in probe])
        kk = min(k, len(cand))
        # FAISS's exact search: one BLAS product per block and a heap per row for the top kk.
        s, top = faiss.knn(x[members], x[cand], kk, metric=faiss.METRIC_INNER_PRODUCT)
        sims[members, :kk] = s
        rows[members, :kk] = cand[top]
    return sims, rows


def facility_location_objective(embeddings: np.ndarray, rows: np.ndarray, *, knn=None, n_neighbors: int = 50,
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
    *, knn=None,
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


# --- the default sampler: gain-sampled facility location ------------------------------------------

import math  # noqa: E402

from pydantic import Field  # noqa: E402

from .base import Sampler, SamplerOptions, Selection, SelectionInput  # noqa: E402

# Block sums are recomputed from scratch this often (in picks per block count) to stop rounding drift.
_RESYNC_EVERY = 1


class CoverageOptions(SamplerOptions):
    greedy_fraction: float = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        description="Share of the budget picked greedily first (largest facility-location gain: the centres of the densest uncovered regions). The rest is sampled. 1 = plain lazy-greedy facility location, 0 = all sampled.",
    )
    gamma: float = Field(
        default=2.0,
        ge=0.0,
        le=64.0,
        description="Sampled picks are drawn with probability proportional to gain^gamma, where gain is how much the row would improve coverage of its neighbourhood given the rows already picked. 0 = uniform among rows that are not near-duplicates of a pick; large = close to greedy.",
    )
    n_neighbors: int | None = Field(
        default=None,
        ge=2,
        le=1000,
        description="Neighbours per row in the k-NN similarity graph that defines coverage. Empty: round(neighbors_per_pick * rows / budget), clamped to 20..100.",
    )
    neighbors_per_pick: float = Field(
        default=2.5,
        gt=0.0,
        le=100.0,
        description="When n_neighbors is empty: neighbours per row as a multiple of the rows each pick stands for (rows / budget). Smaller makes coverage more local.",
    )
    exact_graph_rows: int = Field(
        default=30_000,
        ge=0,
        description="Up to this many rows the k-NN graph is exact (the pipeline's FAISS index, or a flat one); above, it is built inside k-means cells of about 1,000 rows and their 2 nearest cells (approximate, about N x 3,000 x D work instead of N^2 x D).",
    )
    near_duplicate_similarity: float = Field(
        default=0.95,
        gt=0.0,
        le=1.0,
        description="A row at cosine similarity above this to a picked row is not picked while other rows remain (the evaluation's near-duplicate threshold). 1 turns the exclusion off.",
    )


def default_neighbors(n_rows: int, budget: int, per_pick: float = 2.5) -> int:
    """`per_pick` x the rows one pick stands for, clamped to 20..100 and to the number of rows."""
    return int(max(1, min(n_rows, max(20, min(100, round(per_pick * n_rows / max(budget, 1)))))))


class _GainState:
    """Facility-location gains on a directed k-NN graph, kept exact under picks, with O(sqrt N) sampling.

    Row i is served by the rows in its k-NN list (itself included) with similarity max(sim, 0).
    gain[c] = sum over rows i that c serves of max(0, sim(i, c) - best[i]), best[i] being row i's
    highest similarity to a picked row. A pick raises best[] on the rows it serves; the gains of
    every candidate serving those rows drop by the exact difference. Sampling weights p = gain^gamma
    of eligible rows live in blocks of about sqrt(N) rows with running block sums.
    """

    def __init__(self, sims: np.ndarray, nbrs: np.ndarray, gamma: float):
        n, k = nbrs.shape
        self.n, self.gamma = n, float(gamma)
        valid = nbrs >= 0
        self.nbrs = np.where(valid, nbrs, 0)
        self.w = np.where(valid, np.maximum(sims, 0.0), 0.0).astype(np.float32)
        server = self.nbrs.ravel()[valid.ravel()]
        served = np.repeat(np.arange(n, dtype=self.nbrs.dtype), k)[valid.ravel()]
        weight = self.w.ravel()[valid.ravel()]
        order = np.argsort(server, kind="stable")
        self.served, self.weight = served[order], weight[order]
        self.indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(server, minlength=n), out=self.indptr[1:])
        self.gain = np.bincount(server, weights=weight, minlength=n).astype(np.float64)
        self.best = np.zeros(n, dtype=np.float64)
        self.eligible = np.ones(n, dtype=bool)
        self.bs = max(1, int(math.isqrt(n)))
        self.nb = -(-n // self.bs)
        self.p = np.zeros(self.nb * self.bs, dtype=np.float64)
        self.p[:n] = self._weights(np.arange(n))
        self.resync()
        self.picks_since_sync = 0

    def _weights(self, rows: np.ndarray) -> np.ndarray:
        g = np.maximum(self.gain[rows], 0.0)
        if self.gamma == 0.0:
            p = np.ones(len(rows))
        else:
            p = g**self.gamma
        return np.where(self.eligible[rows], p, 0.0)

    def resync(self) -> None:
        self.blocksum = self.p.reshape(self.nb, self.bs).sum(axis=1)

    def _refresh(self, rows: np.ndarray) -> None:
        rows = np.unique(rows)
        new = self._weights(rows)
        diff = new - self.p[rows]
        self.p[rows] = new
        np.add.at(self.blocksum, rows // self.bs, diff)

    def exclude(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows)
        if len(rows):
            self.eligible[rows] = False
            self._refresh(rows)

    def pick(self, j: int) -> float:
        """Add row j to the selection; returns its gain at that moment."""
        gain = float(max(self.gain[j], 0.0))
        lo, hi = self.indptr[j], self.indptr[j + 1]
        who, wj = self.served[lo:hi], self.weight[lo:hi].astype(np.float64)
        old = self.best[who]
        up = wj > old
        who, old, new = who[up], old[up], wj[up]
        self.eligible[j] = False
        touched = [np.array([j])]
        if len(who):
            w = self.w[who].astype(np.float64)
            delta = np.maximum(w - old[:, None], 0.0) - np.maximum(w - new[:, None], 0.0)
            cand = self.nbrs[who].ravel()
            np.subtract.at(self.gain, cand, delta.ravel())
            self.best[who] = new
            touched.append(cand)
        self._refresh(np.concatenate(touched))
        self.picks_since_sync += 1
        if self.picks_since_sync >= self.nb * _RESYNC_EVERY:
            self.resync()
            self.picks_since_sync = 0
        return gain

    def sample(self, rng: np.random.Generator) -> int | None:
        """A row drawn with probability p / sum(p); None when every weight is 0."""
        for _ in range(4):
            total = float(self.blocksum.sum())
            if not total > 1e-300:
                self.resync()
                if not float(self.blocksum.sum()) > 1e-300:
                    return None
                continue
            cum = np.cumsum(np.maximum(self.blocksum, 0.0))
            b = int(min(np.searchsorted(cum, rng.random() * cum[-1], side="right"), self.nb - 1))
            inner = self.p[b * self.bs : (b + 1) * self.bs]
            s = float(inner.sum())
            if not s > 0:
                self.blocksum[b] = 0.0
                continue
            icum = np.cumsum(inner)
            i = int(np.searchsorted(icum, rng.random() * icum[-1], side="right"))
            i = min(i, len(inner) - 1)
            while inner[i] <= 0:  # rounding at the end of the block: step back to a positive weight
                i -= 1
            return b * self.bs + i
        self.resync()
        return None


class CoverageSampler(Sampler):
    """Gain-sampled facility location: coverage of the embedding space that still keeps rare regions.

    Facility location F(S) = sum_i max_{j in S} sim(i, j) over a k-NN graph is what coverage distance
    measures (it equals N minus the summed distance of every row to its nearest pick), and its greedy
    maximiser covers best. But greedy picks are deterministic centres: a template or topic that is a
    minority everywhere is never a centre, so greedy loses the rare regions random keeps, and it
    spends picks where coverage is hard (diffuse regions) rather than where rows are. Here:

    1. `greedy_fraction` of the budget is picked by lazy greedy (the biggest uncovered regions);
    2. every further pick is sampled with probability proportional to gain^gamma: a random member of
       wherever uncovered mass remains, so dense regions keep rows in proportion to their mass, as
       random does, while covered neighbourhoods (and so near-duplicates) lose almost all their weight;
    3. rows at cosine > `near_duplicate_similarity` to a pick are excluded while other rows remain
       (checked through the graph; rows whose whole k-NN list is above the threshold are also
       checked against every pick).

    Gains are kept exact under picks on the graph (only the neighbourhoods a pick touches change),
    and sampling goes through block sums of about sqrt(N) rows, so a pick costs O(k^2 + sqrt N).
    Quality, labels and groups are not used. Rows come in pick order with their gain as score.
    """

    name = "coverage"
    description = "Recommended default. Facility-location coverage on a k-NN graph: the first picks greedy, the rest sampled in proportion to coverage gain^gamma, near-duplicates excluded. Covers like facility location and keeps rare regions like random."
    Options = CoverageOptions

    def _select(self, data: SelectionInput, budget: int, seed: int) -> Selection:
        o = self.options
        x = data.embeddings
        n = data.n_rows
        k = o.n_neighbors if o.n_neighbors is not None else default_neighbors(n, budget, o.neighbors_per_pick)
        k = int(min(k, n))
        rng = np.random.default_rng(int(seed))
        exact = n <= o.exact_graph_rows
        sims, nbrs = knn_graph(x, k, data.knn) if exact else partitioned_knn_graph(x, k, seed)
        state = _GainState(sims, nbrs, o.gamma)
        tau = float(o.near_duplicate_similarity)
        check_dups = tau < 1.0
        # Rows whose entire k-NN list is above the threshold sit in a near-duplicate blob bigger than
        # the graph sees; for them only, a pick is checked against every earlier pick.
        blob = check_dups & (sims[:, -1] > tau) if k > 1 else np.zeros(n, dtype=bool)
        picked_index = None
        if blob.any():
            import faiss

            picked_index = faiss.IndexFlatIP(x.shape[1])

        rows: list[int] = []
        scores: list[float] = []
        n_greedy = int(round(o.greedy_fraction * budget))
        tie = rng.random(n)
        heap = [(-float(state.gain[j]), float(tie[j]), j) for j in range(n)] if n_greedy else []
        heapq.heapify(heap)
        excluded = 0
        rejected_blob = 0

        def accept(j: int) -> None:
            nonlocal excluded
            scores.append(state.pick(j))
            rows.append(j)
            if picked_index is not None:
                picked_index.add(np.ascontiguousarray(x[j : j + 1]))
            if check_dups:
                near = nbrs[j][(nbrs[j] >= 0) & (sims[j] > tau)]
                lo, hi = state.indptr[j], state.indptr[j + 1]
                near = np.concatenate([near, state.served[lo:hi][state.weight[lo:hi] > tau]]).astype(np.int64)
                near = near[state.eligible[near]]
                excluded += len(near)
                state.exclude(near)

        def blob_duplicate(j: int) -> bool:
            if picked_index is None or not blob[j] or picked_index.ntotal == 0:
                return False
            s, _ = picked_index.search(np.ascontiguousarray(x[j : j + 1]), 1)
            return bool(s[0, 0] > tau)

        # 1. Lazy greedy: gains only fall, so a popped stale entry is re-queued with its current gain.
        while len(rows) < n_greedy and heap:
            neg, t, j = heapq.heappop(heap)
            if not state.eligible[j]:
                continue
            g = float(state.gain[j])
            if -neg > g + 1e-12 * max(1.0, abs(g)):
                heapq.heappush(heap, (-g, t, j))
                continue
            if blob_duplicate(j):
                rejected_blob += 1
                state.exclude(np.array([j]))
                continue
            accept(j)
        n_greedy = len(rows)
        del heap

        # 2. Sampling in proportion to gain^gamma among eligible rows.
        while len(rows) < budget:
            j = state.sample(rng)
            if j is None:
                break
            if blob_duplicate(j):
                rejected_blob += 1
                state.exclude(np.array([j]))
                continue
            accept(j)
        n_sampled = len(rows) - n_greedy

        # 3. Nothing left with positive weight: eligible rows at random, then (only if the budget
        # demands it) rows near-duplicating a pick, at random.
        n_filled = budget - len(rows)
        if n_filled:
            taken = np.zeros(n, dtype=bool)
            taken[rows] = True
            order = rng.permutation(n)
            order = order[~taken[order]]
            order = order[np.argsort(~state.eligible[order], kind="stable")][:n_filled]
            rows.extend(int(r) for r in order)
            scores.extend(float(max(state.gain[r], 0.0)) for r in order)

        objective = float(state.best.sum())
        return Selection(
            rows=np.asarray(rows, dtype=np.int64),
            scores=np.asarray(scores, dtype=np.float64),
            weights=np.ones(budget),
            diagnostics={
                "method": "gain-sampled facility location",
                "n_neighbors": k,
                "graph": "exact" if exact else "k-means cells (approximate)",
                "greedy_picks": n_greedy,
                "sampled_picks": n_sampled,
                "filled_picks": int(n_filled),
                "gamma": o.gamma,
                "near_duplicate_similarity": tau,
                "near_duplicates_excluded": int(excluded + rejected_blob),
                "facility_location_objective_before_fill": objective,
                "mean_similarity_to_nearest_pick_in_graph": objective / n,
            },
        )

"""FAISS k-means shared by the samplers (kMQ, tag-free MIG labels, coresets, pseudo-labels) and the report."""

import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True)
class Clustering:
    centroids: np.ndarray  # (k, D) float32
    assignments: np.ndarray  # (N,) int64 cluster of each row
    distances: np.ndarray  # (N,) float32 squared L2 distance of each row to its centroid
    inertia: float  # sum of squared distances

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def sizes(self) -> np.ndarray:
        return np.bincount(self.assignments, minlength=self.k)


_faiss_threads_lock = threading.Lock()
_faiss_single_users = 0
_faiss_saved_threads = 0


@contextmanager
def single_threaded_faiss():
    """FAISS k-means training on one OpenMP thread while inside; the previous setting comes back after the last user.

    FAISS's multi-threaded training gives slightly different centroids for 1 and 2 threads (measured: 0.006
    apart after 20 iterations on 3,000 rows, k = 30), so a selection would depend on the machine's core count.
    """
    import faiss

    global _faiss_single_users, _faiss_saved_threads
    with _faiss_threads_lock:
        if _faiss_single_users == 0:
            _faiss_saved_threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
        _faiss_single_users += 1
    try:
        yield
    finally:
        with _faiss_threads_lock:
            _faiss_single_users -= 1
            if _faiss_single_users == 0:
                faiss.omp_set_num_threads(_faiss_saved_threads)


def kmeans(
    embeddings: np.ndarray,
    k: int,
    seed: int,
    *, n_iter: int = 20,
    max_points_per_centroid: int = 256,
) -> Clustering:
    """Lloyd k-means with FAISS; deterministic for a seed. Trains on at most k*max_points_per_centroid rows."""
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, d = x.shape
    if not 1 <= k <= n:
        raise ConfigError(f"Number of clusters k={k} must be between 1 and the number of rows ({n}).")
    if k == 1:
        centroids = x.mean(axis=0, keepdims=True)
    else:
        km = faiss.Kmeans(
            d,
            int(k),
            niter=int(n_iter),
            seed=int(seed) % (2**31 - 1),
            verbose=False,
            max_points_per_centroid=int(max_points_per_centroid),
            min_points_per_centroid=1,
        )
        if n > k * max_points_per_centroid:
            # Subsample ourselves with our own seeded generator so the training set does not depend on FAISS internals.
            rng = np.random.default_rng(seed)
            train = x[np.sort(rng.choice(n, k * max_points_per_centroid, replace=False))]
        else:
            train = x
        with single_threaded_faiss():
            km.train(train)
        centroids = km.centroids.copy()
    distances, assignments = assign(x, centroids)
    return Clustering(
        centroids=centroids.astype(np.float32),
        assignments=assignments,
        distances=distances,
        inertia=float(distances.sum(dtype=np.float64)),
    )


def assign(embeddings: np.ndarray, centroids: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (squared L2) of every row, in chunks to bound memory."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    n = embeddings.shape[0]
    labels = np.empty(n, dtype=np.int64)
    dists = np.empty(n, dtype=np.float32)
    for start in range(0, n, chunk):
        block = np.ascontiguousarray(embeddings[start : start + chunk], dtype=np.float32)
        d, i = index.search(block, 1)
        labels[start : start + len(block)] = i[:, 0]
        dists[start : start + len(block)] = np.maximum(d[:, 0], 0.0)
    return dists, labels

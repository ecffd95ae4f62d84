import numpy as np
import pytest

from selectflow.tasks.samplers import SelectionInput


def clustered_embeddings(n: int, d: int, n_clusters: int, seed: int) -> np.ndarray:
    """Unit-norm points around random unit centres: a small stand-in for sentence embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, n_clusters, size=n)] + 0.35 * rng.normal(size=(n, d)) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


@pytest.fixture(scope="session")
def small_input() -> SelectionInput:
    """300 rows, 16 dims, 6 clusters, with quality, labels and groups, as every sampler may see them."""
    rng = np.random.default_rng(7)
    x = clustered_embeddings(300, 16, 6, seed=3)
    labels = [tuple(sorted({f"tag{int(t)}" for t in rng.integers(0, 12, size=rng.integers(1, 4))})) for _ in range(300)]
    return SelectionInput(
        embeddings=x,
        quality=rng.uniform(0.5, 5.0, size=300),
        labels=labels,
        groups=np.array([f"g{i % 4}" for i in range(300)]),
        ids=np.array([f"row-{i}" for i in range(300)]),
        target_embeddings=x[:10].copy(),
    )


@pytest.fixture
def faiss_one_thread():
    """Many tiny FAISS calls: OpenMP wake-ups dominate on a loaded 2-core box (10x slower), so use one thread."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)

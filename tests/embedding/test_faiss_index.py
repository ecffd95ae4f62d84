import numpy as np
import pytest

from selectflow.tasks.embedding.faiss_index import build_index, choose_params, load_index, save_index, searcher
from tests.samplers.conftest import clustered_embeddings


def test_auto_choice_by_size():
    assert choose_params(5_000).kind == "flat"
    big = choose_params(2_000_000)
    assert big.kind == "ivf" and big.nlist > 1 and big.nprobe >= 1


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_every_row_finds_itself_and_survives_save_load(tmp_path, kind):
    x = clustered_embeddings(3000, 32, 10, seed=1)
    params = choose_params(len(x), kind)
    if kind == "ivf":
        params = type(params)("ivf", nlist=16, nprobe=16)
    index = build_index(x, params, seed=0)
    path = save_index(index, params, tmp_path / f"{kind}.faiss")
    loaded, meta = load_index(path)
    assert meta["kind"] == kind and meta["ntotal"] == len(x)
    sims, rows = searcher(loaded)(x[:200], 1)
    assert (rows[:, 0] == np.arange(200)).mean() > 0.97
    np.testing.assert_allclose(sims[rows[:, 0] == np.arange(200), 0], 1.0, atol=1e-4)


def test_flat_search_is_exact_cosine():
    x = clustered_embeddings(500, 16, 5, seed=2)
    params = choose_params(len(x), "flat")
    sims, rows = searcher(build_index(x, params))(x[:5], 3)
    brute = x[:5] @ x.T
    np.testing.assert_allclose(sims, -np.sort(-brute, axis=1)[:, :3], atol=1e-5)

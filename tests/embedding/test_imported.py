"""Bring-your-own embeddings: every mismatch is a clear error, good vectors are used as given."""

import numpy as np
import polars as pl
import pytest

from selectflow.tasks.embedding.imported import import_embeddings
from selectflow.tasks.errors import InputError


def unit(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def corpus(tmp_path):
    vecs = unit(5, 4)
    path = tmp_path / "c.parquet"
    pl.DataFrame({"text": list("abcde"), "emb": vecs.tolist()}).write_parquet(path)
    return path, vecs


def test_column_and_npy_give_the_usable_rows_in_order(tmp_path, corpus):
    path, vecs = corpus
    rows = np.array([0, 2, 4])
    assert import_embeddings("emb", str(path), rows, 5, matrix_path=tmp_path / "a.npy") == 4
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), vecs[rows], atol=1e-6)
    np.save(tmp_path / "e.npy", vecs)
    import_embeddings(str(tmp_path / "e.npy"), str(path), rows, 5, matrix_path=tmp_path / "b.npy")
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), vecs[rows], atol=1e-6)


def test_row_count_mismatch(tmp_path, corpus):
    path, vecs = corpus
    np.save(tmp_path / "e.npy", vecs[:4])
    with pytest.raises(InputError, match="has 4 rows but the corpus has 5"):
        import_embeddings(str(tmp_path / "e.npy"), str(path), np.arange(5), 5, matrix_path=tmp_path / "m.npy")


def test_nan_names_the_row(tmp_path, corpus):
    path, vecs = corpus
    bad = vecs.copy()
    bad[3, 1] = np.nan
    np.save(tmp_path / "e.npy", bad)
    with pytest.raises(InputError, match="input row 3 has NaN"):
        import_embeddings(str(tmp_path / "e.npy"), str(path), np.arange(5), 5, matrix_path=tmp_path / "m.npy")
    assert not (tmp_path / "m.npy").exists()


def test_not_unit_norm_needs_the_flag(tmp_path, corpus):
    path, vecs = corpus
    np.save(tmp_path / "e.npy", vecs * 3)
    with pytest.raises(InputError, match="not unit-norm .*--normalize-embeddings"):
        import_embeddings(str(tmp_path / "e.npy"), str(path), np.arange(5), 5, matrix_path=tmp_path / "m.npy")
    import_embeddings(str(tmp_path / "e.npy"), str(path), np.arange(5), 5, matrix_path=tmp_path / "m.npy", normalize=True)
    np.testing.assert_allclose(np.load(tmp_path / "m.npy"), vecs, atol=1e-6)


def test_ragged_column_and_wrong_type(tmp_path):
    path = tmp_path / "r.parquet"
    pl.DataFrame({"text": ["a", "b"], "emb": [[1.0, 0.0], [1.0, 0.0, 0.0]], "s": ["x", "y"]}).write_parquet(path)
    with pytest.raises(InputError, match="different lengths"):
        import_embeddings("emb", str(path), np.arange(2), 2, matrix_path=tmp_path / "m.npy")
    with pytest.raises(InputError, match="must be a list of floats"):
        import_embeddings("s", str(path), np.arange(2), 2, matrix_path=tmp_path / "m.npy")
    with pytest.raises(InputError, match="column 'nope' does not exist"):
        import_embeddings("nope", str(path), np.arange(2), 2, matrix_path=tmp_path / "m.npy")


def test_pickled_npy_is_refused(tmp_path, corpus):
    path, _ = corpus
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 5, dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="not a plain numeric"):
        import_embeddings(str(tmp_path / "obj.npy"), str(path), np.arange(5), 5, matrix_path=tmp_path / "m.npy")

"""The embedding store with the real packaged encoder: reuse, partial re-encoding, stored shards."""

import numpy as np
import polars as pl

from selectflow.tasks.embedding.encode_units import embed_prepared
from selectflow.tasks.embedding.store import EmbeddingStore
from selectflow.tasks.io.corpus_reader import CorpusSpec, prepare_corpus


def prepare(tmp_path, df, name):
    path = tmp_path / f"{name}.parquet"
    df.write_parquet(path)
    return prepare_corpus(CorpusSpec(str(path), id_column="id"), tmp_path / f"work-{name}")


def test_second_run_encodes_nothing_and_one_changed_row_reencodes_one(tmp_path, bundled_slice, encoder):
    model, info = encoder
    df = pl.read_parquet(bundled_slice).head(24)
    store = tmp_path / "store"
    first = embed_prepared(prepare(tmp_path, df, "v1").prepared_path, model, info, store_root=store, matrix_path=tmp_path / "m1.npy", shard_rows=8)
    assert first.encoded == 24 and first.reused == 0
    m1 = np.load(tmp_path / "m1.npy")
    assert m1.shape == (24, info.dim) and m1.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(m1, axis=1), 1.0, atol=1e-5)

    second = embed_prepared(prepare(tmp_path, df, "v1b").prepared_path, model, info, store_root=store, matrix_path=tmp_path / "m2.npy")
    assert second.encoded == 0 and second.reused == 24
    np.testing.assert_array_equal(np.load(tmp_path / "m2.npy"), m1)

    changed = df.with_columns(pl.when(pl.col("id") == df["id"][5]).then(pl.lit("A completely new prompt.")).otherwise(pl.col("prompt")).alias("prompt"))
    third = embed_prepared(prepare(tmp_path, changed, "v2").prepared_path, model, info, store_root=store, matrix_path=tmp_path / "m3.npy")
    assert third.encoded == 1 and third.reused == 23
    m3 = np.load(tmp_path / "m3.npy")
    unchanged = np.arange(24) != 5
    np.testing.assert_array_equal(m3[unchanged], m1[unchanged])
    assert float(m3[5] @ m1[5]) < 0.99


def test_matches_a_bare_encode(tmp_path, bundled_slice, encoder):
    model, info = encoder
    df = pl.read_parquet(bundled_slice).head(12)
    pc = prepare(tmp_path, df, "bare")
    embed_prepared(pc.prepared_path, model, info, store_root=tmp_path / "store", matrix_path=tmp_path / "m.npy")
    texts = pl.read_parquet(pc.prepared_path)["text"].to_list()
    bare = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(np.load(tmp_path / "m.npy"), bare, atol=1e-4)


def test_counts_truncated_texts(tmp_path, encoder):
    model, info = encoder
    long_text = " ".join(["word"] * (info.max_seq_length + 50))
    df = pl.DataFrame({"id": ["short", "long"], "text": ["a short text", long_text]})
    result = embed_prepared(prepare(tmp_path, df, "long").prepared_path, model, info, store_root=tmp_path / "store", matrix_path=tmp_path / "m.npy")
    assert result.truncated == 1


def test_incomplete_shard_is_ignored(tmp_path):
    store = EmbeddingStore(tmp_path, "k", 4)
    digests = np.array([b"a" * 16, b"b" * 16], dtype="S16")
    name = store.add_shard(digests, np.eye(2, 4, dtype=np.float32), np.array([3, 4]))
    # A crash after the embeddings but before the hashes file leaves a shard that must not count.
    np.save(store.dir / "shard-00ff.emb.npy", np.ones((1, 4), dtype=np.float32))
    assert store.shards() == [name]
    assert list(store.missing(np.array([b"a" * 16, b"c" * 16], dtype="S16"))) == [1]


def test_token_batches_cover_every_row_once_within_both_limits():
    from selectflow.tasks.embedding.encode_units import token_batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=1000)
    for batch_size, budget in [(64, 1024), (8, None), (64, 100)]:
        batches = token_batches(lengths, batch_size, budget)
        rows = np.concatenate(batches)
        assert sorted(rows.tolist()) == list(range(len(lengths)))
        for b in batches:
            assert len(b) <= batch_size
            if budget is not None and len(b) > 1:
                assert len(b) * lengths[b].max() <= budget
        # Longest first, so each batch pads to its own first row and padding stays small.
        assert list(lengths[rows]) == sorted(lengths, reverse=True)


def test_token_budget_batching_gives_the_bare_encode_vectors_in_input_order(encoder, bundled_slice):
    from selectflow.tasks.embedding.encode_units import encode_texts

    model, _ = encoder
    df = pl.read_parquet(bundled_slice).head(40)
    texts = (df["prompt"] + "\n\n" + df["completion"]).to_list()
    bare = model.encode(texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)
    for budget in (64, 1024, None):
        vectors, lengths = encode_texts(model, texts, 16, budget)
        np.testing.assert_allclose(vectors, bare, atol=2e-5)
        assert lengths.max() <= model.max_seq_length and (lengths > 0).all()

"""The ONNX Runtime encoder backends against PyTorch: same vectors, a cached offline export, separate store keys."""

import shutil

import numpy as np
import polars as pl
import pytest

pytest.importorskip("onnxruntime", reason="the ONNX backends need onnxruntime (pip install onnxruntime onnx)")
pytest.importorskip("onnx", reason="the int8 export needs onnx (pip install onnxruntime onnx)")

from selectflow.tasks.embedding import encoder as encoder_module  # noqa: E402
from selectflow.tasks.embedding.encode_units import embed_prepared, encoding_settings, open_store  # noqa: E402
from selectflow.tasks.embedding.encoder import load_encoder  # noqa: E402
from selectflow.tasks.errors import ConfigError  # noqa: E402
from selectflow.tasks.io.corpus_reader import CorpusSpec, prepare_corpus  # noqa: E402

N_TEXTS = 32  # real corpus rows, long and short: enough for a stable mean on 2 cores


@pytest.fixture(scope="module")
def export_root(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-exports")


@pytest.fixture(scope="module")
def texts(bundled_slice):
    df = pl.read_parquet(bundled_slice)
    rows = (df["prompt"] + "\n\n" + df["completion"]).to_list()
    return rows[: N_TEXTS // 2] + [r[:80] for r in rows[N_TEXTS // 2 : N_TEXTS]]


@pytest.fixture(scope="module")
def torch_vectors(encoder, texts):
    model, _ = encoder
    return model.encode(texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)


@pytest.fixture(scope="module")
def onnx_encoders(export_root):
    return {b: load_encoder(None, "auto", b, export_root) for b in ("onnx", "onnx-int8")}


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_fp32_onnx_gives_the_torch_vectors(onnx_encoders, texts, torch_vectors):
    model, info = onnx_encoders["onnx"]
    assert info.backend == "onnx" and info.device == "cpu" and len(info.backend_hash) == 32
    vectors = model.encode(texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)
    assert vectors.shape == torch_vectors.shape and vectors.dtype == np.float32
    cos = _cosines(vectors, torch_vectors)
    assert cos.mean() > 0.99 and cos.min() > 0.999, cos
    np.testing.assert_allclose(vectors, torch_vectors, atol=1e-4)


def test_int8_onnx_stays_close_to_torch_but_is_not_identical(onnx_encoders, texts, torch_vectors):
    model, info = onnx_encoders["onnx-int8"]
    vectors = model.encode(texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)
    cos = _cosines(vectors, torch_vectors)
    print(f"int8 vs torch cosine: mean {cos.mean():.4f}, min {cos.min():.4f}")  # measured 0.992 / 0.980
    assert cos.mean() > 0.98 and cos.min() > 0.95, cos
    assert not np.allclose(vectors, torch_vectors, atol=1e-4)  # it really is the quantized model
    # Neighbourhoods survive quantization: each row's nearest other row mostly stays the same.
    def nearest(m):
        sims = m @ m.T
        np.fill_diagonal(sims, -np.inf)
        return sims.argmax(axis=1)

    assert (nearest(vectors) == nearest(torch_vectors)).mean() >= 0.8


def test_export_is_made_once_in_the_cache_and_reused(onnx_encoders, export_root, monkeypatch):
    _, info = onnx_encoders["onnx-int8"]
    version = encoder_module.EXPORT_VERSION
    int8_folder = f"{info.weights_hash}-onnx-int8-v{version}"
    # No temporary folder left; an export recipe's version is part of the name, so older exports are never reused.
    assert {p.name for p in export_root.iterdir()} == {f"{info.weights_hash}-onnx-v{version}", int8_folder}
    files = {p.name: p.stat().st_mtime_ns for p in (export_root / int8_folder).iterdir()}
    assert set(files) == {"model.onnx", "export.json"}

    def no_export(*args, **kwargs):
        raise AssertionError("exported again instead of reusing the cached export")

    monkeypatch.setattr(encoder_module, "_export_fp32", no_export)
    monkeypatch.setattr(encoder_module, "_quantize_int8", no_export)
    _, again = load_encoder(None, "cpu", "onnx-int8", export_root)
    assert again.backend_hash == info.backend_hash
    assert {p.name: p.stat().st_mtime_ns for p in (export_root / int8_folder).iterdir()} == files


def test_a_failed_export_leaves_nothing_behind(onnx_encoders, export_root, tmp_path, monkeypatch):
    fp32 = f"{onnx_encoders['onnx'][1].weights_hash}-onnx-v{encoder_module.EXPORT_VERSION}"
    shutil.copytree(export_root / fp32, tmp_path / fp32)  # start from a cached fp32 export, as a real run would

    def broken(source, out):
        out.write_bytes(b"half a model")
        raise RuntimeError("killed mid-export")

    monkeypatch.setattr(encoder_module, "_quantize_int8", broken)
    with pytest.raises(RuntimeError, match="killed mid-export"):
        load_encoder(None, "cpu", "onnx-int8", tmp_path)
    # The fp32 export it started from is complete; the int8 one does not exist, not even half-made.
    assert sorted(p.name for p in tmp_path.iterdir()) == [fp32]


def test_store_keys_differ_by_backend_and_stored_vectors_never_mix(onnx_encoders, encoder, tmp_path):
    infos = {"torch": encoder[1], **{b: i for b, (_, i) in onnx_encoders.items()}}
    keys = {b: open_store(tmp_path / "store", i).dir.name for b, i in infos.items()}
    assert len(set(keys.values())) == 3, keys
    assert {encoding_settings(i)["backend"] for i in infos.values()} == {"torch", "onnx", "onnx-int8"}

    corpus = tmp_path / "c.parquet"
    pl.DataFrame({"id": ["a", "b", "c"], "text": ["one text", "another text", "a third one"]}).write_parquet(corpus)
    prepared = prepare_corpus(CorpusSpec(str(corpus), id_column="id"), tmp_path / "prep").prepared_path
    model, info = onnx_encoders["onnx-int8"]
    first = embed_prepared(prepared, model, info, store_root=tmp_path / "store", matrix_path=tmp_path / "m-int8.npy")
    assert first.encoded == 3
    # Same texts, same store root, another backend: everything is encoded again, nothing is reused.
    torch_model, torch_info = encoder
    second = embed_prepared(prepared, torch_model, torch_info, store_root=tmp_path / "store", matrix_path=tmp_path / "m-torch.npy")
    assert second.encoded == 3 and second.reused == 0
    assert not np.array_equal(np.load(tmp_path / "m-int8.npy"), np.load(tmp_path / "m-torch.npy"))


@pytest.mark.parametrize("backend,device,message", [
    ("onnx", "cuda", "runs on the CPU"),
    ("tensorrt", "cpu", "Unknown encoder backend 'tensorrt'"),
])
def test_bad_backend_choices_are_config_errors(backend, device, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        load_encoder(None, device, backend, tmp_path)


def test_export_is_fused_and_a_fused_graph_that_disagrees_is_not_kept(onnx_encoders, export_root, tmp_path, monkeypatch):
    import json

    import onnx
    from onnx import numpy_helper

    meta = json.loads((export_root / f"{onnx_encoders['onnx'][1].weights_hash}-onnx-v{encoder_module.EXPORT_VERSION}"
                       / "export.json").read_text())
    assert meta["fusion"].get("Attention") == 6  # the default encoder's six attention blocks are fused

    def wrong_fusion(source, out, config):  # a "fused" graph with one weight changed: it computes something else
        model = onnx.load(str(source))
        init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
        onnx.save(model, str(out))
        return {"Attention": 6}

    monkeypatch.setattr(encoder_module, "_fuse", wrong_fusion)
    model, info = load_encoder(None, "cpu", "onnx", tmp_path)
    folder = tmp_path / f"{info.weights_hash}-onnx-v{encoder_module.EXPORT_VERSION}"
    assert json.loads((folder / "export.json").read_text())["fusion"] == {}  # the plain export was kept
    assert {p.name for p in folder.iterdir()} == {"model.onnx", "export.json"}
    vectors = model.encode(["a check that the kept export is the right one"], normalize_embeddings=True)
    reference = onnx_encoders["onnx"][0].encode(["a check that the kept export is the right one"], normalize_embeddings=True)
    np.testing.assert_allclose(vectors, reference, atol=1e-4)

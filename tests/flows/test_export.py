"""`selectflow embed --export`: ids and embeddings as Parquet, equal to the matrix, reusable by --embeddings."""

import json
import re

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectflow.flows.cli import main
# Imported at collection: Prefect binds its console log handler to the stderr of the moment, which
# must be pytest's own stream, not one test's capsys buffer that is closed when that test ends.
from selectflow.flows.pipeline import run_embed_corpus  # noqa: E402, F401

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _embed(capsys, *args) -> tuple[str, np.ndarray]:
    """Run `selectflow embed` and return its output and the embedding matrix it reports."""
    assert main(["embed", *args, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    matrix_path = re.search(r"-> (\S+\.npy)", out).group(1)
    return out, np.load(matrix_path)


def test_export_holds_the_ids_and_the_matrix_in_corpus_order(tmp_path, bundled_slice, capsys):
    target = tmp_path / "sub" / "emb.parquet"
    out, matrix = _embed(capsys, str(bundled_slice), "--id", "id", "--export", str(target))
    assert f"exported 80 ids and embeddings -> {target}" in out

    table = pq.read_table(target)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), matrix.shape[1])
    assert table.column_names == ["id", "embedding"]
    assert table.column("id").to_pylist() == pl.read_parquet(bundled_slice)["id"].to_list()
    vectors = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(table.num_rows, -1)
    np.testing.assert_array_equal(vectors, matrix)
    meta = json.loads(table.schema.metadata[b"selectflow"])
    assert meta["encoder"]["backend"] == "torch" and len(meta["encoder"]["weights_hash"]) == 32
    assert not [p for p in target.parent.iterdir() if p.name != "emb.parquet"]  # no temporary file left

    # Joined back onto the corpus, the exported column is accepted by --embeddings and gives the same matrix.
    joined = tmp_path / "with_embeddings.parquet"
    pl.read_parquet(bundled_slice).join(pl.read_parquet(target), on="id", how="left", maintain_order="left").write_parquet(joined)
    _, reused = _embed(capsys, str(joined), "--id", "id", "--embeddings", "embedding")
    np.testing.assert_array_equal(reused, matrix)


def test_export_of_an_onnx_int8_run_records_its_backend(tmp_path, bundled_slice, capsys):
    pytest.importorskip("onnxruntime", reason="the ONNX backends need onnxruntime (pip install onnxruntime onnx)")
    small = tmp_path / "small.parquet"
    pl.read_parquet(bundled_slice).head(12).write_parquet(small)
    _, torch_matrix = _embed(capsys, str(small), "--id", "id")
    _, int8_matrix = _embed(capsys, str(small), "--id", "id", "--backend", "onnx-int8", "--export", str(tmp_path / "e.parquet"))
    table = pq.read_table(tmp_path / "e.parquet")
    meta = json.loads(table.schema.metadata[b"selectflow"])
    assert meta["encoder"]["backend"] == "onnx-int8" and meta["encoder"]["backend_hash"]
    vectors = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(table.num_rows, -1)
    np.testing.assert_array_equal(vectors, int8_matrix)
    # The int8 run encoded its own vectors (a store of its own), close to but not the torch ones.
    assert not np.array_equal(int8_matrix, torch_matrix)
    assert (int8_matrix * torch_matrix).sum(axis=1).mean() > 0.98


def test_export_to_a_non_parquet_name_is_refused_before_any_work(tmp_path, bundled_slice, capsys):
    code = main(["embed", str(bundled_slice), "--export", str(tmp_path / "emb.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("selectflow: error: --export") and ".parquet" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "emb.csv").exists()

"""Scheduled runs on a growing folder of Parquet shards: only new rows are embedded, and the report says what changed."""

import json

import polars as pl
import pytest

from selectflow.flows.params import CorpusParams, EncoderParams, OutputParams, SelectionParams

pytestmark = pytest.mark.usefixtures("prefect_harness")


def run(folder, out, cache):
    from selectflow.flows.pipeline import select_subset

    return select_subset(
        CorpusParams(path=str(folder), id_column="id", group_column="source"),
        EncoderParams(device="cpu", batch_size=32),
        SelectionParams(sampler="kmeans", budget=0.2, seed=1),
        OutputParams(out_dir=str(out), cache_dir=str(cache)),
    )


def test_growing_folder(tmp_path, bundled_slice):
    df = pl.read_parquet(bundled_slice)
    folder, out, cache = tmp_path / "shards", tmp_path / "out", tmp_path / "cache"
    folder.mkdir()
    df.head(40).write_parquet(folder / "part-0.parquet")
    first = run(folder, out, cache)
    assert first["embedded"].encoded == 40
    first_ids = pl.read_parquet(out / "selected.parquet")["id"].to_list()

    # Unchanged input: nothing is encoded and the selection does not change.
    same = run(folder, out, cache)
    assert same["embedded"].encoded == 0
    assert pl.read_parquet(out / "selected.parquet")["id"].to_list() == first_ids
    unchanged = json.loads((out / "report.json").read_text())["changes_since_previous"]
    assert unchanged["added"] == 0 and unchanged["dropped"] == 0 and unchanged["kept"] == len(first_ids)

    # A new shard arrives and one old row disappears: only the 40 new rows are encoded.
    df.head(40).filter(pl.col("id") != first_ids[0]).write_parquet(folder / "part-0.parquet")
    df.slice(40, 40).write_parquet(folder / "part-1.parquet")
    grown = run(folder, out, cache)
    assert grown["embedded"].encoded == 40
    changes = json.loads((out / "report.json").read_text())["changes_since_previous"]
    now = set(pl.read_parquet(out / "selected.parquet")["id"].to_list())
    assert changes["added"] == len(now - set(first_ids)) and changes["dropped"] == len(set(first_ids) - now)
    assert changes["dropped_left_input"] == 1
    assert changes["added_new_in_input"] == len(now - set(df.head(40)["id"]))
    assert "Changes since the previous run" in (out / "report.html").read_text()

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


def test_changes_since_previous_run_on_an_object_store_output(tmp_path, bundled_slice):
    """--out s3://...: the run is staged locally and published, and the previous run is read from the store, so the
    report's "changes since the previous run" is the one a local --out gets."""
    pytest.importorskip("s3fs")
    from tests.s3_server import make_bucket, moto_server, s3_client, s3_environment

    df = pl.read_parquet(bundled_slice)
    folder, local, cache = tmp_path / "shards", tmp_path / "out", tmp_path / "cache"
    folder.mkdir()
    df.head(40).write_parquet(folder / "part-0.parquet")
    with moto_server() as endpoint, s3_environment(endpoint):
        make_bucket(endpoint, "runs")
        s3 = s3_client(endpoint)

        def remote_report() -> dict:
            return json.loads(s3.get_object(Bucket="runs", Key="out/report.json")["Body"].read())

        run(folder, local, cache)
        run(folder, "s3://runs/out", cache)
        assert remote_report()["changes_since_previous"] is None  # the first run into that prefix
        first_ids = pl.read_parquet(local / "selected.parquet")["id"].to_list()
        df.head(40).filter(pl.col("id") != first_ids[0]).write_parquet(folder / "part-0.parquet")
        df.slice(40, 40).write_parquet(folder / "part-1.parquet")
        run(folder, local, cache)
        run(folder, "s3://runs/out", cache)
        remote = remote_report()["changes_since_previous"]
    expected = json.loads((local / "report.json").read_text())["changes_since_previous"]
    assert expected["comparable"] and expected["dropped_left_input"] == 1
    assert remote == expected

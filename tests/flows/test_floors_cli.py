"""Coverage floors through the command line: every group gets its floor, in one run and per group."""

import json

import polars as pl
import pytest

from selectflow.flows.cli import main

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _slice_with_a_small_group(tmp_path, bundled_slice):
    """The 80-row slice with one family cut to 3 rows, so a 12-row selection easily misses it."""
    df = pl.read_parquet(bundled_slice)
    small = df.filter(pl.col("source") == "trec").head(3)
    path = tmp_path / "skewed.parquet"
    pl.concat([df.filter(pl.col("source") != "trec"), small]).write_parquet(path)
    return path


@pytest.mark.parametrize("per_group", [False, True])
def test_min_per_group_gives_every_group_its_floor(tmp_path, bundled_slice, per_group):
    path = _slice_with_a_small_group(tmp_path, bundled_slice)
    out = tmp_path / ("per-group" if per_group else "whole")
    args = ["select", str(path), "--id", "id", "--group", "source", "--sampler", "kmeans", "--budget", "16",
            "--min-per-group", "2", "--out", str(out), "--device", "cpu"] + (["--per-group"] if per_group else [])
    assert main(args) == 0
    counts = pl.read_parquet(out / "selected.parquet")["source"].value_counts()
    assert pl.read_parquet(out / "selected.parquet").height == 16
    assert counts.height == 8 and counts["count"].min() >= 2, counts
    manifest = json.loads((out / "manifest.json").read_text())
    assert "min_per_group" in json.dumps(manifest)


def test_min_per_group_without_a_group_column_fails_before_any_work(tmp_path, bundled_slice, capsys):
    out = tmp_path / "o"
    assert main(["select", str(bundled_slice), "--min-per-group", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--min-per-group needs a group column: pass --group COL" in err and len(err.splitlines()) == 1
    assert not out.exists()

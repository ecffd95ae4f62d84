"""Selections tied to other runs: iterative kMQ rounds with feedback, and influence toward a target corpus."""

import json

import numpy as np
import polars as pl
import pytest

from selectflow.flows.params import CorpusParams, EncoderParams, OutputParams, SelectionParams

pytestmark = pytest.mark.usefixtures("prefect_harness")


def select(corpus, out, **selection):
    from selectflow.flows.pipeline import select_subset

    return select_subset(CorpusParams(path=str(corpus), id_column="id", group_column="source"),
                         EncoderParams(device="cpu"), SelectionParams(**selection), OutputParams(out_dir=str(out)))


def test_second_round_uses_feedback_and_never_repeats_a_row(tmp_path, bundled_slice):
    first = select(bundled_slice, tmp_path / "r1", sampler="kmeans", budget=16, seed=4, options={"kmeans": {"k": 4}})
    picked = pl.read_parquet(tmp_path / "r1" / "selected.parquet")
    # Feedback from "training on round 1": rows of one source scored high, the rest low.
    pl.DataFrame({"sf_id": picked["sf_id"], "feedback": np.where(picked["source"] == picked["source"][0], 5.0, 0.1)}
                 ).write_parquet(tmp_path / "feedback.parquet")
    select(bundled_slice, tmp_path / "r2", sampler="kmeans", budget=16, seed=4, options={"kmeans": {"k": 4}},
           feedback=str(tmp_path / "feedback.parquet"), previous_runs=[str(tmp_path / "r1")])
    second = pl.read_parquet(tmp_path / "r2" / "selected.parquet")
    assert second.height == 16 and not set(second["sf_id"]) & set(picked["sf_id"])
    diag = json.loads((tmp_path / "r2" / "report.json").read_text())["diagnostics"]
    assert diag["previous_rows"] == 16 and diag["feedback_rows"] == 16
    assert first["selected"] == 16


def test_influence_toward_a_target_corpus(tmp_path, bundled_slice):
    df = pl.read_parquet(bundled_slice)
    target = tmp_path / "target.parquet"
    df.filter(pl.col("source") == "sciq").head(5).select("prompt", "completion").write_parquet(target)
    result = select(bundled_slice, tmp_path / "out", sampler="influence", budget=10, seed=0,
                    options={"influence": {"score": "target", "balance": "none"}}, target=str(target))
    chosen = pl.read_parquet(tmp_path / "out" / "selected.parquet")
    assert chosen.height == 10 and result["selection"].diagnostics
    # Rows like the target (science questions) rank first.
    assert (chosen["source"].head(5) == "sciq").sum() >= 3

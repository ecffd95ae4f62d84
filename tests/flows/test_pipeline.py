"""End to end: the select-subset flow with the real packaged encoder on a small real slice."""

import json
import re

import polars as pl
import pytest

from selectflow.flows.params import CorpusParams, EncoderParams, OutputParams, SelectionParams
from selectflow.tasks.io.results import Manifest

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def run(tmp_path_factory, bundled_slice):
    from selectflow.flows.pipeline import select_subset

    out = tmp_path_factory.mktemp("out") / "run"
    result = select_subset(
        CorpusParams(path=str(bundled_slice), id_column="id", group_column="source", label_column="source"),
        EncoderParams(device="cpu", batch_size=32),
        SelectionParams(sampler="kmeans", budget=0.25, seed=3),
        OutputParams(out_dir=str(out)),
    )
    return out, result


def test_selected_parquet_has_original_and_provenance_columns(run, bundled_slice):
    out, result = run
    df = pl.read_parquet(out / "selected.parquet")
    source = pl.read_parquet(bundled_slice)
    assert df.height == 20  # 25% of 80 rows
    assert df.columns[: len(source.columns)] == source.columns
    assert {"sf_sampler", "sf_rank", "sf_score", "sf_weight", "sf_cluster", "sf_nearest_selected_id",
            "sf_nearest_selected_similarity"} <= set(df.columns)
    assert df["sf_rank"].to_list() == list(range(20))
    assert df["id"].n_unique() == 20 and set(df["id"]) <= set(source["id"])
    assert (df["sf_weight"] == 1.0).all() and (df["sf_sampler"] == "kmeans").all()
    # Original columns are the input's own values for those ids.
    joined = df.select("id", "prompt").join(source.select("id", pl.col("prompt").alias("orig")), on="id")
    assert (joined["prompt"] == joined["orig"]).all()
    assert set(df["sf_nearest_selected_id"]) <= set(df["id"])
    assert (df["sf_nearest_selected_id"] != df["id"]).all()
    assert df["sf_nearest_selected_similarity"].is_between(-1.0001, 1.0001).all()


def test_manifest_records_input_config_encoder_versions_and_timings(run, bundled_slice):
    out, _ = run
    m = json.loads((out / "manifest.json").read_text())
    assert m["input"]["path"] == str(bundled_slice.resolve()) and len(m["input"]["content_hash"]) == 32
    assert m["rows"] == {"read": 80, "usable": 80, "excluded": 0, "excluded_by_reason": {}, "selected": 20}
    assert m["config"]["selection"]["sampler"] == "kmeans" and m["seed"] == 3
    assert m["encoder"]["name"].startswith("all-MiniLM-L6-v2") and len(m["encoder"]["weights_hash"]) == 32
    assert {"prefect", "numpy", "polars", "torch"} <= set(m["library_versions"])
    assert {"corpus", "embed", "index", "select", "report"} <= set(m["timings_seconds"])
    # The file is written and read through one model, which round-trips it key for key.
    assert Manifest.read(out).to_json() == m and Manifest.read(out).cache_files.selection_arrays == m["cache_files"]["selection_arrays"]


def test_report_is_self_contained_and_complete(run):
    out, _ = run
    page = (out / "report.html").read_text()
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    for section in ("Summary", "Data problems", "Diversity and coverage", "Selection against the pool", "Map of pool"):
        assert section in page
    assert page.count("<svg") >= 3
    report = json.loads((out / "report.json").read_text())
    dc = report["diversity_coverage"]
    assert dc["random_draws"] >= 3 and "std" in dc["random"]["coverage_distance"]
    groups = report["composition"]["groups"]
    assert sum(g["pool"] for g in groups) == 80 and sum(g["selected"] for g in groups) == 20


def test_artifacts_are_published(run):
    from prefect.artifacts import Artifact

    # Keyed by deployment ('cli' outside one) and sampler, so each keeps its own history.
    out, _ = run
    summary = Artifact.get("selection-summary-cli-kmeans")
    assert summary is not None and "Selection: kmeans" in summary.data
    assert "Against random selections of the same size" in summary.data
    assert all(m in summary.data for m in ("coverage", "near-duplicates", "label coverage")) and "±" in summary.data
    assert Artifact.get("selection-composition-cli-kmeans") is not None
    # On a local disk the report is a path to copy, not a file:// link the UI's page cannot open.
    report = Artifact.get("selection-report-cli-kmeans")
    assert report is not None and report.type == "markdown"
    assert str((out / "report.html").resolve()) in report.data and "file://" not in report.data


def test_rerun_reuses_everything_and_gives_the_same_bytes(run, bundled_slice, tmp_path):
    from selectflow.flows.pipeline import select_subset

    out, first = run
    again = select_subset(
        CorpusParams(path=str(bundled_slice), id_column="id", group_column="source", label_column="source"),
        EncoderParams(device="cpu", batch_size=32),
        SelectionParams(sampler="kmeans", budget=0.25, seed=3),
        OutputParams(out_dir=str(tmp_path / "again")),
    )
    assert again["embedded"].encoded == 0 and again["prepared"].reused and again["selection"].reused
    assert (tmp_path / "again" / "selected.parquet").read_bytes() == (out / "selected.parquet").read_bytes()


def test_output_folder_of_another_run_is_refused(run, bundled_slice):
    from selectflow.flows.pipeline import select_subset
    from selectflow.tasks.errors import ConfigError

    out, _ = run
    with pytest.raises(ConfigError, match="already holds another run"):
        select_subset(CorpusParams(path=str(bundled_slice)), EncoderParams(device="cpu"),
                      SelectionParams(sampler="random", budget=5), OutputParams(out_dir=str(out)))
    assert json.loads((out / "manifest.json").read_text())["config"]["selection"]["sampler"] == "kmeans"


def test_own_embeddings_skip_the_encoder_and_hostile_ids_stay_data(tmp_path, bundled_slice):
    import hashlib

    import numpy as np

    from selectflow.flows.pipeline import select_subset

    df = pl.read_parquet(bundled_slice)
    # Ids that look like paths must never be used as paths.
    df = df.with_columns(pl.format("../../escape-{}", pl.int_range(pl.len())).alias("id"))
    corpus = tmp_path / "in" / "corpus.parquet"
    corpus.parent.mkdir()
    df.write_parquet(corpus)
    before = hashlib.sha256(corpus.read_bytes()).hexdigest()
    n = df.height
    vecs = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    np.save(tmp_path / "emb.npy", vecs)
    result = select_subset(
        CorpusParams(path=str(corpus), id_column="id", embeddings=str(tmp_path / "emb.npy")),
        EncoderParams(device="cpu"), SelectionParams(sampler="kmeans", budget=10, seed=0),
        OutputParams(out_dir=str(tmp_path / "out")),
    )
    assert result["embedded"].encoded == 0 and result["embedded"].dim == 8
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["encoder"]["name"] == "user embeddings (emb.npy)"
    assert pl.read_parquet(tmp_path / "out" / "selected.parquet").height == 10
    assert hashlib.sha256(corpus.read_bytes()).hexdigest() == before  # the input is never modified
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy", "in", "out"]
    assert not list(tmp_path.parent.glob("escape-*")) and not list((tmp_path / "in").glob("escape-*"))

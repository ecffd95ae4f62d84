"""Scale-out: the pipeline on a local Dask cluster gives byte-identical results to the thread runner."""

from pathlib import Path

import polars as pl
import pytest

from selectflow.flows.params import CorpusParams, EncoderParams, OutputParams, SelectionParams
from selectflow.flows.runners import RunnerParams

pytestmark = pytest.mark.usefixtures("prefect_harness")


def run(tmp_path, corpus, name, runner):
    from selectflow.flows.pipeline import select_subset

    return select_subset(
        CorpusParams(path=str(corpus), id_column="id", group_column="source"),
        EncoderParams(device="cpu", batch_size=16),
        SelectionParams(sampler="kmeans", budget=12, seed=5),
        # Separate caches: each runner really encodes, nothing is shared between the two runs.
        OutputParams(out_dir=str(tmp_path / name), cache_dir=str(tmp_path / f"cache-{name}")),
        runner,
    )


def test_dask_cluster_and_threads_give_identical_outputs(tmp_path, bundled_slice):
    pytest.importorskip("prefect_dask")
    corpus = tmp_path / "small.parquet"
    pl.read_parquet(bundled_slice).head(48).write_parquet(corpus)
    threads = run(tmp_path, corpus, "threads", RunnerParams(kind="thread", workers=2, unit_rows=16))
    dask = run(tmp_path, corpus, "dask", RunnerParams(kind="dask", workers=2, unit_rows=16))
    assert threads["embedded"].encoded == dask["embedded"].encoded == 48
    assert (tmp_path / "threads" / "selected.parquet").read_bytes() == (tmp_path / "dask" / "selected.parquet").read_bytes()


def test_per_group_selection_on_dask_matches_threads_and_respects_group_quotas(tmp_path, bundled_slice):
    pytest.importorskip("prefect_dask")
    from selectflow.flows.pipeline import select_subset

    def run(name, runner):
        return select_subset(
            CorpusParams(path=str(bundled_slice), id_column="id", group_column="source"),
            EncoderParams(device="cpu"),
            SelectionParams(sampler="kmeans", budget=16, seed=2, per_group=True),
            OutputParams(out_dir=str(tmp_path / name)), runner)

    threads = run("threads", RunnerParams(kind="thread", workers=2))
    run("dask", RunnerParams(kind="dask", workers=2))
    df = pl.read_parquet(tmp_path / "threads" / "selected.parquet")
    # 8 sources of 10 rows each: 16 rows split evenly, 2 per source.
    assert df.height == 16 and set(df.group_by("source").len()["len"].to_list()) == {2}
    assert len(threads["selection"].diagnostics["per_group"]) == 8
    assert (tmp_path / "threads" / "selected.parquet").read_bytes() == (tmp_path / "dask" / "selected.parquet").read_bytes()


def test_local_dask_workers_report_to_the_flows_temporary_api_instead_of_starting_their_own(tmp_path, bundled_slice):
    """No PREFECT_API_URL: the flow runs on Prefect's temporary API. Each worker process of the local cluster used
    to start a temporary API of its own (0.2 GiB, seconds of start-up, task runs the flow's API never saw)."""
    pytest.importorskip("prefect_dask")
    import os
    import subprocess
    import sys

    import numpy as np

    # Partitioned mode on stored embeddings: shard checks, routing and the partitions' samplers all run on the
    # workers, without the encoder start-up of the embedding path.
    corpus, shards = tmp_path / "small.parquet", tmp_path / "emb"
    pl.read_parquet(bundled_slice).head(24).write_parquet(corpus)
    shards.mkdir()
    emb = np.load(Path(__file__).resolve().parents[1] / "data" / "bundled_embeddings.npy")
    np.save(shards / "a.npy", emb[:12])
    np.save(shards / "b.npy", emb[12:24])
    # No Prefect or Dask settings from this process: an earlier in-process CLI call may have set
    # PREFECT_LOGGING_LEVEL=CRITICAL here, which would hide the line counted below.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DASK_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "selectflow.flows.cli", "select", str(corpus), "--id", "id",
                           "--embeddings", str(shards), "--partitions", "2", "--sampler", "random",
                           "--budget", "6", "--runner", "dask", "--workers", "2",
                           "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--verbose"],
                          capture_output=True, text=True, timeout=600, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    # Prefect logs this line (at INFO, shown by --verbose) in every process that starts a temporary API; the
    # workers' stderr is the flow's (Dask's nanny passes it through).
    assert log.count("Starting temporary server on") == 1, log[-3000:]
    assert pl.read_parquet(tmp_path / "out" / "selected.parquet").height == 6

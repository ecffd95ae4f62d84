"""Retries and failure handling (issue #14, part 3).

A one-time failure is injected by monkeypatching the plain functions the tasks call (tasks/embed.py's
encode_positions, tasks/select.py's run_sampler): no hook in the product code.
"""

import threading

import polars as pl
import pytest

from selectflow.flows.params import CorpusParams, EncoderParams, OutputParams, SelectionParams
from selectflow.flows.runners import RunnerParams

pytestmark = pytest.mark.usefixtures("prefect_harness")

UNIT_ROWS = 20  # 80 rows: 4 units, unit i holds positions 20*i ... 20*i + 19


def _corpus(path) -> CorpusParams:
    return CorpusParams(path=str(path), id_column="id", group_column="source", label_column="source")


def _select(slice_path, out, cache, **kwargs):
    from selectflow.flows.pipeline import select_subset

    state = select_subset(_corpus(slice_path), EncoderParams(device="cpu", batch_size=32),
                          SelectionParams(sampler="kmeans", budget=0.25, seed=3),
                          OutputParams(out_dir=str(out), cache_dir=str(cache)),
                          RunnerParams(workers=2, unit_rows=UNIT_ROWS), return_state=True, **kwargs)
    return state


def _flow_run_name(state) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).name


def test_encode_unit_and_select_retry_with_exponential_backoff_but_not_user_errors():
    from prefect.states import Failed

    from selectflow.tasks import retry
    from selectflow.tasks.embed import encode_unit_task
    from selectflow.tasks.errors import ConfigError
    from selectflow.tasks.select import select_task

    for task in (encode_unit_task, select_task):
        assert task.retries == retry.RETRIES >= 1
        assert task.retry_delay_seconds == [retry.BACKOFF_SECONDS * 2 ** i for i in range(retry.RETRIES)]
        assert task.retry_condition_fn is retry.retryable
    assert retry.retryable(None, None, Failed(data=RuntimeError("worker lost")))
    assert not retry.retryable(None, None, Failed(data=ConfigError("bad option")))


def test_a_unit_and_the_select_failing_once_are_retried_and_the_selection_is_the_same(tmp_path, bundled_slice,
                                                                                       monkeypatch):
    from selectflow.tasks import embed, select

    baseline = _select(bundled_slice, tmp_path / "baseline", tmp_path / "cache-a")
    assert baseline.is_completed()
    assert _flow_run_name(baseline) == "kmeans-25pct-slice"
    expected = pl.read_parquet(tmp_path / "baseline" / "selected.parquet")["id"].to_list()

    calls, lock = [], threading.Lock()
    real_encode, real_sampler = embed.encode_positions, select.run_sampler

    def encode_failing_once(prepared_path, positions, *args, **kwargs):
        with lock:
            calls.append(int(positions[0]))
            first_try = calls.count(int(positions[0])) == 1
        if int(positions[0]) == UNIT_ROWS and first_try:  # unit 1, first attempt: the worker "dies"
            raise RuntimeError("unit killed")
        return real_encode(prepared_path, positions, *args, **kwargs)

    sampler_calls = []

    def sampler_failing_once(*args, **kwargs):
        sampler_calls.append(1)
        if len(sampler_calls) == 1:
            raise RuntimeError("select killed")
        return real_sampler(*args, **kwargs)

    monkeypatch.setattr(embed, "encode_positions", encode_failing_once)
    monkeypatch.setattr(select, "run_sampler", sampler_failing_once)
    state = _select(bundled_slice, tmp_path / "retried", tmp_path / "cache-b")
    assert state.is_completed(), state.message
    assert sorted(calls) == [0, UNIT_ROWS, UNIT_ROWS, 2 * UNIT_ROWS, 3 * UNIT_ROWS]  # unit 1 ran twice
    assert len(sampler_calls) == 2
    assert pl.read_parquet(tmp_path / "retried" / "selected.parquet")["id"].to_list() == expected


def test_every_failed_unit_is_named_and_the_others_still_run(tmp_path, bundled_slice, monkeypatch):
    from selectflow.flows import pipeline
    from selectflow.flows.failures import UnitsFailed
    from selectflow.tasks import embed

    real_encode, seen = embed.encode_positions, []

    def encode_failing(prepared_path, positions, *args, **kwargs):
        seen.append(int(positions[0]))
        if int(positions[0]) in (UNIT_ROWS, 3 * UNIT_ROWS):
            raise RuntimeError(f"no luck at {int(positions[0])}")
        return real_encode(prepared_path, positions, *args, **kwargs)

    monkeypatch.setattr(embed, "encode_positions", encode_failing)
    monkeypatch.setattr(pipeline, "encode_unit_task", pipeline.encode_unit_task.with_options(retries=0))
    with pytest.raises(UnitsFailed) as failed:
        pipeline.run_embed_corpus(_corpus(bundled_slice), EncoderParams(device="cpu", batch_size=32),
                                  str(tmp_path / "cache"), RunnerParams(workers=2, unit_rows=UNIT_ROWS))
    message = str(failed.value)
    assert message.startswith("encode-unit failed for 2 of 4: ")
    assert "unit 1: RuntimeError: no luck at 20" in message and "unit 3: RuntimeError: no luck at 60" in message
    assert "unit 0" not in message and "unit 2" not in message
    assert sorted(seen) == [0, UNIT_ROWS, 2 * UNIT_ROWS, 3 * UNIT_ROWS]  # nothing stopped at the first error


def test_a_failed_cli_run_publishes_the_failed_stage_and_the_command_that_resumes_it(tmp_path, bundled_slice,
                                                                                    monkeypatch):
    from prefect.artifacts import Artifact

    from selectflow.flows import pipeline
    from selectflow.flows.cli import main
    from selectflow.tasks import select

    def sampler_exploding(*args, **kwargs):
        raise RuntimeError("sampler exploded")

    monkeypatch.setattr(select, "run_sampler", sampler_exploding)
    monkeypatch.setattr(pipeline, "select_task", pipeline.select_task.with_options(retries=0))
    argv = ["select", str(bundled_slice), "--id", "id", "--device", "cpu", "--sampler", "kmeans", "--budget", "0.25",
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 1

    artifact = Artifact.get("select-subset-failure")
    assert artifact is not None and artifact.flow_run_id is not None
    text = artifact.data
    assert "failed stage: `select`" in text and "RuntimeError: sampler exploded" in text
    assert f"selectflow select {bundled_slice}" in text and f"--out {tmp_path / 'out'}" in text


def test_the_failure_artifact_of_a_deployment_run_says_how_to_rerun_it():
    from types import SimpleNamespace
    from uuid import uuid4

    from prefect.states import Failed

    from selectflow.flows.failures import failure_markdown, mark_stage

    error = RuntimeError("disk full")
    mark_stage(error, "write-outputs")
    mark_stage(error, "sampler kmeans")
    run = SimpleNamespace(name="kmeans-5pct-instructions", id=uuid4(), deployment_id=uuid4(),
                          parameters={"selection": {"sampler": {"name": "kmeans"}, "budget": 0.05}})
    text = failure_markdown(SimpleNamespace(name="select-subset", fn=None), run, Failed(data=error))
    assert "failed stage: `write-outputs` (in `sampler kmeans`)" in text and "RuntimeError: disk full" in text
    assert "prefect deployment run select-subset/" in text and '"budget": 0.05' in text and "Retry" in text

"""The embedding progress artifact never goes backwards when units run concurrently (issue #14)."""

import random
import threading
import time
import uuid

import pytest


@pytest.fixture
def published(monkeypatch):
    from selectflow.tasks import embed

    values, lock = [], threading.Lock()

    def record(artifact_id, progress):
        time.sleep(random.random() / 1000)  # a slow API call widens every race
        with lock:
            values.append(progress)

    monkeypatch.setattr(embed, "update_progress_artifact", record)
    return values


def test_concurrent_units_publish_a_progress_that_only_grows(published):
    from selectflow.tasks import embed

    artifact, units, rows, step = str(uuid.uuid4()), 6, 50, 5
    total = units * rows
    start = threading.Barrier(units)

    def unit(i: int) -> None:
        start.wait()
        for done in range(step, rows + 1, step):
            embed._report_progress(artifact, i, done, total, step=0.0)
            if i == 0 and done == 25:  # a retried unit starts again from 0: the progress must not drop
                embed._report_progress(artifact, i, 0, total, step=0.0)
            time.sleep(random.random() / 2000)

    threads = [threading.Thread(target=unit, args=(i,)) for i in range(units)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert published == sorted(published) and len(set(published)) == len(published)
    assert published[-1] == 100.0 and len(published) >= units
    embed._progress.pop(artifact)


def test_a_threaded_embedding_run_publishes_monotonic_progress(published, tmp_path, bundled_slice):
    from selectflow.flows.params import CorpusParams, EncoderParams
    from selectflow.flows.pipeline import run_embed_corpus
    from selectflow.flows.runners import RunnerParams

    result = run_embed_corpus(CorpusParams(path=str(bundled_slice), id_column="id"), EncoderParams(device="cpu", batch_size=8),
                              str(tmp_path / "cache"), RunnerParams(workers=3, unit_rows=10))
    assert result.embeddings.encoded == 80
    assert len(published) >= 3 and published == sorted(published) and published[-1] == 100.0


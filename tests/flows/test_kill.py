"""Real `kill -9`: embedding resumes from the shards already written, and outputs are never half-written."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest


def cli(*args, cache, env_home):
    env = {**os.environ, "SELECTFLOW_CACHE": str(cache), "PREFECT_HOME": str(env_home)}
    return subprocess.Popen([sys.executable, "-m", "selectflow.flows.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def shard_count(cache: Path) -> int:
    return len(list((cache / "store").glob("*/shard-*.hashes.npy"))) if (cache / "store").exists() else 0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("kill") / "corpus.parquet"
    pl.read_parquet(Path(__file__).resolve().parents[2] / "data" / "instructions.parquet").head(160).write_parquet(path)
    return path


def test_kill_during_embedding_then_resume(tmp_path, corpus, encoder):
    cache, home = tmp_path / "cache", tmp_path / "prefect"
    proc = cli("embed", str(corpus), "--id", "id", "--device", "cpu", "--shard-rows", "16", "--batch-size", "16",
               cache=cache, env_home=home)
    deadline = time.time() + 240
    while shard_count(cache) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read()[-500:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = shard_count(cache)
    assert done_before >= 3
    assert not list(cache.glob("matrix/*.npy")), "the matrix must not exist after a kill during embedding"

    resumed = cli("embed", str(corpus), "--id", "id", "--device", "cpu", "--shard-rows", "16", "--batch-size", "16",
                  cache=cache, env_home=home)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    encoded = int(out.split("(")[1].split(" encoded")[0])
    assert encoded <= 160 - 16 * done_before, "finished shards must not be encoded again"

    # Same vectors as one uninterrupted run.
    from selectflow.tasks.embedding.encode_units import embed_prepared
    from selectflow.tasks.io.corpus_reader import CorpusSpec, prepare_corpus

    model, info = encoder
    prepared = prepare_corpus(CorpusSpec(str(corpus), id_column="id"), tmp_path / "fresh-corpus")
    embed_prepared(prepared.prepared_path, model, info, store_root=tmp_path / "fresh-store", matrix_path=tmp_path / "fresh.npy", batch_size=16)
    (resumed_matrix,) = list(cache.glob("matrix/*.npy"))
    np.testing.assert_allclose(np.load(resumed_matrix), np.load(tmp_path / "fresh.npy"), atol=1e-5)


def test_kills_during_select_never_leave_partial_outputs(tmp_path, corpus):
    cache, home, out = tmp_path / "cache", tmp_path / "prefect", tmp_path / "out"
    args = ("select", str(corpus), "--id", "id", "--device", "cpu", "--budget", "20", "--out", str(out))
    warm = cli(*args, cache=cache, env_home=home)  # embeddings cached: later runs spend their time selecting and writing
    assert warm.wait(timeout=600) == 0
    reference = (out / "selected.parquet").read_bytes()
    for delay in (3.0, 6.0):
        for f in out.iterdir():
            f.unlink()
        proc = cli(*args, cache=cache, env_home=home)
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if (out / "manifest.json").exists():  # a manifest only ever describes a complete set of outputs
            assert all((out / n).exists() for n in ("selected.parquet", "report.json", "report.html"))
            assert (out / "selected.parquet").read_bytes() == reference
        for name in ("selected.parquet", "manifest.json", "report.json", "report.html"):
            path = out / name
            if path.exists():  # either absent or complete
                if name.endswith(".parquet"):
                    assert path.read_bytes() == reference
                elif name.endswith(".json"):
                    json.loads(path.read_text())
                else:
                    assert path.read_text().rstrip().endswith("</html>")
    final = cli(*args, cache=cache, env_home=home)  # the same configuration resumes in place, no --overwrite needed
    assert final.wait(timeout=600) == 0
    assert (out / "selected.parquet").read_bytes() == reference

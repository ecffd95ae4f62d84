"""A real multi-process Dask cluster against a real S3 API (issue #13, parts 1 and 2).

One moto_server process (tests/s3_server.py), one `dask scheduler` and two `dask worker` processes on loopback
(`--nthreads 1`, no nanny), each worker with its own working directory, HOME, TMPDIR and SELECTFLOW_CACHE: none can
see the flow's local cache. The input, the cache and the outputs live on the S3 endpoint; the workers get the
AWS_* environment and PREFECT_API_URL of the test's Prefect server, so their task runs report to the flow's API.

- `select --runner dask --address tcp://...` gives the thread runner's selected.parquet, byte for byte;
- `--address` without a reachable Prefect API is refused with one line;
- a run that loses a worker (SIGKILL) mid-embedding finishes on the other one with the same selection;
- the recognisable fake secret is in no object on S3, no captured log line and no Prefect artifact or log.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import polars as pl
import pytest

from selectflow.flows.cli import main
from tests.s3_server import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, all_keys, free_port, make_bucket, s3_client, s3_fixture

pytestmark = pytest.mark.usefixtures("prefect_harness")

ROWS, UNIT_ROWS, SHARD_ROWS = 48, 8, 4  # 6 units of 2 shards each: both workers encode several units
SECRETS = (FAKE_SECRET_KEY, FAKE_ACCESS_KEY)
s3_endpoint = s3_fixture("module")


def _dask_cli() -> str | None:
    exe = Path(sys.executable).with_name("dask")
    return str(exe) if exe.exists() else shutil.which("dask")


if _dask_cli() is None:
    pytest.skip("the `dask` command is missing (pip install 'selectflow[dask]')", allow_module_level=True)
pytest.importorskip("prefect_dask", reason="the dask runner needs prefect-dask")

LOGS: list[str] = []  # everything captured from the flow (stdout, stderr) across the module, for the secret check


class Cluster:
    """`dask scheduler` and named `dask worker` processes, logs in files, every process killed in `stop`."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env, self.procs, self.workers = root, env, [], {}
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"

    def _start(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")
        proc = subprocess.Popen([_dask_cli(), *args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def start(self, n_workers: int = 2) -> None:
        home = self.root / "scheduler"
        home.mkdir()
        self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"],
                    {**self.env, "HOME": str(home), "TMPDIR": str(home)}, home)
        for i in range(n_workers):
            name = f"w{i}"
            home = self.root / name
            (home / "tmp").mkdir(parents=True)
            env = {**self.env, "HOME": str(home), "TMPDIR": str(home / "tmp"), "PREFECT_HOME": str(home / "prefect"),
                   "SELECTFLOW_CACHE": str(home / "cache")}
            self.workers[name] = self._start(name, ["worker", self.address, "--name", name, "--nthreads", "1",
                                                    "--no-nanny", "--no-dashboard", "--local-directory", str(home / "dask"),
                                                    "--host", "127.0.0.1"], env, home)
        from distributed import Client

        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(n_workers, timeout=90)
        # Load the encoder on every worker in the background, while the flow runs the thread reference (the same
        # cache key as the encode units' own call: default model, cpu, torch).
        threading.Thread(target=self._warm, daemon=True).start()

    def _warm(self) -> None:
        from distributed import Client

        scope = {"__name__": "selectflow_test_warm"}  # not importable: cloudpickle sends the function by value
        exec("def warm():\n    from selectflow.tasks.embed import cached_encoder\n"
             "    cached_encoder(None, 'cpu', 'torch', None)\n", scope)
        try:
            with Client(self.address, timeout=30) as client:
                client.run(scope["warm"])
        except Exception:  # noqa: BLE001 - only a head start: the units load the encoder themselves
            pass

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        for proc in self.procs:  # test processes: no state worth a graceful shutdown
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            proc.wait()


@pytest.fixture(scope="module")
def bucket(s3_endpoint):
    name = f"cluster-{uuid.uuid4().hex[:10]}"
    make_bucket(s3_endpoint, name)
    return name


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, bundled_slice, bucket) -> tuple[Path, str]:
    """The small corpus, as a local file (for the thread runner) and as an object on S3 (for the cluster)."""
    path = tmp_path_factory.mktemp("corpus") / "small.parquet"
    pl.read_parquet(bundled_slice).head(ROWS).write_parquet(path)
    s3_client(os.environ["AWS_ENDPOINT_URL"]).upload_file(str(path), bucket, "input/small.parquet")
    return path, f"s3://{bucket}/input/small.parquet"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_endpoint):
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    assert api, "the prefect_harness fixture serves a Prefect API"
    root = tmp_path_factory.mktemp("dask-cluster")
    keep = ("PATH", "LANG", "LC_ALL", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "DO_NOT_TRACK",
            "HF_HUB_DISABLE_PROGRESS_BARS")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})  # the S3 endpoint and the fake keys
    env.update({"PREFECT_API_URL": api, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1"})
    c = Cluster(root, env)
    try:
        c.start(2)
        yield c
    finally:
        c.stop()
        LOGS.append(c.logs())


def _args(corpus: str, out: str, cache: str, *extra: str) -> list[str]:
    return ["select", corpus, "--id", "id", "--device", "cpu", "--sampler", "kmeans", "--budget", "12", "--seed", "5",
            "--batch-size", "4", "--unit-rows", str(UNIT_ROWS), "--shard-rows", str(SHARD_ROWS), "--out", out,
            "--cache-dir", cache, *extra]


def _run(capfd, argv: list[str]) -> int:
    try:
        return main(argv)
    finally:
        out, err = capfd.readouterr()
        LOGS.extend([out, err])
        sys.stdout.write(out)
        sys.stderr.write(err)


@pytest.fixture(scope="module")
def thread_run(tmp_path_factory, corpus) -> bytes:
    """The reference: the thread runner, local input, local cache and outputs."""
    root = tmp_path_factory.mktemp("threads")
    assert main(_args(str(corpus[0]), str(root / "out"), str(root / "cache"), "--runner", "thread", "--workers", "2")) == 0
    return (root / "out" / "selected.parquet").read_bytes()


def _read(bucket: str, key: str) -> bytes:
    return s3_client(os.environ["AWS_ENDPOINT_URL"]).get_object(Bucket=bucket, Key=key)["Body"].read()


def _ids(data: bytes) -> list[str]:
    import io

    return pl.read_parquet(io.BytesIO(data))["id"].to_list()


def test_dask_cluster_on_s3_matches_the_thread_runner(cluster, corpus, bucket, thread_run, capfd):
    cache, out = f"s3://{bucket}/cache-a", f"s3://{bucket}/out-a"
    assert _run(capfd, _args(corpus[1], out, cache, "--runner", "dask", "--address", cluster.address)) == 0
    selected = _read(bucket, "out-a/selected.parquet")
    assert _ids(selected) == _ids(thread_run) and selected == thread_run
    keys = [o["Key"] for o in s3_client(os.environ["AWS_ENDPOINT_URL"]).list_objects_v2(Bucket=bucket)["Contents"]]
    assert {"out-a/manifest.json", "out-a/report.html", "out-a/report.json"} <= set(keys)
    for part in ("cache-a/corpus/", "cache-a/store/", "cache-a/units/", "cache-a/matrix/", "cache-a/index/", "cache-a/selection/"):
        assert any(k.startswith(part) for k in keys), part
    assert not [k for k in keys if ".tmp" in k], "no temporary key left"
    # Both workers encoded: every unit ran as a Prefect task run on a worker, reported to the flow's API.
    assert "w0" in cluster.logs() or "w1" in cluster.logs()
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="encode-unit")))
    assert sum(r.state.is_completed() for r in runs if r.state) >= len(range(0, ROWS, UNIT_ROWS))
    # No worker ever saw a local cache folder of the flow: their own SELECTFLOW_CACHE stayed unused.
    for name in cluster.workers:
        assert not (cluster.root / name / "cache").exists()


def test_address_needs_a_prefect_api_the_workers_can_reach(cluster, corpus, bucket, capfd):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert _run(capfd, _args(corpus[1], f"s3://{bucket}/out-refused", f"s3://{bucket}/cache-refused",
                                 "--runner", "dask", "--address", cluster.address)) == 2
    err = LOGS[-1].strip().splitlines()
    assert len(err) == 1 and "PREFECT_API_URL" in err[0] and "--address" in err[0]


def test_losing_a_worker_mid_embedding_gives_the_same_selection(cluster, corpus, bucket, thread_run, capfd):
    """SIGKILL the worker running an encode unit once the first shard is on S3: Dask reschedules its tasks on the
    other worker, Prefect accepts the re-run, and the selection is the thread runner's."""
    from distributed import Client

    cache, out = f"s3://{bucket}/cache-b", f"s3://{bucket}/out-b"
    s3 = s3_client(os.environ["AWS_ENDPOINT_URL"])
    killed: dict = {}

    def shards() -> list[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="cache-b/store/")
        return [o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".hashes.npy")]

    def killer():
        with Client(cluster.address, timeout=30) as client:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not killed:
                if shards():
                    names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
                    busy = [names[a] for a, keys in client.processing().items() if keys and a in names]
                    if busy:
                        victim = sorted(busy)[0]
                        killed.update(name=victim, shards=len(shards()))
                        cluster.workers[victim].send_signal(signal.SIGKILL)
                        return
                time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        code = _run(capfd, _args(corpus[1], out, cache, "--runner", "dask", "--address", cluster.address))
    finally:
        thread.join(5)
    assert killed, "no worker was killed: the embedding finished before the first shard was seen"
    assert cluster.workers[killed["name"]].wait(10) == -signal.SIGKILL
    assert code == 0
    assert killed["shards"] < ROWS // SHARD_ROWS, "killed mid-embedding: shards were still missing"
    assert len(shards()) >= ROWS // SHARD_ROWS
    assert _read(bucket, "out-b/selected.parquet") == thread_run


def test_partitioned_selection_on_the_cluster_with_an_s3_cache_matches_the_thread_runner(cluster, corpus, bucket,
                                                                                        tmp_path, capfd):
    """--partitions on the cluster: the shards, the partition folder (centroids, fragments, routing manifests) and
    the partitions' picks live on S3; routing and the partitions' samplers run on workers that share no disk with
    the flow or with each other. Same bytes as the thread runner's partitioned run on a local cache."""
    extra = ("--partitions", "2")
    assert main(_args(str(corpus[0]), str(tmp_path / "out"), str(tmp_path / "cache"), "--runner", "thread", *extra)) == 0
    reference = (tmp_path / "out" / "selected.parquet").read_bytes()
    cache, out = f"s3://{bucket}/cache-p", f"s3://{bucket}/out-p"
    assert _run(capfd, _args(corpus[1], out, cache, "--runner", "dask", "--address", cluster.address, *extra)) == 0
    assert _read(bucket, "out-p/selected.parquet") == reference
    # This run's keys only: the worker-kill test above may leave a temporary key of an upload cut short by SIGKILL.
    keys = [k for k in all_keys(os.environ["AWS_ENDPOINT_URL"], bucket) if k.startswith(("cache-p/", "out-p/"))]
    for part in ("cache-p/shards/", "cache-p/partitions/", "cache-p/selection/"):
        assert any(k.startswith(part) for k in keys), part
    assert any("/routing/s-" in k for k in keys) and any(k.endswith("centroids.npy") for k in keys)
    assert not [k for k in keys if ".tmp" in k], "no temporary key left"
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="select-partition")))
    assert sum(r.state.is_completed() for r in runs if r.state) >= 2
    for name in cluster.workers:
        assert not (cluster.root / name / "cache").exists()


def test_no_secret_in_any_object_log_or_artifact(cluster, bucket):
    """Runs last: every object of the bucket, every captured log (flow, scheduler, workers) and every Prefect
    artifact and log record is free of the fake credentials."""
    from prefect.client.orchestration import get_client

    LOGS.append(cluster.logs())
    s3 = s3_client(os.environ["AWS_ENDPOINT_URL"])
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert any(k.endswith("manifest.json") for k in keys) and any(k.endswith("report.html") for k in keys)
    for key in keys:
        body = _read(bucket, key)
        for secret in SECRETS:
            assert secret.encode() not in body, key
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
        records = client.read_logs()
    assert artifacts and records
    texts = [a.model_dump_json() for a in artifacts] + [r.model_dump_json() for r in records] + LOGS
    for text in texts:
        for secret in SECRETS:
            assert secret not in text

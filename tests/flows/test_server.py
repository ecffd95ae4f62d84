"""A real Prefect server on loopback, in its own process with its own PREFECT_HOME and database.

`selectflow serve` and infra/prefect.yaml deploy the pipeline; runs are created through the REST API exactly
as the UI's Run button does (POST /deployments/{id}/create_flow_run with the form's parameters); the server
must reject invalid parameters at creation. The PostgreSQL variant is the production setup (a throwaway
database from infra/postgres.sh, API authentication on, a worker running a prefect.yaml deployment); it runs
when SELECTFLOW_TEST_POSTGRES=1 (infra/postgres.sh installs and starts PostgreSQL).
"""

import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import polars as pl
import pytest
import yaml

from selectflow.flows import history

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")
BOOT_SECONDS = 150  # server start, including database migrations on 2 busy cores
RUN_SECONDS = 240   # one small flow run, including a fresh subprocess importing torch
BUDGET = 12


def _postgres_installed() -> bool:
    return shutil.which("initdb") is not None or any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


def _postgres_enabled() -> bool:
    # Opt-in: the PostgreSQL variant adds 3-5 minutes on 2 cores (the suite's budget is about 15).
    return os.environ.get("SELECTFLOW_TEST_POSTGRES") == "1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 30) -> None:
    # Each process was started in its own session: signal its group, so flow-run children go too.
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _wait_for(what: str, probe, seconds: float, logs: list[Path], procs=()):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"{what}: process exited with {proc.returncode}\n" + "\n".join(_tail(p) for p in logs))
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {seconds:.0f} s\n" + "\n".join(_tail(p) for p in logs))


class Server:
    def __init__(self, backend: str, api: str, env: dict, root: Path, log: Path, auth: tuple[str, str] | None):
        self.backend, self.api, self.env, self.root, self.log = backend, api, env, root, log
        self.http = httpx.Client(base_url=api, timeout=30, auth=auth)

    def get(self, path: str):
        try:
            response = self.http.get(path)
        except httpx.TransportError:  # not listening yet
            return None
        return response.json() if response.status_code == 200 else None

    def post(self, path: str, body: dict) -> httpx.Response:
        # 503 is the server's "retry": SQLite was locked by the scheduler's writes. Prefect's own client retries too.
        for attempt in range(8):
            response = self.http.post(path, json=body)
            if response.status_code != 503:
                return response
            time.sleep(0.5 * 2 ** min(attempt, 3))
        return response

    def deployment(self, flow: str, name: str) -> dict | None:
        return self.get(f"/deployments/name/{flow}/{name}")

    def flow_run_count(self, deployment_id: str) -> int:
        return self.post("/flow_runs/count", {"deployments": {"id": {"any_": [deployment_id]}}}).json()

    def run_to_end(self, flow_run_id: str, logs: list[Path]) -> dict:
        def finished():
            run = self.get(f"/flow_runs/{flow_run_id}")
            return run if run and run["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None

        run = _wait_for("flow run", finished, RUN_SECONDS, [self.log, *logs])
        if run["state_type"] != "COMPLETED":
            pytest.fail(f"flow run ended {run['state_type']}: {run['state']['message']}\n"
                        + "\n".join(_tail(p) for p in logs))
        return run

    def create_run(self, deployment_id: str, parameters: dict) -> httpx.Response:
        # The request the UI's Run button sends.
        return self.post(f"/deployments/{deployment_id}/create_flow_run", {"parameters": parameters, "state": {"type": "SCHEDULED"}})


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    # Both database variants embed the same slice: the second reuses the first's embeddings.
    return tmp_path_factory.mktemp("server-cache")


@pytest.fixture(scope="module", params=[
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.skipif(
        not _postgres_enabled(), reason="the PostgreSQL variant runs with SELECTFLOW_TEST_POSTGRES=1 (it installs and starts PostgreSQL)")),
])
def server(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"server-{request.param}")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(root / "home"), "TMPDIR": str(root / "tmp"), "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_API_LOG_RETRYABLE_ERRORS": "true", "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{root / 'prefect.db'}",
    })
    (root / "tmp").mkdir()
    pg_dir, auth = None, None
    if request.param == "postgres":
        # The production setup: PostgreSQL, and API authentication as when the server is exposed.
        auth = ("admin", os.urandom(8).hex())
        env["PREFECT_SERVER_API_AUTH_STRING"] = ":".join(auth)
        started = subprocess.run(["bash", str(REPO / "infra" / "postgres.sh"), "start", str(_free_port())],
                                 capture_output=True, text=True, timeout=600)
        assert started.returncode == 0, started.stderr
        exports = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.split("\n") if line)
        pg_dir = exports["SELECTFLOW_PG_DIR"]
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = exports["PREFECT_API_DATABASE_CONNECTION_URL"]
    log = root / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([PREFECT, "server", "start"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=root)
    api = f"http://127.0.0.1:{port}/api"
    srv = Server(request.param, api, env, root, log, auth)
    try:
        _wait_for("server health", lambda: srv.get("/health"), BOOT_SECONDS, [log], [proc])
        # Clients get the server's URL and their own home, like a user's shell.
        if auth:
            assert httpx.post(f"{api}/deployments/filter", json={}).status_code == 401
            env = {k: v for k, v in env.items() if k != "PREFECT_SERVER_API_AUTH_STRING"}
            env["PREFECT_API_AUTH_STRING"] = ":".join(auth)
        srv.env = {**env, "PREFECT_API_URL": api, "PREFECT_HOME": str(root / "client-home"),
                   "PREFECT_RUNNER_POLL_FREQUENCY": "1", "PREFECT_WORKER_QUERY_SECONDS": "1"}
        yield srv
    finally:
        srv.http.close()
        _stop(proc)
        if pg_dir:
            subprocess.run(["bash", str(REPO / "infra" / "postgres.sh"), "stop", pg_dir], capture_output=True, timeout=120)


def _far_cron() -> str:
    # A daily schedule twelve hours away: its runs exist on the server but never start during the test.
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=12)
    return f"{later.minute} {later.hour} * * *"


@pytest.fixture(scope="module")
def served(server, bundled_slice, shared_cache):
    cron = _far_cron()
    log = server.root / "serve.log"
    args = [sys.executable, "-m", "selectflow.flows.cli", "serve", str(bundled_slice), "--id", "id", "--group", "source",
            "--device", "cpu", "--batch-size", "32", "--budget", "0.25", "--out", str(server.root / "scheduled-out"),
            "--cache-dir", str(shared_cache), "--name", "test", "--cron", cron, "--embed-cron", "",
            "--timezone", "UTC"]
    with open(log, "w") as out:
        proc = subprocess.Popen(args, env=server.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=server.root)
    try:
        select = _wait_for("select-subset deployment", lambda: server.deployment("select-subset", "test"),
                           120, [log], [proc])
        embed = _wait_for("embed-corpus deployment", lambda: server.deployment("embed-corpus", "test"), 30, [log], [proc])
        yield {"select": select, "embed": embed, "cron": cron, "log": log, "proc": proc}
    finally:
        _stop(proc, signal.SIGINT)


def _ui_parameters(bundled_slice: Path, out_dir: Path, cache: Path, budget) -> dict:
    return {
        "corpus": {"path": str(bundled_slice), "text_columns": [], "id_column": "id", "quality_column": None,
                   "label_column": "source", "group_column": "source"},
        "encoder": {"model": None, "device": "cpu", "batch_size": 32, "index": "flat"},
        "selection": {"sampler": {"name": "kmeans"}, "budget": budget, "seed": 5},
        "output": {"out_dir": str(out_dir), "overwrite": False, "cache_dir": str(cache)},
    }


def test_served_deployments_carry_schedule_defaults_and_form(server, served, bundled_slice):
    dep = served["select"]
    assert [s["schedule"]["cron"] for s in dep["schedules"]] == [served["cron"]]
    assert dep["schedules"][0]["schedule"]["timezone"] == "UTC" and dep["schedules"][0]["active"]
    assert served["embed"]["schedules"] == []
    assert dep["enforce_parameter_schema"] is True
    # Its runs and the embed deployment's share the corpus's concurrency limit (flows/exclusive.py), created by serve.
    lock = [t for t in dep["tags"] if t.startswith("selectflow-exclusive:")]
    assert len(lock) == 1 and lock[0] in served["embed"]["tags"]
    assert server.get(f"/v2/concurrency_limits/{lock[0].split(':', 1)[1]}")["limit"] == 1
    # The command's options became the deployment's defaults, with absolute paths.
    assert dep["parameters"]["corpus"]["path"] == str(bundled_slice.resolve())
    assert dep["parameters"]["selection"]["budget"] == 0.25
    assert Path(dep["parameters"]["output"]["out_dir"]).is_absolute()
    # The form: every field of every parameter model has a description; choices and bounds are in the schema.
    schema = dep["parameter_openapi_schema"]
    for model_name, model in schema["definitions"].items():
        for field_name, field in model["properties"].items():
            assert field.get("description"), f"{model_name}.{field_name} has no description in the UI form"
    selection = schema["definitions"]["SelectionParams"]["properties"]
    # The sampler is a tagged union: one branch per sampler, with its options only, titled and keyed by its name.
    branches = [schema["definitions"][ref["$ref"].split("/")[-1]] for ref in selection["sampler"]["oneOf"]]
    assert {"kmeans", "random"} <= {b["title"] for b in branches} and selection["sampler"]["discriminator"]["propertyName"] == "name"
    kmeans = next(b for b in branches if b["title"] == "kmeans")
    assert "k" in kmeans["properties"] and "greedy_fraction" not in kmeans["properties"]
    budget = {branch["type"]: branch for branch in selection["budget"]["anyOf"]}
    assert {b["title"] for b in budget.values()} == {"rows", "fraction"}
    assert budget["integer"]["minimum"] == 1
    assert budget["number"]["exclusiveMinimum"] == 0 and budget["number"]["exclusiveMaximum"] == 1
    assert schema["definitions"]["EncoderParams"]["properties"]["device"]["enum"] == ["auto", "cpu", "cuda"]
    # The scheduler turns the cron schedule into scheduled runs (it silently does not with SQLAlchemy 2.1).
    scheduled = _wait_for("scheduled runs", lambda: server.post("/flow_runs/filter", {
        "deployments": {"id": {"any_": [dep["id"]]}}, "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
    }).json(), 90, [server.log])
    assert all(run["parameters"]["selection"]["budget"] == 0.25 for run in scheduled)


def test_run_created_like_the_ui_completes_with_outputs_and_artifacts(server, served, bundled_slice, shared_cache):
    out_dir = server.root / "ui-run"
    created = server.create_run(served["select"]["id"], _ui_parameters(bundled_slice, out_dir, shared_cache, BUDGET))
    assert created.status_code == 201, created.text
    run = server.run_to_end(created.json()["id"], [served["log"]])
    out_dir = history.latest_run(out_dir)  # a deployment run writes its own subfolder (tests/flows/test_run_history.py)

    selected = pl.read_parquet(out_dir / "selected.parquet")
    source = pl.read_parquet(bundled_slice)
    assert selected.height == BUDGET and selected["id"].n_unique() == BUDGET and set(selected["id"]) <= set(source["id"])
    assert (selected["sf_sampler"] == "kmeans").all()
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["seed"] == 5 and manifest["rows"]["selected"] == BUDGET and manifest["rows"]["read"] == source.height
    assert manifest["input"]["path"] == str(bundled_slice.resolve())

    artifacts = server.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()
    by_key = {a["key"]: a for a in artifacts if a["key"]}
    # Keys carry the deployment ('test') and the sampler, so every deployment and sampler keeps its own history.
    summary, composition, report = "selection-summary-test-kmeans", "selection-composition-test-kmeans", "selection-report-test-kmeans"
    assert {summary, composition, report} <= set(by_key)
    assert "Selection: kmeans" in by_key[summary]["data"] and "Against random" in by_key[summary]["data"]
    assert by_key[summary]["type"] == "markdown" and by_key[composition]["type"] == "table"
    assert str(out_dir / "report.html") in by_key[report]["data"] and "file://" not in by_key[report]["data"]
    # The served run's logs reach the server (the CLI silences Prefect's logs for `select`, not for `serve`).
    # Logs are shipped in batches after the state change: wait for the last one.
    _wait_for("the run's final log line", lambda: any(
        "Finished in state Completed" in entry["message"]
        for entry in server.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}}}).json()
    ), 30, [served["log"]])


@pytest.mark.parametrize("budget", [1.5, 0, -3, "5%"])
def test_invalid_budget_is_rejected_when_the_run_is_created(server, served, bundled_slice, shared_cache, budget):
    dep_id = served["select"]["id"]
    before = server.flow_run_count(dep_id)
    response = server.create_run(dep_id, _ui_parameters(bundled_slice, server.root / "never", shared_cache, budget))
    assert response.status_code == 409, response.text
    assert "selection.budget" in response.json()["detail"]
    assert server.flow_run_count(dep_id) == before


@pytest.fixture(scope="module")
def yaml_deployed(server) -> dict:
    spec = yaml.safe_load((REPO / "infra" / "prefect.yaml").read_text())
    pool = spec["definitions"]["work_pools"]["process"]["name"]
    # What `prefect work-pool create NAME --type process` sends, without paying for another CLI start.
    from prefect.workers.process import ProcessWorker

    created = server.post("/work_pools/", {"name": pool, "type": "process",
                                           "base_job_template": ProcessWorker.get_default_base_job_template()})
    assert created.status_code == 201, created.text
    deployed = subprocess.run([PREFECT, "--no-prompt", "deploy", "--all", "--prefect-file", "infra/prefect.yaml"],
                              env=server.env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    return spec


def test_prefect_yaml_deploys_every_deployment_to_the_process_work_pool(server, yaml_deployed):
    pool = yaml_deployed["definitions"]["work_pools"]["process"]["name"]
    for entry in yaml_deployed["deployments"]:
        flow_name = {"select_subset": "select-subset", "embed_corpus": "embed-corpus"}[entry["entrypoint"].split(":")[1]]
        dep = server.deployment(flow_name, entry["name"])
        assert dep is not None, f"{entry['name']} was not deployed"
        assert dep["work_pool_name"] == pool and dep["entrypoint"] == entry["entrypoint"]
        assert [s["schedule"]["cron"] for s in dep["schedules"]] == [s["cron"] for s in entry.get("schedules", [])]
        # Any worker can run it: the pull steps clone the repository and install it, and the entrypoint is a
        # module path (the repository URL is this checkout here only because it has no origin remote).
        clone, install = dep["pull_steps"]
        assert "prefect.deployments.steps.git_clone" in clone and "prefect.deployments.steps.run_shell_script" in install
        assert str(REPO) not in dep["entrypoint"] and not dep["entrypoint"].startswith("flows/")

    nightly = server.deployment("select-subset", "nightly-kmeans")
    rejected = server.create_run(nightly["id"], {"selection": {"sampler": {"name": "kmeans"}, "budget": 1.5}})
    assert rejected.status_code == 409 and "selection.budget" in rejected.json()["detail"]


def test_a_worker_runs_the_prefect_yaml_deployment(server, yaml_deployed, bundled_slice, shared_cache):
    if server.backend != "postgres":
        # Each flow run costs a fresh interpreter importing torch; SQLite runs the served deployment instead.
        pytest.skip("the worker run belongs to the PostgreSQL variant (the production setup)")
    pool = yaml_deployed["definitions"]["work_pools"]["process"]["name"]
    nightly = server.deployment("select-subset", "nightly-kmeans")
    out_dir = server.root / "worker-run"
    created = server.create_run(nightly["id"], _ui_parameters(bundled_slice, out_dir, shared_cache, 7))
    assert created.status_code == 201, created.text
    log = server.root / "worker.log"
    with open(log, "w") as out:
        # One poll, then wait for the runs it started (`--limit` makes --run-once wait for them).
        worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", pool, "--run-once", "--limit", "1"],
                                  # selectflow is installed in this interpreter already: the pull step's install is skipped
                                  # (tests/flows/test_deploy_worker.py runs it into a fresh venv)
                                  env={**server.env, "SELECTFLOW_INSTALL": "true"}, cwd=server.root, stdout=out,
                                  stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        worker.wait(RUN_SECONDS)
    except subprocess.TimeoutExpired:
        _stop(worker)
    server.run_to_end(created.json()["id"], [log])
    assert pl.read_parquet(history.latest_run(out_dir) / "selected.parquet").height == 7


@pytest.mark.parametrize("kwargs,message", [
    ({"select_cron": "every night"}, "--cron 'every night' is not a cron expression"),
    ({"select_cron": None, "embed_cron": "61 * * * *"}, "--embed-cron '61 * * * *' is not a cron expression"),
    ({"timezone": "Mars/Olympus"}, "--timezone 'Mars/Olympus' is not an IANA time zone"),
])
def test_bad_schedules_are_config_errors_before_anything_is_registered(kwargs, message):
    from selectflow.flows.serve import build_deployments
    from selectflow.tasks.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("*", r"\*")):
        build_deployments(**kwargs)


def test_build_deployments_makes_paths_absolute_and_schedules_only_what_is_asked(tmp_path, monkeypatch):
    from selectflow.flows.params import OutputParams
    from selectflow.flows.runners import RunnerParams
    from selectflow.flows.serve import build_deployments

    monkeypatch.chdir(tmp_path)
    select, embed = build_deployments(name="n", select_cron="15 2 * * 1", embed_cron=None, timezone="Europe/Berlin",
                                      output=OutputParams(out_dir="runs/a", cache_dir="c"),
                                      runner=RunnerParams(shard_rows=4096))
    assert select.parameters["runner"]["shard_rows"] == embed.parameters["runner"]["shard_rows"] == 4096
    assert (select.name, embed.name) == ("n", "n")
    assert [(s.schedule.cron, s.schedule.timezone) for s in select.schedules] == [("15 2 * * 1", "Europe/Berlin")]
    assert not embed.schedules
    assert select.parameters["output"]["out_dir"] == str(tmp_path / "runs" / "a")
    assert select.parameters["output"]["cache_dir"] == embed.parameters["cache_dir"] == str(tmp_path / "c")
    assert Path(select.parameters["corpus"]["path"]).is_absolute()


def test_serve_without_a_server_is_a_one_line_error(capsys, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from selectflow.flows import serve
    from selectflow.flows.cli import main

    def must_not_serve(**_):  # would start a temporary API and serve forever
        raise AssertionError("serve_flows was called without a server")

    monkeypatch.setattr(serve, "serve_flows", must_not_serve)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        code = main(["serve"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("selectflow: error: selectflow serve needs a Prefect server") and len(err.splitlines()) == 1

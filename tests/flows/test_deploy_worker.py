"""Deployments any worker can run (issue #14, part 1): infra/prefect.yaml deployed from the checkout runs on a
worker that shares nothing with the checkout but the git repository.

A real Prefect server (SQLite) on loopback; `prefect deploy --all` from the repository root, as infra/server.md
says; then a process worker started in another, empty directory, with its own HOME, TMPDIR and PREFECT_HOME and
its own interpreter: a fresh virtual environment in which selectflow is not installed. The deployment's pull
steps clone the repository (a local clone of this checkout's committed HEAD stands in for the team's remote)
and install it into that environment; the run is created through the API as the UI's Run button does and must
complete and write its selection. The fresh environment sees the test environment's site-packages through a
.pth file, so no dependency is downloaded (SELECTFLOW_INSTALL adds --no-deps) and the shared environment is
never written to. About 1.5-2 minutes on 2 busy cores.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import polars as pl
import pytest
import yaml

from selectflow.flows import history
from tests.flows.test_server import BOOT_SECONDS, PREFECT, RUN_SECONDS, Server, _free_port, _stop, _tail, _wait_for

REPO = Path(__file__).resolve().parents[2]
PREFECT_YAML = REPO / "infra" / "prefect.yaml"
FLOW_NAMES = {"select_subset": "select-subset", "embed_corpus": "embed-corpus"}
MODULE_ENTRYPOINT = re.compile(r"^selectflow(\.\w+)+:\w+$")
BUDGET = 10

needs_git = pytest.mark.skipif(shutil.which("git") is None,
                               reason="git is not installed: the deployments' pull steps clone the repository with git")


def _git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def _spec() -> dict:
    return yaml.safe_load(PREFECT_YAML.read_text())


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> tuple[Path, str]:
    """The repository workers clone: a local clone of the checkout's committed HEAD, on a named branch."""
    root = tmp_path_factory.mktemp("origin")
    _git("clone", "--quiet", str(REPO), str(root / "selectflow.git"), cwd=root)
    repo = root / "selectflow.git"
    branch = subprocess.run(["git", "symbolic-ref", "--quiet", "--short", "HEAD"], cwd=repo,
                            capture_output=True, text=True).stdout.strip()
    if not branch:  # a detached checkout (CI): give HEAD a branch name the pull step can clone
        branch = "selectflow-deploy-test"
        _git("switch", "--quiet", "-c", branch, cwd=repo)
    return repo, branch


def _fresh_python(root: Path) -> Path:
    """A fresh interpreter without selectflow: a venv that sees the test environment's site-packages (prefect,
    torch, ...) through a .pth line. A plain path line: the shared environment's own .pth files, among them the
    editable selectflow install, are not run, so `import selectflow` fails until the pull step installs it."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "selectflow-test-shared-site-packages.pth").write_text("\n".join(sorted(shared)) + "\n")
    probe = subprocess.run([str(python), "-c", "import prefect, selectflow"], capture_output=True, text=True,
                           cwd=root, env={"PATH": os.environ["PATH"], "HOME": str(root)})
    assert "No module named 'selectflow'" in probe.stderr, probe.stderr
    return python


@pytest.fixture(scope="module")
def worker_python(tmp_path_factory) -> Path:
    return _fresh_python(tmp_path_factory.mktemp("worker-venv"))


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    # Its own venv: the worker's gets selectflow installed by the pull step.
    return _fresh_python(tmp_path_factory.mktemp("bare-venv"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy-server")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(root / "home"), "TMPDIR": str(root / "tmp"), "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{root / 'prefect.db'}",
    })
    (root / "tmp").mkdir()
    log = root / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([PREFECT, "server", "start"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=root)
    api = f"http://127.0.0.1:{port}/api"
    srv = Server("sqlite", api, env, root, log, None)
    try:
        _wait_for("server health", lambda: srv.get("/health"), BOOT_SECONDS, [log], [proc])
        srv.env = {**env, "PREFECT_API_URL": api, "PREFECT_HOME": str(root / "client-home")}
        pool = _spec()["definitions"]["work_pools"]["process"]["name"]
        from prefect.workers.process import ProcessWorker

        created = srv.post("/work_pools/", {"name": pool, "type": "process",
                                            "base_job_template": ProcessWorker.get_default_base_job_template()})
        assert created.status_code == 201, created.text
        yield srv
    finally:
        srv.http.close()
        _stop(proc)


def _deploy(python_or_prefect: list[str], server: Server, origin: tuple[Path, str], *args: str):
    env = {**server.env, "SELECTFLOW_REPO": str(origin[0]), "SELECTFLOW_BRANCH": origin[1]}
    return subprocess.run([*python_or_prefect, "--no-prompt", "deploy", *args, "--prefect-file", "infra/prefect.yaml"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def deployed(server, origin) -> dict:
    done = _deploy([PREFECT], server, origin, "--all")
    assert done.returncode == 0, done.stdout + done.stderr
    deployments = {}
    for entry in _spec()["deployments"]:
        flow = FLOW_NAMES[entry["entrypoint"].split(":")[1]]
        deployments[entry["name"]] = server.deployment(flow, entry["name"])
        assert deployments[entry["name"]] is not None, f"{entry['name']} was not deployed\n{done.stdout}"
    return deployments


@needs_git
def test_deploying_where_selectflow_cannot_be_imported_fails_loudly(server, origin, bare_python):
    # A file-path entrypoint would fall back to parsing the source and deploy a schema without types (server-side
    # validation gone, without a word); a module-path entrypoint must stop the deploy instead.
    before = server.post("/deployments/count", {}).json()
    done = _deploy([str(bare_python), "-m", "prefect"], server, origin, "--name", "nightly-kmeans")
    assert done.returncode != 0, done.stdout + done.stderr
    assert "No module named 'selectflow'" in done.stdout + done.stderr
    assert server.post("/deployments/count", {}).json() == before


@needs_git
def test_deployments_record_module_paths_pull_steps_and_a_typed_schema(server, deployed, origin):
    spec = _spec()
    repo, branch = origin
    for entry in spec["deployments"]:
        dep = deployed[entry["name"]]
        assert dep["entrypoint"] == entry["entrypoint"] and MODULE_ENTRYPOINT.match(dep["entrypoint"]), dep["entrypoint"]
        # Nothing the worker uses points into the deploying checkout: the pull steps clone the recorded repository.
        recorded = json.dumps({k: dep[k] for k in ("entrypoint", "path", "pull_steps", "parameters", "job_variables")})
        assert str(REPO) not in recorded, recorded
        clone, install = dep["pull_steps"]
        assert clone["prefect.deployments.steps.git_clone"]["repository"] == str(repo)
        assert clone["prefect.deployments.steps.git_clone"]["branch"] == branch
        step = install["prefect.deployments.steps.run_shell_script"]
        assert step["directory"] == "{{ clone.directory }}" and "-c constraints.txt" in step["script"]
        # The parameter schema keeps its types: it came from importing the flow, not from parsing its source.
        schema = dep["parameter_openapi_schema"]
        assert {"CorpusParams", "EncoderParams"} <= set(schema.get("definitions", {})), sorted(schema)
        for name in ("corpus", "encoder"):
            assert schema["properties"][name].get("$ref", "").startswith("#/definitions/"), schema["properties"][name]
        assert dep["enforce_parameter_schema"] is True
    select = deployed["nightly-kmeans"]["parameter_openapi_schema"]
    assert {"SelectionParams", "OutputParams"} <= set(select["definitions"])
    assert "#/definitions/RandomChoice" in select["definitions"]["SelectionParams"]["properties"]["sampler"]["discriminator"]["mapping"].values()
    # The check infra/server.md gives after a deploy.
    inspected = subprocess.run([PREFECT, "deployment", "inspect", "select-subset/nightly-kmeans"], env=server.env,
                               capture_output=True, text=True, timeout=120)
    assert inspected.returncode == 0 and "CorpusParams" in inspected.stdout, inspected.stdout + inspected.stderr
    # ... so the server validates runs at creation, as the UI's Run form needs.
    rejected = server.create_run(deployed["nightly-kmeans"]["id"], {"selection": {"sampler": {"name": "random"}, "budget": 1.5}})
    assert rejected.status_code == 409 and "selection.budget" in rejected.json()["detail"], rejected.text


@needs_git
def test_a_worker_in_a_clean_directory_clones_installs_and_runs_the_deployment(server, deployed, worker_python,
                                                                               bundled_slice):
    pool = _spec()["definitions"]["work_pools"]["process"]["name"]
    root = server.root / "worker"
    home, tmp, cwd = root / "home", root / "tmp", root / "cwd"
    for folder in (home, tmp, cwd):
        folder.mkdir(parents=True)
    # A small corpus and a quick sampler; the output folder and the cache are the deployment's defaults, which
    # must outlive the temporary directory the worker runs the flow (and the clone) in.
    nightly = deployed["nightly-kmeans"]
    out_dir = home / Path(nightly["parameters"]["output"]["out_dir"].removeprefix("~/"))
    assert nightly["parameters"]["output"]["out_dir"].startswith("~/") and nightly["parameters"]["output"]["cache_dir"] is None
    created = server.create_run(nightly["id"], {
        "corpus": {"path": str(bundled_slice), "text_columns": [], "id_column": "id", "group_column": "source"},
        "encoder": {"device": "cpu", "batch_size": 32, "index": "flat"},
        "selection": {"sampler": {"name": "random"}, "budget": BUDGET, "seed": 0},
    })
    assert created.status_code == 201, created.text

    # Only what a worker's shell would have: no PYTHONPATH, no SELECTFLOW_CACHE, nothing of the test's Prefect home.
    env = {
        "PATH": f"{worker_python.parent}:{Path(shutil.which('git')).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home), "TMPDIR": str(tmp),
        "LANG": "C.UTF-8", "PREFECT_HOME": str(home / ".prefect"), "PREFECT_API_URL": server.api,
        "PREFECT_WORKER_QUERY_SECONDS": "1", "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        # The dependencies are the test environment's (through the .pth line): install selectflow alone, offline.
        "SELECTFLOW_INSTALL": f"{worker_python} -m pip install --quiet --no-deps --no-build-isolation --no-index "
                              "-c constraints.txt .",
    }
    log = root / "worker.log"
    with open(log, "w") as out:
        # One poll, then wait for the run it started (`--limit` makes --run-once wait for it).
        worker = subprocess.Popen([str(worker_python), "-m", "prefect", "worker", "start", "--pool", pool,
                                   "--run-once", "--limit", "1"],
                                  env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        worker.wait(RUN_SECONDS)
    except subprocess.TimeoutExpired:
        _stop(worker)
    run = server.run_to_end(created.json()["id"], [log])

    out_dir = history.latest_run(out_dir)  # a deployment run writes its own subfolder of the output root
    selected = pl.read_parquet(out_dir / "selected.parquet")
    assert selected.height == BUDGET and set(selected["id"]) <= set(pl.read_parquet(bundled_slice)["id"])
    assert json.loads((out_dir / "manifest.json").read_text())["rows"]["selected"] == BUDGET
    assert any((home / ".cache" / "selectflow").iterdir()), "the embedding cache is not under the worker's HOME"
    # The code that ran is the clone's, installed into the worker's own environment; the shared one is untouched.
    site = Path(subprocess.run([str(worker_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    assert (site / "selectflow" / "flows" / "pipeline.py").exists(), _tail(log)
    assert list(Path(sysconfig.get_paths()["purelib"]).glob("__editable__*selectflow*.pth"))
    messages = [e["message"] for e in server.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}}}).json()]
    assert "Executing deployment step: git_clone" in messages and "All deployment steps completed successfully" in messages


DOCKER_BLOCK = re.compile(r"^# DOCKER-VARIANT-BEGIN\n(.*?)^# DOCKER-VARIANT-END", re.M | re.S)


def test_the_commented_docker_variant_mirrors_every_process_deployment():
    text = PREFECT_YAML.read_text()
    block = DOCKER_BLOCK.search(text)
    assert block, "infra/prefect.yaml lost its DOCKER-VARIANT-BEGIN/END block"
    uncommented = "\n".join(line[1:] for line in block.group(1).splitlines())
    spec = yaml.safe_load(text.replace(block.group(1), uncommented + "\n"))
    process = {d["name"]: d for d in spec["deployments"] if d["work_pool"]["name"] == "selectflow-process"}
    docker = {d["name"]: d for d in spec["deployments"] if d["work_pool"]["name"] == "selectflow-docker"}
    assert set(docker) == {f"{name}-docker" for name in process}
    pool = spec["definitions"]["work_pools"]["docker"]
    assert pool["job_variables"]["image"] and pool["job_variables"]["env"] == \
        spec["definitions"]["work_pools"]["process"]["job_variables"]["env"]
    for name, dep in docker.items():
        twin = process[name.removesuffix("-docker")]
        for key in ("entrypoint", "schedules", "tags", "concurrency_limit"):
            assert dep.get(key) == twin.get(key), (name, key)
        # Same parameters, except that outputs and caches go to the container's volumes.
        params, twin_params = dict(dep["parameters"]), dict(twin["parameters"])
        for key in ("output", "cache_dir"):
            params.pop(key, None), twin_params.pop(key, None)
        assert params == twin_params, name
        mounts = [v.split(":")[1] for v in pool["job_variables"]["volumes"]]
        for path in (dep["parameters"].get("output", {}).get("out_dir"), dep["parameters"].get("cache_dir")):
            assert path is None or any(path.startswith(m) for m in mounts), (name, path)


def test_every_file_the_dockerfile_copies_exists_and_reaches_the_build_context():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert "-c constraints.txt" in dockerfile and "HF_HUB_OFFLINE=1" in dockerfile
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    copied = []
    for line in dockerfile.splitlines():
        if line.startswith(("COPY", "ADD")):
            words = [w for w in line.split()[1:] if not w.startswith("--")]
            copied += words[:-1]
    assert copied, "the Dockerfile copies nothing"
    for source in copied:
        assert (REPO / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        assert source not in ignored and source.split("/")[0] not in ignored, f".dockerignore excludes {source}"
    # Everything `pip install .` reads: the packages of pyproject.toml come from copied folders, and its readme.
    pyproject = (REPO / "pyproject.toml").read_text()
    for folder in set(re.findall(r'"selectflow\.\w+" = "(\w+)"', pyproject)):
        assert folder in copied, f"pyproject.toml installs {folder}/, which the Dockerfile does not copy"
    assert "README.md" in copied and "constraints.txt" in copied

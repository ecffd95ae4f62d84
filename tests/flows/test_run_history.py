"""Run history and readable run names (issue #14, part 2).

Deployment runs write each into their own subfolder of the output root, and `latest` names the last
completed one; CLI runs write where --out says. The served-deployment test reuses tests/flows/test_server.py's
real server and `selectflow serve` process (its fixtures, imported).
"""

import datetime
import json
from pathlib import Path
from types import SimpleNamespace
from uuid import UUID

import polars as pl
import pytest

from selectflow.flows import history
from tests.flows.test_server import _ui_parameters, served, server, shared_cache  # noqa: F401  (fixtures)


@pytest.mark.parametrize("budget,label", [(0.05, "5pct"), (0.25, "25pct"), (0.025, "2.5pct"), (500, "500rows"), (12, "12rows")])
def test_budget_labels(budget, label):
    assert history.budget_label(budget) == label


@pytest.mark.parametrize("path,label", [("/data/instructions.parquet", "instructions"), ("s3://bucket/corpora/web.jsonl", "web"),
                                        ("/data/shards/", "shards"), ("/data/part *.parquet", "part")])
def test_corpus_labels(path, label):
    assert history.corpus_label(path) == label


def test_flow_run_names_say_sampler_budget_and_corpus(monkeypatch):
    from selectflow.flows.params import CorpusParams, SelectionParams, bundled_corpus

    corpus = CorpusParams(path="/data/instructions.parquet")
    params = {"corpus": corpus, "selection": SelectionParams(sampler="kmeans", budget=0.05)}
    monkeypatch.setattr(history, "_parameters", lambda: params)
    assert history.select_subset_run_name() == "kmeans-5pct-instructions"
    assert history.embed_corpus_run_name() == "embed-instructions"
    params.update(samplers=["kmeans", {"name": "mig"}, "kmeans"], selection=SelectionParams(budget=500))
    assert history.select_many_run_name() == "kmeans+mig-500rows-instructions"
    # Parameters as plain JSON (a run whose parameters were not validated into models), and the defaults.
    params.clear()
    params.update(corpus={"path": "/x/web.jsonl"}, selection={"sampler": {"name": "mig"}, "budget": 200})
    assert history.select_subset_run_name() == "mig-200rows-web"
    params.clear()
    assert history.select_subset_run_name() == f"coverage-5pct-{Path(bundled_corpus()).stem}"


def _fake_run_context(monkeypatch, deployment_id):
    from prefect import context

    run = SimpleNamespace(deployment_id=deployment_id, name="kmeans-5pct-instructions",
                          id=UUID("1a2b3c4d-0000-0000-0000-000000000000"), start_time=None,
                          expected_start_time=datetime.datetime(2025, 3, 1, 3, 0, 5, tzinfo=datetime.timezone.utc))
    monkeypatch.setattr(context.FlowRunContext, "get", classmethod(lambda cls: SimpleNamespace(flow_run=run)))


def test_only_deployment_runs_get_their_own_folder(tmp_path, monkeypatch):
    assert history.run_output_dir(str(tmp_path)) == (str(tmp_path), None)  # no flow run at all
    _fake_run_context(monkeypatch, deployment_id=None)  # a CLI run
    assert history.run_output_dir(str(tmp_path)) == (str(tmp_path), None)
    _fake_run_context(monkeypatch, deployment_id=UUID(int=7))
    folder, root = history.run_output_dir(str(tmp_path))
    assert root == str(tmp_path) and folder == str(tmp_path / "20250301T030005Z-kmeans-5pct-instructions-1a2b3c4d")


def test_latest_names_the_last_completed_run_and_is_replaced_atomically(tmp_path):
    for name in ("run-1", "run-2"):
        (tmp_path / name).mkdir()
        history.mark_latest(str(tmp_path), tmp_path / name)
        assert (tmp_path / "latest").read_text() == f"{name}\n"
        assert history.latest_run(tmp_path) == tmp_path / name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "run-1", "run-2"]  # no temporary left behind


def test_two_runs_of_a_served_deployment_keep_two_reports(server, served, bundled_slice, shared_cache):  # noqa: F811
    root = server.root / "history"
    runs = []
    for _ in range(2):
        created = server.create_run(served["select"]["id"], _ui_parameters(bundled_slice, root, shared_cache, 12))
        assert created.status_code == 201, created.text
        runs.append(server.run_to_end(created.json()["id"], [served["log"]]))

    folders = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(folders) == 2
    by_run = {}
    for run in runs:
        assert run["name"] == "kmeans-12rows-slice"
        [folder] = [f for f in folders if f.name.endswith(run["id"].replace("-", "")[:8])]
        assert "kmeans-12rows-slice" in folder.name
        assert (folder / "report.html").exists() and pl.read_parquet(folder / "selected.parquet").height == 12
        assert json.loads((folder / "manifest.json").read_text())["rows"]["selected"] == 12
        by_run[run["id"]] = folder
    assert history.latest_run(root) == by_run[runs[1]["id"]]
    # Each run's artifacts point at its own folder, never at the other run's.
    for run in runs:
        own, other = by_run[run["id"]], [f for f in folders if f != by_run[run["id"]]][0]
        artifacts = server.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()
        texts = [json.dumps(a.get("data")) + json.dumps(a.get("description")) for a in artifacts]
        assert any(own.name in t for t in texts), texts
        assert not any(other.name in t for t in texts)

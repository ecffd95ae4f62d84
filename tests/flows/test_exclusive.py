"""No overlapping scheduled runs: the deployments of one corpus share a global concurrency limit (limit 1).

The deployments (infra/prefect.yaml, `selectflow serve`) carry the shared limit as a tag; a deployment's run holds
it for the whole run (checked against the test harness's API: while held, no other slot is free); runs without a
deployment (the CLI, subflows) hold nothing.
"""

from pathlib import Path

import pytest
import yaml

from selectflow.flows import exclusive
from selectflow.flows.exclusive import EXCLUSIVE_TAG, corpus_limit_name, exclusive_limits, exclusive_tag

REPO = Path(__file__).resolve().parents[2]


def test_limits_come_from_the_tags():
    tags = ["selectflow", exclusive_tag("a"), "select", exclusive_tag("b"), exclusive_tag("a"), EXCLUSIVE_TAG]
    assert exclusive_limits(tags) == ["a", "b"] and exclusive_limits(None) == []
    assert corpus_limit_name("/data/My Corpus.parquet") == corpus_limit_name("/data/My Corpus.parquet")
    assert corpus_limit_name("/data/My Corpus.parquet").startswith("selectflow-corpus-my-corpus-")
    assert corpus_limit_name("/a/x.parquet") != corpus_limit_name("/b/x.parquet")


def test_the_prefect_yaml_deployments_of_the_corpus_share_one_limit():
    spec = yaml.safe_load((REPO / "infra" / "prefect.yaml").read_text())
    limits = {d["name"]: exclusive_limits(d.get("tags", [])) for d in spec["deployments"]}
    assert limits["nightly-kmeans"] == limits["weekly-mig"] == limits["embed"] == ["selectflow-corpus-instructions"]


def test_served_deployments_share_their_corpus_limit(tmp_path):
    from selectflow.flows.params import CorpusParams
    from selectflow.flows.serve import build_deployments

    one = build_deployments(name="nightly", corpus=CorpusParams(path=str(tmp_path / "c.parquet")))
    two = build_deployments(name="weekly", select_cron="30 1 * * 0", corpus=CorpusParams(path=str(tmp_path / "c.parquet")))
    other = build_deployments(name="other", corpus=CorpusParams(path=str(tmp_path / "d.parquet")))
    shared = {tuple(exclusive_limits(d.tags)) for d in one + two}
    assert shared == {(corpus_limit_name(str(tmp_path / "c.parquet")),)}
    assert {tuple(exclusive_limits(d.tags)) for d in other} != shared


def test_a_deployment_run_holds_its_limits_for_the_whole_run(monkeypatch):
    events = []

    class Held:
        def __init__(self, limits):
            self.limits = limits

        def __enter__(self):
            events.append(("hold", tuple(self.limits)))

        def __exit__(self, *exc):
            events.append(("release", tuple(self.limits)))

    monkeypatch.setattr(exclusive, "hold", Held)
    monkeypatch.setattr(exclusive, "_deployment_run_limits", lambda: ["selectflow-corpus-x"])
    monkeypatch.setattr("prefect.logging.get_run_logger", lambda: __import__("logging").getLogger("test"))

    @exclusive.exclusive
    def body(a, b=2):
        events.append(("run", a + b))
        return a + b

    assert body(1) == 3
    assert events == [("hold", ("selectflow-corpus-x",)), ("run", 3), ("release", ("selectflow-corpus-x",))]


def test_the_flows_keep_their_signature_and_only_deployment_runs_hold_a_limit():
    import inspect

    from selectflow.flows.pipeline import embed_corpus, select_many, select_subset

    for flow in (embed_corpus, select_subset, select_many):
        assert "corpus" in inspect.signature(flow.fn).parameters and flow.fn.__wrapped__
    assert exclusive._deployment_run_limits() == []  # no flow run: the CLI and tests hold nothing


@pytest.mark.usefixtures("prefect_harness")
def test_while_one_run_holds_the_corpus_limit_no_other_can_take_it():
    from selectflow.tasks.concurrency_limits import prefect_try_acquire

    name = "selectflow-corpus-test-exclusive"
    with exclusive.hold([name]):  # created with limit 1 when missing, then held
        assert prefect_try_acquire(name) is None
    lease = prefect_try_acquire(name)
    assert lease is not None
    lease.close()

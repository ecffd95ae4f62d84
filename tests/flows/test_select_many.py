"""Several samplers on one embedding pass, compared in one report."""

import json

import pytest

from selectflow.flows.cli import main

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_comma_separated_samplers_share_one_embedding_pass(tmp_path, bundled_slice, capsys):
    out = tmp_path / "many"
    code = main(["select", str(bundled_slice), "--id", "id", "--group", "source", "--sampler", "kmeans,random,mig",
                 "--budget", "10", "--out", str(out), "--device", "cpu", "-o", "n_iter=5"])
    assert code == 0, capsys.readouterr().err
    for name in ("kmeans", "random", "mig"):
        manifest = json.loads((out / name / "manifest.json").read_text())
        assert manifest["config"]["selection"]["sampler"] == name and manifest["rows"]["selected"] == 10
    assert json.loads((out / "kmeans" / "manifest.json").read_text())["config"]["selection"]["options"]["n_iter"] == 5
    comparison = json.loads((out / "compare" / "compare.json").read_text())
    assert (out / "compare" / "compare.html").exists() and len(comparison["runs"]) == 3


def test_several_samplers_with_an_object_store_out_are_refused_before_any_work(tmp_path, bundled_slice, capsys):
    cache = tmp_path / "cache"
    code = main(["select", str(bundled_slice), "--sampler", "kmeans,random", "--budget", "10",
                 "--out", "s3://bucket/runs", "--cache-dir", str(cache), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code != 0 and "several samplers in one run need a local output folder" in err and len(err.strip().splitlines()) == 1
    assert not cache.exists() or not any(cache.rglob("*.npy"))  # nothing was embedded

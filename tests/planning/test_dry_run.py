"""--dry-run: a plan with reuse counts and estimates, a warning naming the fix when a sampler would not fit."""


from selectflow.flows.cli import main
from selectflow.tasks.planning.estimate import GIB, make_plan


def test_dpp_that_would_not_fit_warns_with_the_option_that_fits(monkeypatch):
    monkeypatch.setattr("selectflow.tasks.planning.estimate.machine_memory_bytes", lambda: 24 * GIB)
    plan = make_plan(n_rows=1_000_000, n_to_encode=0, mean_chars=400, dim=384, budget=50_000, sampler="dpp",
                     options={"partition": "never", "memory_limit_gib": 2.0}, device="cpu", cores=2)
    assert any("partition=auto" in w for w in plan.warnings)
    ok = make_plan(n_rows=1_000_000, n_to_encode=0, mean_chars=400, dim=384, budget=50_000, sampler="dpp",
                   options={"partition": "auto", "memory_limit_gib": 2.0}, device="cpu", cores=2)
    assert not ok.warnings


def test_estimates_scale_with_rows_to_encode():
    small = make_plan(n_rows=10_000, n_to_encode=10_000, mean_chars=400, dim=384, budget=500, sampler="kmeans",
                      options={}, device="cpu", cores=2)
    cached = make_plan(n_rows=10_000, n_to_encode=0, mean_chars=400, dim=384, budget=500, sampler="kmeans",
                       options={}, device="cpu", cores=2)
    embed = lambda p: next(s for s in p.stages if s.stage == "embed").seconds
    assert embed(small) > 10 * embed(cached)
    assert [s.stage for s in small.stages] == ["corpus", "embed", "index", "select", "report"]


def test_cli_dry_run_writes_nothing(tmp_path, bundled_slice, capsys):
    out = tmp_path / "out"
    code = main(["select", str(bundled_slice), "--id", "id", "--dry-run", "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    text = capsys.readouterr().out
    assert code == 0
    assert "80 usable" in text and "encode 80 texts, reuse 0" in text and "nothing was run" in text
    assert not out.exists() and not (tmp_path / "cache" / "store").exists()

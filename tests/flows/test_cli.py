"""The command line: help, one-line errors with non-zero exit codes, and a real run."""

import json
import os
import subprocess
import sys

import polars as pl
import pytest

from selectflow.flows.cli import main

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_help_lists_samplers_and_their_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["select", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "kmeans" in text and "random" in text and "n_iter" in text


@pytest.mark.parametrize("args,message", [
    (["select", "/no/such/file.parquet"], "file.parquet: file not found"),
    (["select", "--text", "nope"], "column 'nope' (from --text) does not exist"),
    (["select", "--sampler", "nope"], "Unknown sampler 'nope'"),
    (["select", "-o", "no_such_option=1"], "no_such_option"),
])
def test_errors_are_one_line_with_exit_code_2(args, message, tmp_path):
    # A real process: what a user sees on the terminal is exactly one line on stderr.
    proc = subprocess.run([sys.executable, "-m", "selectflow.flows.cli", *args, "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300, env={**os.environ})
    err = proc.stderr.strip()
    assert proc.returncode == 2, err
    assert err.startswith("selectflow: error:") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "selected.parquet").exists()


@pytest.mark.parametrize("budget", ["0", "1.5", "-3", "abc"])
def test_bad_budget_is_rejected_before_any_work(budget, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["select", "--budget", budget])
    assert exc.value.code == 2
    assert "budget" in capsys.readouterr().err


def test_select_runs_and_writes_outputs(tmp_path, bundled_slice, capsys):
    out = tmp_path / "cli"
    code = main(["select", str(bundled_slice), "--id", "id", "--group", "source", "--sampler", "random",
                 "--budget", "7", "--seed", "2", "--out", str(out), "--device", "cpu", "--format", "jsonl,hf"])
    assert code == 0
    assert "selected 7 of 80" in capsys.readouterr().out
    parquet = pl.read_parquet(out / "selected.parquet")
    assert parquet.height == 7
    assert pl.read_ndjson(out / "selected.jsonl").equals(parquet)
    # The Hugging Face folder reads back as the same rows (through selectflow's own save_to_disk reader).
    from selectflow.tasks.io.corpus_reader import scan

    lf, fmt, columns = scan(out / "selected_hf")
    assert fmt == "hf" and columns == parquet.columns
    assert lf.collect().select(columns).equals(parquet)
    assert json.loads((out / "manifest.json").read_text())["budget"] == {"requested": 7, "rows": 7}


def test_repeated_text_flags_add_up(tmp_path, bundled_slice):
    """`--text prompt --text completion` means both columns, as `--text prompt completion` does."""
    from selectflow.flows.cli import _corpus, build_parser

    args = build_parser().parse_args(["select", str(bundled_slice), "--text", "prompt", "--text", "completion"])
    assert list(_corpus(args).text_columns) == ["prompt", "completion"]


def test_dry_run_with_several_samplers_runs_nothing(tmp_path, bundled_slice, capsys):
    out = tmp_path / "o"
    assert main(["select", str(bundled_slice), "--sampler", "kmeans,random", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "with kmeans" in text and "with random" in text and "nothing was run" in text
    assert not out.exists()

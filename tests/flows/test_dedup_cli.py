"""`selectflow dedup` and `selectflow select --dedup` end to end on a tiny corpus with planted near-duplicates."""

import json
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from selectflow.flows.cli import main
from selectflow.tasks.io.results import Manifest

pytestmark = pytest.mark.usefixtures("prefect_harness")

N_BASE, D = 30, 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """30 distinct rows plus near-copies (cosine 0.97) of rows 0..4; the copies of rows 0, 2, 4 have higher quality."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=(N_BASE, D))
    base /= np.linalg.norm(base, axis=1, keepdims=True)

    def near(v):
        u = rng.normal(size=D)
        u -= u.dot(v) * v
        u /= np.linalg.norm(u)
        return 0.97 * v + np.sqrt(1 - 0.97**2) * u

    x = np.vstack([base, [near(base[i]) for i in range(5)]]).astype(np.float32)
    ids = [f"r{i:02d}" for i in range(N_BASE)] + [f"d{i}" for i in range(5)]
    folder = tmp_path_factory.mktemp("dedup")
    pl.DataFrame({"id": ids, "text": [f"the text of {i}" for i in ids],
                  "quality": [1.0] * N_BASE + [2.0, 0.5, 2.0, 0.5, 2.0],
                  # r00..r29 alternate b, a; d0, d2, d4 share their source's group, d1 and d3 do not.
                  "grp": ["b" if i % 2 == 0 else "a" for i in range(N_BASE)] + ["b", "b", "b", "b", "b"]}
                 ).write_parquet(folder / "corpus.parquet")
    np.save(folder / "emb.npy", x)
    return folder


def _common(tiny):
    return [str(tiny / "corpus.parquet"), "--text", "text", "--id", "id", "--quality", "quality",
            "--embeddings", str(tiny / "emb.npy")]


EXPECTED = {("r00", "d0"), ("d1", "r01"), ("r02", "d2"), ("d3", "r03"), ("r04", "d4")}  # (dropped, kept): higher quality stays


def test_dedup_command_writes_kept_and_dropped_rows(tiny, tmp_path):
    out = tmp_path / "dd"
    assert main(["dedup", *_common(tiny), "--threshold", "0.9", "--out", str(out)]) == 0
    dropped = pl.read_parquet(out / "dropped.parquet")
    assert set(zip(dropped["dropped_id"], dropped["kept_id"])) == EXPECTED
    assert np.allclose(dropped["similarity"].to_numpy(), 0.97, atol=1e-5)
    kept = pl.read_parquet(out / "kept.parquet")
    assert kept.height == 30 and not set(kept["id"]) & set(dropped["dropped_id"])
    assert {"id", "text", "quality", "sf_id", "sf_duplicates_dropped"} <= set(kept.columns)
    assert kept.filter(pl.col("id") == "d0")["sf_duplicates_dropped"].item() == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"]["dropped_by_dedup"] == 5 and manifest["dedup"]["threshold"] == 0.9
    assert Manifest.read(out).to_json() == manifest and "seed" not in manifest  # a dedup run's manifest, round-tripped
    # Same input, threshold and seed: the same files.
    again = tmp_path / "dd2"
    assert main(["dedup", *_common(tiny), "--threshold", "0.9", "--out", str(again)]) == 0
    assert pl.read_parquet(again / "dropped.parquet").equals(dropped)


def test_select_with_dedup_selects_among_kept_rows_and_lists_the_dropped(tiny, tmp_path, capsys):
    out = tmp_path / "sel"
    assert main(["select", *_common(tiny), "--sampler", "random", "--budget", "29", "--seed", "1",
                 "--dedup", "0.9", "--out", str(out)]) == 0
    dropped = pl.read_parquet(out / "dropped.parquet")
    assert set(zip(dropped["dropped_id"], dropped["kept_id"])) == EXPECTED
    selected = pl.read_parquet(out / "selected.parquet")
    assert selected.height == 29 and not set(selected["sf_id"]) & set(dropped["dropped_id"])
    assert dropped["kept_selected"].to_list() == [k in set(selected["sf_id"]) for k in dropped["kept_id"]]
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["dedup_dropped_rows"] == 5 and report["summary"]["dedup_threshold"] == 0.9
    table = report["examples"][-1]
    assert "semantic dedup" in table["title"] and {(r[0], r[3]) for r in table["rows"]} == EXPECTED
    assert "Rows dropped by semantic dedup" in (out / "report.html").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["selection"]["dedup"] == 0.9 and "dropped.parquet" in manifest["outputs"]
    # The threshold is part of the run's identity: another threshold is another run, refused without --overwrite.
    capsys.readouterr()
    assert main(["select", *_common(tiny), "--sampler", "random", "--budget", "29", "--seed", "1",
                 "--dedup", "0.95", "--out", str(out)]) == 2
    assert "already holds another run" in capsys.readouterr().err
    # Without dedup (and --overwrite), no stale dropped.parquet is left behind.
    assert main(["select", *_common(tiny), "--sampler", "random", "--budget", "29", "--seed", "1",
                 "--out", str(out), "--overwrite"]) == 0
    assert not (out / "dropped.parquet").exists()
    # More rows than dedup leaves: a clear error naming both flags.
    assert main(["select", *_common(tiny), "--budget", "31", "--dedup", "0.9", "--out", str(tmp_path / "big")]) == 2
    err = capsys.readouterr().err
    assert "--dedup" in err and "--budget" in err and "30 rows left" in err


@pytest.mark.parametrize("args,flag", [
    (["select", "--dedup", "1.5"], "--dedup"),
    (["select", "--dedup", "0"], "--dedup"),
    (["select", "--dedup", "abc"], "--dedup"),
    (["dedup", "--threshold", "-0.2"], "--threshold"),
])
def test_bad_threshold_is_one_line_error(tiny, tmp_path, args, flag):
    cmd, *rest = args
    proc = subprocess.run([sys.executable, "-m", "selectflow.flows.cli", cmd, *_common(tiny), *rest,
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300, env={**os.environ})
    err = proc.stderr.strip()
    assert proc.returncode == 2, err
    assert err.startswith(f"selectflow: error: {flag} ") and "(0, 1]" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_per_group_dedup_runs_inside_each_group(tiny, tmp_path):
    out = tmp_path / "pg"
    assert main(["select", *_common(tiny), "--group", "grp", "--per-group", "--sampler", "kmeans", "--budget", "10",
                 "--dedup", "0.9", "--out", str(out)]) == 0
    dropped = pl.read_parquet(out / "dropped.parquet")
    # Only the pairs inside one group: d1 (group b) and r01 (group a) are in different partitions.
    assert set(zip(dropped["dropped_id"], dropped["kept_id"])) == {("r00", "d0"), ("r02", "d2"), ("r04", "d4")}
    selected = set(pl.read_parquet(out / "selected.parquet")["sf_id"])
    assert len(selected) == 10 and not selected & set(dropped["dropped_id"])

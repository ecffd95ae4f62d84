"""`selectflow compare`: real select runs on a small real slice, compared by the flow, checked against the runs' own files."""

import json
import re
import shutil

import numpy as np
import polars as pl
import pytest

from selectflow.flows.params import CorpusParams, EncoderParams, OutputParams, SelectionParams
from selectflow.tasks.errors import ConfigError, InputError
from selectflow.tasks.reporting.comparison import compare_selections, overlap, prepare_comparison, render_comparison
from tests.samplers.conftest import clustered_embeddings

pytestmark = pytest.mark.usefixtures("prefect_harness")


def select_run(corpus, out, sampler, budget, seed, **columns):
    from selectflow.flows.pipeline import select_subset

    select_subset(CorpusParams(path=str(corpus), id_column="id", **columns), EncoderParams(device="cpu", batch_size=32),
                  SelectionParams(sampler=sampler, budget=budget, seed=seed), OutputParams(out_dir=str(out)))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, bundled_slice):
    base = tmp_path_factory.mktemp("runs")
    return [
        select_run(bundled_slice, base / "kmq", "kmeans", 0.25, 3, group_column="source", label_column="source"),
        select_run(bundled_slice, base / "rnd", "random", 20, 1, group_column="source"),
        select_run(bundled_slice, base / "rnd2", "random", 12, 2),
    ]


@pytest.fixture(scope="module")
def compared(runs, tmp_path_factory):
    from selectflow.flows.compare_flow import compare_runs

    out = tmp_path_factory.mktemp("cmp") / "compare"
    return out, compare_runs([str(r) for r in runs], out_dir=str(out), seed=0)


def selected_ids(run) -> list[str]:
    return pl.read_parquet(run / "selected.parquet").sort("sf_rank")["id"].to_list()


def test_overlap_matches_the_selected_parquets(runs, compared):
    out, result = compared
    sets = [set(selected_ids(r)) for r in runs]
    for i, a in enumerate(sets):
        for j, b in enumerate(sets):
            assert result["jaccard"][i][j] == pytest.approx(len(a & b) / len(a | b), abs=1e-6)
        others = set().union(*(s for j, s in enumerate(sets) if j != i))
        assert result["only_this_run"][i] == len(a - others)
    # overlap.parquet: every picked row once, with its rank in each run's selected.parquet.
    frame = pl.read_parquet(out / "overlap.parquet")
    assert set(frame["id"]) == set().union(*sets) and frame["id"].n_unique() == frame.height
    for i, run in enumerate(runs):
        ranks = dict(zip(frame["id"], frame[f"run_{i + 1}_rank"]))
        assert [ranks[x] for x in selected_ids(run)] == list(range(len(sets[i])))
        assert sum(v is not None for v in ranks.values()) == len(sets[i])
    assert (frame["n_runs"] == sum(frame[f"run_{i + 1}_rank"].is_not_null().cast(pl.Int64) for i in range(3))).all()


def test_measures_agree_with_each_runs_own_report(runs, compared):
    # 80 rows: below metrics.SAMPLE_ROWS, so coverage uses every pool row and the selected side does not depend on the seed.
    out, _ = compared
    data = json.loads((out / "compare.json").read_text())
    for run, measured in zip(runs, data["diversity_coverage"]):
        own = json.loads((run / "report.json").read_text())["diversity_coverage"]["selected"]
        assert measured["selected_rows"] == len(selected_ids(run))
        for key in ("coverage_distance", "mean_pairwise_similarity"):
            assert measured["selected"][key] == pytest.approx(own[key], rel=1e-6)
        assert measured["random"]["coverage_distance"]["std"] > 0


def test_group_and_label_distributions_count_the_selected_rows(runs, compared):
    out, _ = compared
    data = json.loads((out / "compare.json").read_text())
    assert data["pool"]["group_column"] == "source" and data["pool"]["label_column"] == "source"
    names = data["names"]
    for key in ("groups", "labels"):
        rows = {c["value"]: c for c in data["composition"][key]}
        assert sum(c["pool"] for c in rows.values()) == 80 and all(c["pool"] == 10 for c in rows.values())
        for name, run in zip(names, runs):
            counts = pl.read_parquet(run / "selected.parquet").group_by("source").len()
            assert {r["source"]: r["len"] for r in counts.iter_rows(named=True)} == \
                {v: c["selected"][name] for v, c in rows.items() if c["selected"][name]}
    clusters = data["composition"]["clusters"]
    assert [sum(c["selected"][n] for c in clusters) for n in names] == [len(selected_ids(r)) for r in runs]


def test_page_is_self_contained_and_complete(compared):
    out, result = compared
    page = (out / "compare.html").read_text()
    assert "<script" not in page.lower() and "default-src 'none'" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(|@import""", page, re.I)
    for section in ("Overlap", "Rows only one run picked", "Diversity and coverage side by side", "per group", "per label",
                    "Shared map"):
        assert section in page
    # Jaccard heatmap, 2 diversity bars, 3 compositions, the shared map and one panel per run.
    assert page.count("<svg") == 1 + 2 + 3 + 1 + 3
    assert result["names"] == ["1: kmeans", "2: random", "3: random"]


def test_artifacts_are_published(compared):
    from prefect.artifacts import Artifact

    summary = Artifact.get("selection-comparison")
    assert summary is not None and "Comparison of 3 selections" in summary.data
    assert "compare.html" in Artifact.get("selection-comparison-report").data


def test_same_comparison_refreshes_its_folder_and_another_is_refused(runs, compared):
    out, _ = compared
    plan = prepare_comparison([str(r) for r in runs], str(out), seed=0)  # same runs and seed: allowed
    assert plan["out_dir"] == str(out.resolve())
    with pytest.raises(ConfigError, match="already holds another comparison"):
        prepare_comparison([str(r) for r in runs[:2]], str(out), seed=0)
    prepare_comparison([str(r) for r in runs[:2]], str(out), seed=0, overwrite=True)
    with pytest.raises(ConfigError, match="is one of the RUN_DIRs"):
        prepare_comparison([str(r) for r in runs[:2]], str(runs[0]), overwrite=True)


def test_runs_over_another_corpus_or_other_text_columns_are_refused(runs, bundled_slice, tmp_path):
    fewer = tmp_path / "fewer.parquet"
    pl.read_parquet(bundled_slice).head(60).write_parquet(fewer)
    other = select_run(fewer, tmp_path / "fewer", "random", 10, 0)
    with pytest.raises(InputError, match=r"selects from a different corpus than .*kmq.*compare only runs over the same input"):
        prepare_comparison([str(runs[0]), str(other)], str(tmp_path / "c1"))
    prompt_only = select_run(bundled_slice, tmp_path / "prompt", "random", 10, 0, text_columns=["prompt"])
    with pytest.raises(InputError, match="columns prompt but .* from prompt, completion"):
        prepare_comparison([str(runs[0]), str(prompt_only)], str(tmp_path / "c2"))
    assert not (tmp_path / "c1").exists() and not (tmp_path / "c2").exists()


def test_incomplete_runs_and_bad_arguments_are_refused(runs, tmp_path):
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(runs[1] / "selected.parquet", half)
    with pytest.raises(InputError, match="half: has no manifest.json"):
        prepare_comparison([str(runs[0]), str(half)], str(tmp_path / "c"))
    # A run whose cached selection was cleared: named, with what to do.
    gone = tmp_path / "gone"
    shutil.copytree(runs[1], gone)
    manifest = json.loads((gone / "manifest.json").read_text())
    manifest["cache_files"]["selection_arrays"] = str(tmp_path / "cleared" / "selection.npz")
    (gone / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="selection arrays .*cleared.* is missing .*re-run the same `selectflow select`"):
        prepare_comparison([str(runs[0]), str(gone)], str(tmp_path / "c"))
    # A selected.parquet edited after the run (rows reordered) no longer matches the cached selection.
    edited = tmp_path / "edited"
    shutil.copytree(runs[1], edited)
    pl.read_parquet(runs[1] / "selected.parquet").reverse().write_parquet(edited / "selected.parquet")
    with pytest.raises(InputError, match="edited: selected.parquet's 'sf_id' column does not match the cached selection"):
        prepare_comparison([str(runs[0]), str(edited)], str(tmp_path / "c"))
    with pytest.raises(ConfigError, match="at least two RUN_DIRs; got 1"):
        prepare_comparison([str(runs[0])], str(tmp_path / "c"))
    with pytest.raises(ConfigError, match="given twice"):
        prepare_comparison([str(runs[0]), str(runs[0]) + "/"], str(tmp_path / "c"))


def test_cli_compare(runs, tmp_path, capsys):
    from selectflow.flows.cli import main

    assert main(["compare", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "cli")]) == 0
    printed = capsys.readouterr().out
    assert "compared 2 selections" in printed and "1: kmeans" in printed and (tmp_path / "cli" / "compare.html").exists()
    assert main(["compare", str(runs[0]), str(tmp_path / "missing"), "--out", str(tmp_path / "cli2")]) == 2
    assert "missing: not a folder" in capsys.readouterr().err


def test_overlap_of_known_sets():
    result = overlap([np.array([0, 1, 2, 3]), np.array([3, 2, 4]), np.array([9])], 10)
    assert result["jaccard"][0] == [1.0, pytest.approx(2 / 5), 0.0]
    assert result["shared_rows"][0][1] == 2 and result["shared_rows"][1][1] == 3
    assert result["only_this_run"] == [2, 1, 1]
    assert result["picked_by_exactly"] == {"1": 4, "2": 2, "3": 0} and result["picked_by_any"] == 6


HOSTILE = ['<script>alert("x")</script>', '<img src=x onerror=alert(1)>', '"><svg onload=alert(2)>']


def test_hostile_corpus_strings_show_as_text():
    x = clustered_embeddings(90, 8, 3, seed=1)
    result = compare_selections(
        embeddings=x, selections=[np.arange(0, 90, 3), np.arange(1, 90, 4)], names=["1: a", "2: b"],
        ids=[HOSTILE[i % 3] + str(i) for i in range(90)], texts_at=lambda rows: [HOSTILE[r % 3] for r in rows],
        groups=[HOSTILE[i % 3] for i in range(90)], labels=[(HOSTILE[i % 3], "plain") for i in range(90)], seed=0,
    )
    result.update({"runs": [{"label": n, "run_dir": HOSTILE[0], "sampler": HOSTILE[1], "budget_requested": 1, "selected": 30,
                             "seed": 0, "encoder": HOSTILE[2]} for n in result["names"]],
                   "pool": {"input": HOSTILE[0], "input_name": HOSTILE[1], "usable_rows": 90, "text_columns": [HOSTILE[2]],
                            "measured_with": HOSTILE[0], "encoders": [HOSTILE[0]], "group_column": HOSTILE[1], "label_column": "x"},
                   "seed": 0, "seconds": 0.1})
    page = render_comparison(result).lower()
    assert "<script" not in page and "<img" not in page and "<svg onload" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert all(result["only_this_run_examples"][n] for n in result["names"])  # the example tables were rendered too

"""The evaluation harness: the split, what samplers may see, the metrics, the spread over seeds, the outputs."""

import json

import numpy as np
import pytest

from selectflow.tasks.errors import ConfigError, InputError
from selectflow.tasks.evaluation import (
    README_END,
    README_START,
    EvaluationConfig,
    check_evaluation_dir,
    check_request,
    evaluate,
    measure_selection,
    render_markdown,
    stratified_split,
    update_readme,
)
from selectflow.tasks.evaluation import protocol


def toy_corpus(n_labels: int = 4, per_label: int = 40, dim: int = 16, noise: float = 0.15, seed: int = 0):
    """Well-separated labels: each label's rows scatter around its own axis, then are normalised."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([f"label{k}" for k in range(n_labels)], per_label)
    centres = np.eye(dim, dtype=np.float32)[:n_labels]
    x = centres[np.repeat(np.arange(n_labels), per_label)] + noise * rng.standard_normal((len(labels), dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), [[str(v)] for v in labels], labels.astype(object)


def test_split_is_stratified_disjoint_and_seeded():
    labels = np.array(["a"] * 50 + ["b"] * 20 + ["c"] * 7 + ["d"], dtype=object)
    pool, test = stratified_split(labels, 0.2, seed=3)
    assert len(np.intersect1d(pool, test)) == 0
    assert np.array_equal(np.sort(np.concatenate([pool, test])), np.arange(len(labels)))
    test_counts = {k: int((labels[test] == k).sum()) for k in "abcd"}
    assert test_counts == {"a": 10, "b": 4, "c": 1, "d": 0}  # round(0.2 n), at least 1 when n >= 2, singletons stay in the pool
    again, test_again = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(test, test_again) and np.array_equal(pool, again)
    assert not np.array_equal(test, stratified_split(labels, 0.2, seed=4)[1])


def test_samplers_only_ever_see_the_pool(monkeypatch):
    emb, labels, _ = toy_corpus()
    seen = []
    real_get_sampler = protocol.get_sampler

    def spying_get_sampler(name, options=None):
        sampler = real_get_sampler(name, options)
        real_select = sampler.select

        def select(data, budget, seed):
            seen.append(data)
            return real_select(data, budget, seed)

        sampler.select = select
        return sampler

    monkeypatch.setattr(protocol, "get_sampler", spying_get_sampler)
    result = evaluate(emb, labels, EvaluationConfig(samplers=["kmeans"], budgets=[0.1, 20], seeds=[0, 1], baselines=[], random_draws=2))
    test_rows = np.array(result["test_rows"])
    test_vectors = {emb[r].tobytes() for r in test_rows}
    assert len(seen) == 2 * 2 * 2 and len(test_rows) == 32
    for data in seen:
        assert data.labels is None  # as `select` runs it: never the labels it is graded on
        assert data.n_rows == len(emb) - len(test_rows)
        assert not test_vectors & {row.tobytes() for row in data.embeddings}
        sims, _ = data.knn(emb[test_rows[:3]], 1)  # the index holds pool rows only, so no test row finds itself
        assert np.all(sims[:, 0] < 0.99999)
    for run in result["runs"]:
        assert len(run["selected_rows"]) == run["budget_rows"]
        assert not set(run["selected_rows"]) & set(test_rows.tolist())


def test_covering_all_labels_beats_covering_few():
    emb, _, labels = toy_corpus()
    pool, test = stratified_split(labels, 0.25, seed=0)
    by_label = {k: pool[labels[pool] == k] for k in np.unique(labels)}
    all_labels = np.concatenate([rows[:2] for rows in by_label.values()])  # 8 rows, 2 per label
    one_label = by_label["label0"][:8]
    two_labels = np.concatenate([by_label["label0"][:4], by_label["label1"][:4]])
    wide = measure_selection(emb, labels, pool_rows=pool, test_rows=test, selected_rows=all_labels)
    narrow = measure_selection(emb, labels, pool_rows=pool, test_rows=test, selected_rows=one_label)
    half = measure_selection(emb, labels, pool_rows=pool, test_rows=test, selected_rows=two_labels)
    assert wide["macro_f1"] > 0.9 and wide["label_coverage"] == 1.0
    assert narrow["label_coverage"] == 0.25 and half["label_coverage"] == 0.5
    # Labels the selection never shows are misses: at most 1 of 4 (resp. 2 of 4) labels can score.
    assert narrow["macro_f1"] <= 0.25 and half["macro_f1"] <= 0.5
    assert wide["test_distance"] < half["test_distance"] < narrow["test_distance"]


def test_random_baseline_and_samplers_report_mean_and_spread_over_seeds():
    emb, labels, _ = toy_corpus(noise=0.6)  # overlapping labels, so small selections differ between seeds
    config = EvaluationConfig(samplers=["kmeans"], budgets=[0.05, 0.2], seeds=[0, 1, 2], random_draws=5)
    result = evaluate(emb, labels, config)
    assert result["samplers"] == ["random", "kmeans-medoids", "facility-location", "kmeans"]
    assert len(result["runs"]) == 3 * 2 * 3 + 2 * 5  # random: the seeds given, then 3 and 4
    assert sorted({r["seed"] for r in result["runs"] if r["sampler"] == "random"}) == [0, 1, 2, 3, 4]
    spreads = []
    for name in ("random", "kmeans"):
        for budget in ("0.05", "0.2"):
            for metric in ("macro_f1", "label_coverage", "test_distance", "near_duplicates"):
                cell = result["summary"][name][budget][metric]
                values = [r[metric] for r in result["runs"] if r["sampler"] == name and str(r["budget"]) == budget]
                assert cell["values"] == values and len(values) == (5 if name == "random" else 3)
                assert cell["mean"] == pytest.approx(np.mean(values))
                assert cell["std"] == pytest.approx(np.std(values, ddof=1))
                spreads.append(cell["std"])
    assert max(spreads) > 0  # seeds really change the selections
    random_cell = result["summary"]["random"]["0.05"]["macro_f1"]
    md = render_markdown(result, {"input_name": "toy", "label_column": "label"})
    assert f"| random | {random_cell['mean']:.3f} ± {random_cell['std']:.3f}" in md.replace("**", "")
    assert md.count("| kmeans |") == 2 and "5% (6 rows)" in md and "20% (26 rows)" in md  # one table per budget, 128-row pool
    assert md.count("| random |") == 2 and md.count("baseline |") == 2


def test_same_config_gives_the_same_result_and_the_split_seed_matters():
    emb, labels, _ = toy_corpus(noise=0.6)
    config = EvaluationConfig(samplers=["kmeans"], budgets=[0.1], seeds=[0, 1], baselines=[])
    strip = lambda res: [{k: v for k, v in r.items() if k != "seconds"} for r in res["runs"]]  # noqa: E731
    first, second = evaluate(emb, labels, config), evaluate(emb, labels, config)
    assert strip(first) == strip(second) and first["summary"] == second["summary"]
    other = evaluate(emb, labels, config.model_copy(update={"split_seed": 1}))
    assert other["test_rows"] != first["test_rows"]


def test_label_problems():
    emb, labels, _ = toy_corpus(per_label=10)
    with pytest.raises(InputError, match=r"row 3 .*2 labels.*single-label column with --labels"):
        evaluate(emb, labels[:3] + [["label0", "label1"]] + labels[4:], EvaluationConfig(samplers=[], budgets=[4], seeds=[0]))
    # Rows without a label are left out of the split and counted, never given to a sampler.
    unlabelled = [[] if i % 10 == 0 else v for i, v in enumerate(labels)]
    result = evaluate(emb, unlabelled, EvaluationConfig(samplers=["kmeans"], budgets=[4], seeds=[0], baselines=[]))
    assert result["rows"]["unlabelled_excluded"] == 4 and result["rows"]["pool"] + result["rows"]["test"] == 36
    assert not {0, 10, 20, 30} & set(result["test_rows"] + result["runs"][0]["selected_rows"])
    assert "4 rows without a label were left out" in render_markdown(result)


def test_requests_are_checked_before_any_work():
    with pytest.raises(ConfigError, match="needs a label column: pass --labels"):
        check_request(EvaluationConfig(), None)
    with pytest.raises(ConfigError, match="Unknown sampler 'nope'"):
        check_request(EvaluationConfig(samplers=["kmeans", "nope"]), "source")
    with pytest.raises(ConfigError, match="kmeans.no_such_option"):
        check_request(EvaluationConfig(samplers=["kmeans"], sampler_options={"kmeans": {"no_such_option": 1}}), "source")
    with pytest.raises(ConfigError, match="'mig', which is not evaluated"):
        check_request(EvaluationConfig(samplers=["kmeans"], sampler_options={"mig": {}}), "source")
    assert EvaluationConfig().sampler_names()[0] == "random" and "random" not in EvaluationConfig().samplers


def test_output_folder_and_readme_block(tmp_path):
    out = check_evaluation_dir(tmp_path / "eval", "key-a", overwrite=False)
    (out / "evaluation.json").write_text(json.dumps({"run_key": "key-a"}))
    assert check_evaluation_dir(out, "key-a", overwrite=False) == out  # the same configuration refreshes in place
    with pytest.raises(ConfigError, match="already holds another evaluation; pass --overwrite"):
        check_evaluation_dir(out, "key-b", overwrite=False)
    assert check_evaluation_dir(out, "key-b", overwrite=True) == out
    (out / "notes.txt").write_text("not an output of the evaluation")
    with pytest.raises(ConfigError, match="already holds"):  # any file besides evaluation.json/.md refuses the folder
        check_evaluation_dir(out, "key-a", overwrite=False)

    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{README_START}\nold table\n{README_END}\nafter\n")
    update_readme(readme, "# Sampler evaluation: x\n\nconditions\n\n| a | b |\n|---|---:|\n")
    assert readme.read_text() == f"# title\n\nbefore\n{README_START}\nconditions\n\n| a | b |\n|---|---:|\n{README_END}\nafter\n"
    readme.write_text("no markers here\n")
    with pytest.raises(ConfigError, match=r"README.md: expected one line <!-- eval-table:start -->"):
        update_readme(readme, "| a |")
    assert readme.read_text() == "no markers here\n"


@pytest.mark.parametrize("args,message", [
    ([], "needs a label column: pass --labels"),
    (["--labels", "source", "--samplers", "kmeans,nope"], "Unknown sampler 'nope'"),
    (["--labels", "source", "-o", "k=4"], "must name its sampler, e.g. -o kmeans.k=16"),
    (["--labels", "source", "--readme", "/no/such/README.md"], "README file not found"),
    (["--labels", "source", "--fine-labels", "no_such_column"], "column 'no_such_column' does not exist"),
    (["--labels", "source", "--baselines", "medoids"], "Unknown baseline 'medoids' in --baselines"),
])
def test_cli_refuses_bad_requests_before_any_work(args, message, tmp_path, capsys):
    from selectflow.flows.cli import main

    assert main(["evaluate", *args, "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("selectflow: error:") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "eval").exists()


@pytest.mark.usefixtures("prefect_harness")
def test_cli_evaluates_a_real_slice_and_updates_the_readme(tmp_path, bundled_slice, capsys):
    from selectflow.flows.cli import main

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\n{README_END}\n")
    out = tmp_path / "eval"
    code = main(["evaluate", str(bundled_slice), "--id", "id", "--labels", "source", "--samplers", "kmeans",
                 "--budgets", "0.1,8", "--seeds", "0,1", "--test-fraction", "0.25", "--device", "cpu",
                 "--out", str(out), "--readme", str(readme), "-o", "kmeans.k=4"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((out / "evaluation.json").read_text())
    assert doc["rows"] == {"usable": 80, "labelled": 80, "unlabelled_excluded": 0, "pool": 56, "test": 24}
    assert doc["labels"]["test"] == {s: 3 for s in doc["labels"]["test"]} and len(doc["labels"]["test"]) == 8
    assert len(doc["runs"]) == 3 * 2 * 2 + 10 * 2 and doc["config"]["sampler_options"] == {"kmeans": {"k": 4}}
    for run in doc["runs"]:
        assert "error" not in run and not set(run["selected_rows"]) & set(doc["test_rows"])
    md = (out / "evaluation.md").read_text()
    assert "| random |" in md and "| kmeans |" in md and "10% (6 rows)" in md and "**8 rows**" in md
    assert "| facility-location |" in md and "| kmeans-medoids |" in md and "dup ↓" in md
    assert md.splitlines()[2] in readme.read_text() and readme.read_text().startswith(f"intro\n{README_START}\n")
    assert "| kmeans |" in capsys.readouterr().out


def test_label_using_samplers_see_a_labels_column_only_when_given_one_as_a_separate_row(monkeypatch):
    emb, labels, values = toy_corpus(noise=0.6)
    seen: dict[str, list] = {}
    real_get_sampler = protocol.get_sampler

    def spying_get_sampler(name, options=None):
        sampler = real_get_sampler(name, options)
        real_select = sampler.select

        def select(data, budget, seed):
            seen.setdefault(name, []).append(data.labels)
            return real_select(data, budget, seed)

        sampler.select = select
        return sampler

    monkeypatch.setattr(protocol, "get_sampler", spying_get_sampler)
    given = [f"tag{i % 3}" for i in range(len(emb))]
    config = EvaluationConfig(samplers=["kmeans", "mig"], budgets=[10], seeds=[0], baselines=[], sampler_label_column="tag")
    result = evaluate(emb, labels, config, sampler_labels=given)
    assert result["samplers"] == ["random", "kmeans", "mig", "mig + labels tag"]  # kmeans reads no labels
    mig_calls = seen["mig"]
    assert mig_calls[0] is None and {t for row in mig_calls[1] for t in row} == {"tag0", "tag1", "tag2"}
    assert all(labels_seen is None for labels_seen in seen["kmeans"])
    md = render_markdown(result)
    assert "| mig + labels tag |" in md and "never see the labels they are graded on" in md
    with pytest.raises(ConfigError, match="no sampler labels were passed"):
        evaluate(emb, labels, config)


def test_fine_labels_stratify_the_split_and_are_covered():
    emb, labels, values = toy_corpus(per_label=40)
    fine = [f"{v}-t{i % 5}" for i, v in enumerate(values)]  # 20 fine labels, 8 rows each
    config = EvaluationConfig(samplers=[], budgets=[20, 0.5], seeds=[0], baselines=["kmeans-medoids"], fine_label_column="t")
    result = evaluate(emb, labels, config, fine_labels=fine)
    test = np.array(result["test_rows"])
    counts = {k: int(v) for k, v in zip(*np.unique(np.asarray(fine, dtype=object)[test].astype(str), return_counts=True))}
    assert set(counts.values()) == {2} and len(counts) == 20  # round(0.2 * 8) of every fine label
    assert result["fine_labels"] == {"pool": 20, "test": 20}
    for run in result["runs"]:
        chosen = set(np.asarray(fine, dtype=object)[run["selected_rows"]].tolist())
        assert run["fine_label_coverage"] == pytest.approx(len(chosen) / 20)
    assert "fine labels ↑" in render_markdown(result)


def test_near_duplicate_rate_and_the_verdict_against_random():
    from selectflow.tasks.reporting.metrics import near_duplicate_rate

    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    twins = np.vstack([x, x[:2] + 0.001]).astype(np.float32)
    twins /= np.linalg.norm(twins, axis=1, keepdims=True)
    assert near_duplicate_rate(twins, np.arange(10)) == 0.0
    assert near_duplicate_rate(twins, np.arange(12)) == pytest.approx(4 / 12)  # rows 0, 1 and their twins

    def cell(mean):
        return {"mean": mean, "std": None, "values": [mean]}

    metrics = ["macro_f1", "test_distance", "near_duplicates"]
    result = {"samplers": ["random", "a", "b", "c"], "metrics": metrics, "budgets": [{"requested": 5, "rows": 5, "label": "5 rows"}],
              "summary": {"random": {"5": {"macro_f1": cell(0.8), "test_distance": cell(0.4), "near_duplicates": cell(0.0)}},
                          "a": {"5": {"macro_f1": cell(0.8), "test_distance": cell(0.39), "near_duplicates": cell(0.0)}},
                          "b": {"5": {"macro_f1": cell(0.79), "test_distance": cell(0.4), "near_duplicates": cell(0.1)}},
                          "c": {"5": {"macro_f1": cell(0.9), "test_distance": cell(0.3), "near_duplicates": cell(0.0)}}}}
    lost = protocol.verdicts(result)
    assert lost["a"]["5"] == [] and lost["c"]["5"] == []  # ties on F1 and at zero duplicates do not lose
    assert lost["b"]["5"] == metrics  # below on F1, equal on distance (not better), above on duplicates


def test_coverage_baselines_cover_better_than_random():
    emb, labels, _ = toy_corpus(n_labels=8, per_label=30, noise=0.5)
    config = EvaluationConfig(samplers=[], budgets=[16], seeds=[0, 1, 2])
    result = evaluate(emb, labels, config)
    distance = {name: result["summary"][name]["16"]["test_distance"]["mean"] for name in result["samplers"]}
    assert distance["kmeans-medoids"] < distance["random"] and distance["facility-location"] < distance["random"]

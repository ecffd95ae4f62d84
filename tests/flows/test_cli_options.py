"""One declaration per option: the CLI flags come from the flow parameter models (flows/cli_options.py).

Parser-level and fast: no flow runs. A repeated list flag keeps every value in order; a dry run with several
samplers writes nothing; `serve` has every `select` flag and passes each into the deployment's parameters;
every model field has a flag whose default, choices and bounds are the model's.
"""

import argparse
from typing import Literal, get_args, get_origin

import pytest

from selectflow.flows import cli
from selectflow.flows.cli import build_parser, main
from selectflow.flows.cli_options import FLAGS, NOT_EXPOSED, SECTIONS, budget_type, field_default, flag_name
from selectflow.flows.params import Budget, CorpusParams, EncoderParams, OutputParams, SelectionParams, parse_budget
from selectflow.flows.runners import RunnerParams

# select flags that make no sense for serve, with the reason.
NOT_FOR_SERVE = {
    "--dry-run": "serve registers deployments and waits for runs; there is no single run to plan",
    "-h": "help", "--help": "help",
}
# Fields whose parser default is not the model default, with the reason.
DEFAULT_DIFFERS = {
    (SelectionParams, "options"): "-o NAME=VALUE collects only the options given; the model fills in each sampler's defaults",
}


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _flags(command: str) -> dict[str, argparse.Action]:
    return {flag: action for action in _subparser(command)._actions for flag in action.option_strings}


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


# (a) repeated list flags keep every value, in order ----------------------------------------------------------

@pytest.mark.parametrize("command", ["select", "serve", "embed", "dedup", "evaluate"])
@pytest.mark.parametrize("argv", [["--text", "prompt", "--text", "completion"], ["--text", "prompt", "completion"]])
def test_repeated_text_keeps_every_column_in_order(command, argv):
    extra = ["--threshold", "0.9"] if command == "dedup" else []
    args = _parse(command, "corpus.parquet", *argv, *extra)
    assert cli._corpus(args).text_columns == ["prompt", "completion"]


def test_every_list_flag_adds_up_in_order():
    args = _parse("select", "--previous", "r1", "--previous", "r2", "r3", "--target-text", "a", "--target-text", "b",
                  "--format", "jsonl", "--format", "hf")
    selection = cli._selection(args, ["coverage"], {"coverage": {}})
    assert selection.previous_runs == ["r1", "r2", "r3"] and selection.target_text_columns == ["a", "b"]
    assert cli._output(args).formats == ["hf", "jsonl", "parquet"]
    # The comma-separated form of --format is still accepted, and a format outside the Literal is refused.
    assert cli._output(_parse("select", "--format", "jsonl,hf")).formats == ["hf", "jsonl", "parquet"]
    with pytest.raises(SystemExit):
        _parse("select", "--format", "jsonl,csv")


# (b) a dry run with several samplers writes nothing ----------------------------------------------------------

def test_dry_run_with_several_samplers_writes_nothing(tmp_path, bundled_slice, capsys, monkeypatch):
    import selectflow.flows.pipeline as pipeline

    def must_not_run(*args, **kwargs):
        raise AssertionError("a dry run ran the pipeline")

    monkeypatch.setattr(pipeline, "select_many", must_not_run)
    monkeypatch.setattr(pipeline, "select_subset", must_not_run)
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = main(["select", str(bundled_slice), "--sampler", "kmeans,random", "--dry-run", "--per-group", "--group",
                 "source", "--out", str(out), "--cache-dir", str(cache)])
    text = capsys.readouterr().out
    assert code == 0
    assert "with kmeans" in text and "with random" in text and "nothing was run" in text
    assert not out.exists()
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()], "a dry run wrote cache entries"


# (c) serve accepts every select option, and passes each on ---------------------------------------------------

def test_serve_has_every_select_flag_with_the_same_declaration():
    select, serve = _flags("select"), _flags("serve")
    missing = sorted(set(select) - set(serve) - set(NOT_FOR_SERVE))
    assert not missing, f"serve lacks select options {missing}"
    for flag, action in select.items():
        if flag in NOT_FOR_SERVE:
            continue
        other = serve[flag]
        assert (other.dest, other.default, other.choices, other.nargs, type(other), other.type) == \
               (action.dest, action.default, action.choices, action.nargs, type(action), action.type), flag
    positional = lambda command: [a.dest for a in _subparser(command)._actions if not a.option_strings]
    assert positional("serve") == positional("select") == ["path"]


# A non-default value for every select option (the flags are checked to be all of them).
EVERY_SELECT_OPTION = [
    "corpus.parquet", "--text", "prompt", "completion", "--id", "uid", "--quality", "q", "--labels", "lab",
    "--group", "grp", "--embeddings", "emb.npy", "--normalize-embeddings",
    "--model", "my-model", "--device", "cpu", "--batch-size", "8", "--batch-tokens", "64", "--backend", "onnx",
    "--index", "flat",
    "--sampler", "kmeans", "--budget", "12", "--seed", "3", "-o", "k=4", "--target", "target.parquet",
    "--target-text", "prompt", "--feedback", "feedback.parquet", "--previous", "round1", "round2", "--per-group",
    "--dedup", "0.9", "--min-per-group", "2", "--min-per-label", "1",
    "--out", "outdir", "--overwrite", "--format", "jsonl,hf", "--cache-dir", "cachedir",
    "--runner", "dask", "--address", "tcp://scheduler:8786", "--workers", "2", "--unit-rows", "100", "--shard-rows", "10",
]
# Partitioned selection cannot be combined with --per-group (SelectionParams refuses the pair): its flags are given
# to a second serve, and each field must be passed on by one of the two.
PARTITION_OPTIONS = ["--partitions", "4", "--memory-limit", "2"]


def test_serve_passes_every_select_option_into_the_deployment(monkeypatch, tmp_path):
    import selectflow.flows.serve as serve_module
    from prefect.settings import PREFECT_API_URL, temporary_settings

    given = {a for a in EVERY_SELECT_OPTION + PARTITION_OPTIONS if a.startswith("-")}
    skip = {"--verbose", "--debug", "-h", "--help", "--option"} | set(NOT_FOR_SERVE)
    assert set(_flags("select")) - given - skip == set(), "give EVERY_SELECT_OPTION a value for each new flag"

    captured = {}
    monkeypatch.setattr(serve_module, "serve", lambda *deployments, limit: captured.update(deployments=deployments))
    monkeypatch.setattr(serve_module, "create_limits", lambda deployments: [])  # no server here
    monkeypatch.chdir(tmp_path)
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert main(["serve", "corpus.parquet", *PARTITION_OPTIONS, "--name", "p", "--cron", ""]) == 0
        partitioned = next(d for d in captured["deployments"] if d.name == "p" and "selection" in d.parameters).parameters
        assert main(["serve", *EVERY_SELECT_OPTION, "--name", "t", "--cron", ""]) == 0
    select = next(d for d in captured["deployments"] if d.name == "t" and "corpus" in d.parameters and "selection" in d.parameters)
    parameters = select.parameters
    for section, model in SECTIONS.items():
        defaults = model().model_dump(mode="json")
        for field in model.model_fields:
            assert parameters[section][field] != defaults[field] or partitioned[section][field] != defaults[field], \
                f"serve dropped {flag_name(model, field)} ({section}.{field})"
    # Paths become absolute: served runs start in subprocesses.
    assert parameters["selection"]["target"] == str(tmp_path / "target.parquet")
    assert parameters["selection"]["previous_runs"] == [str(tmp_path / "round1"), str(tmp_path / "round2")]
    assert parameters["selection"]["feedback"] == str(tmp_path / "feedback.parquet")
    assert parameters["output"]["formats"] == ["hf", "jsonl", "parquet"]
    # The sampler is a tagged union: its name and the chosen sampler's options, nothing of the others.
    assert parameters["selection"]["sampler"]["name"] == "kmeans" and parameters["selection"]["sampler"]["k"] == 4
    assert "options" not in parameters["selection"] and "greedy_fraction" not in parameters["selection"]["sampler"]


# (d) every field has a flag with the model's default, choices and bounds --------------------------------------

FIELDS = [(model, name) for model in SECTIONS.values() for name in model.model_fields]


@pytest.mark.parametrize("model,name", FIELDS, ids=[f"{m.__name__}.{n}" for m, n in FIELDS])
def test_every_field_has_a_flag_with_the_models_default(model, name):
    if name in NOT_EXPOSED.get(model, {}):
        pytest.skip(f"not exposed: {NOT_EXPOSED[model][name]}")
    field = model.model_fields[name]
    spec = FLAGS.get(model, {}).get(name)
    flags = _flags("select")
    if spec is not None and spec.positional:
        action = next(a for a in _subparser("select")._actions if a.dest == name)
    else:
        assert flag_name(model, name) in flags, f"{model.__name__}.{name} has no flag"
        action = flags[flag_name(model, name)]
    assert field.description and field.description.split(".")[0] in action.help
    if (model, name) not in DEFAULT_DIFFERS:
        assert action.default == field_default(field)
        assert getattr(_parse("select"), action.dest) == field_default(field)


def test_no_flags_build_the_default_models():
    args = _parse("select")
    assert cli._corpus(args) == CorpusParams()
    assert cli._encoder(args) == EncoderParams()
    assert cli._output(args) == OutputParams()
    assert cli._runner(args) == RunnerParams()
    assert cli._selection(args, cli._sampler_names(args), cli._sampler_options(args, ["coverage"])) == SelectionParams()


@pytest.mark.parametrize("model,name", [(m, n) for m, n in FIELDS if m.model_fields[n].metadata])
def test_numeric_bounds_come_from_the_field(model, name):
    field = model.model_fields[name]
    flag = flag_name(model, name)
    for bound in field.metadata:
        for attr, ok, bad in (("ge", 0, -1), ("gt", 1, 0), ("le", 0, 1), ("lt", -1, 0)):
            limit = getattr(bound, attr, None)
            if limit is None:
                continue
            if isinstance(limit, int) and name != "dedup":  # dedup is checked by check_threshold, after parsing
                with pytest.raises(SystemExit):
                    _parse("select", flag, str(limit + bad))
                if attr in ("ge", "le"):
                    assert getattr(_parse("select", flag, str(limit + ok)), name) == limit


def test_literal_choices_come_from_the_field():
    flags = _flags("select")
    checked = []
    for model, name in FIELDS:
        annotation = model.model_fields[name].annotation
        if get_origin(annotation) is Literal and name != "sampler":  # select takes several samplers, checked by name
            assert list(flags[flag_name(model, name)].choices) == list(get_args(annotation)), name
            checked.append(name)
    assert {"device", "backend", "index", "kind"} <= set(checked)


def test_budget_is_parsed_by_the_one_declaration():
    for command in ("select", "serve"):
        assert _flags(command)["--budget"].type is budget_type
    assert Budget is SelectionParams.model_fields["budget"].annotation
    assert [parse_budget(v) for v in ("0.05", "500", "5e2", "1.0")] == [0.05, 500, 500, 1]
    for bad in ("0", "1.5", "-3", "abc", "nan"):
        with pytest.raises(ValueError, match="budget"):
            parse_budget(bad)
    # evaluate's --budgets takes a list of the same budgets.
    assert _parse("evaluate", "--budgets", "0.1,20").budgets == [0.1, 20]


def test_select_help_is_grouped_by_model(capsys):
    with pytest.raises(SystemExit):
        main(["select", "--help"])
    text = capsys.readouterr().out
    positions = [text.index(f"\n{title}:\n") for title in SECTIONS]
    assert positions == sorted(positions)

"""The Run form fits the choice: the sampler is a tagged union (one branch per sampler, with its options only), the
budget branches have titles, and rules that span fields are checked at run creation where the server's JSON schema
can say them, else when the flow starts, with a one-line message, before any work.
"""

import pytest
from pydantic import ValidationError

from selectflow.flows.params import SAMPLER_CHOICES, CorpusParams, EncoderParams, OutputParams, SelectionParams
from selectflow.tasks.samplers import SAMPLERS


@pytest.fixture(scope="module")
def schema() -> dict:
    from prefect.utilities.callables import parameter_schema

    from selectflow.flows.pipeline import select_subset

    return parameter_schema(select_subset).model_dump_for_openapi()


def _validate(schema: dict, parameters: dict) -> str:
    """The server's check when a run is created (POST /deployments/{id}/create_flow_run): '' or its message."""
    from prefect.utilities.schema_tools import validate

    try:
        validate(parameters, schema, raise_on_error=True, ignore_required=True)
    except Exception as exc:  # ValidationError of prefect.utilities.schema_tools
        return str(exc)
    return ""


def test_the_form_has_one_branch_per_sampler_with_its_options_only(schema):
    sampler = schema["definitions"]["SelectionParams"]["properties"]["sampler"]
    assert sampler["discriminator"]["propertyName"] == "name"
    branches = {schema["definitions"][ref["$ref"].split("/")[-1]]["title"]: schema["definitions"][ref["$ref"].split("/")[-1]]
                for ref in sampler["oneOf"]}
    assert set(branches) == set(SAMPLERS)
    for name, branch in branches.items():
        assert set(branch["properties"]) == set(SAMPLERS[name].Options.model_fields) | {"name"}
        assert branch["properties"]["name"]["const"] == name if "const" in branch["properties"]["name"] else \
            branch["properties"]["name"]["enum"] == [name]
    assert "options" not in schema["definitions"]["SelectionParams"]["properties"]
    budget = schema["definitions"]["SelectionParams"]["properties"]["budget"]["anyOf"]
    assert [b["title"] for b in budget] == ["rows", "fraction"]


def test_the_server_rejects_another_samplers_options_when_the_run_is_created(schema):
    assert _validate(schema, {"selection": {"sampler": {"name": "kmeans", "k": 4}, "budget": 3}}) == ""
    assert "selection.sampler" in _validate(schema, {"selection": {"sampler": {"name": "kmeans", "greedy_fraction": 0.3}}})
    assert "selection.sampler" in _validate(schema, {"selection": {"sampler": {"name": "no-such"}}})
    assert "selection.sampler" in _validate(schema, {"selection": {"sampler": {"name": "kmeans", "k": -1}}})


def test_old_style_parameters_are_still_accepted_in_python():
    old = SelectionParams(sampler="kmeans", options={"kmeans": {"k": 4}, "mig": {"kmeans_iter": 3}})
    assert old == SelectionParams(sampler={"name": "kmeans", "k": 4})
    assert old.sampler_name == "kmeans" and old.sampler_options()["k"] == 4 and "name" not in old.sampler_options()
    assert SelectionParams().sampler == SAMPLER_CHOICES["coverage"]()
    # The manifest's config.selection keeps its keys: sampler (a name) and options (the chosen sampler's).
    from selectflow.flows.pipeline import _run_config

    config = _run_config(CorpusParams(), EncoderParams(), old)["selection"]
    assert config["sampler"] == "kmeans" and config["options"] == SAMPLERS["kmeans"].Options(k=4).model_dump()
    # A round trip through the deployment's JSON parameters.
    assert SelectionParams.model_validate(old.model_dump(mode="json")) == old
    with pytest.raises(ValidationError):
        SelectionParams(sampler={"name": "kmeans", "greedy_fraction": 0.3})


def test_the_cli_maps_sampler_and_options_onto_the_choice():
    from selectflow.flows import cli

    args = cli.build_parser().parse_args(["select", "--sampler", "kmeans", "-o", "k=4", "-o", "method=kcenter"])
    selection = cli._selection(args, cli._sampler_names(args), cli._sampler_options(args, ["kmeans"]))
    assert selection.sampler == SAMPLER_CHOICES["kmeans"](k=4, method="kcenter")


def test_a_rule_inside_the_selection_fails_when_the_model_is_built():
    with pytest.raises(ValidationError, match="per_group cannot be combined with partitioned selection"):
        SelectionParams(per_group=True, partitions=4)


def test_a_rule_inside_the_selection_fails_at_flow_start_before_any_task(monkeypatch, prefect_harness):
    from prefect.exceptions import ParameterTypeError

    import selectflow.flows.pipeline as pipeline

    monkeypatch.setattr(pipeline, "run_embed_corpus", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ParameterTypeError, match="per_group cannot be combined"):
        pipeline.select_subset(selection={"per_group": True, "partitions": 4})


@pytest.mark.parametrize("flags,message", [
    (["--per-group"], "--per-group needs a group column: pass --group COL."),
    (["--min-per-group", "2"], "--min-per-group needs a group column: pass --group COL."),
    (["--min-per-label", "1"], "--min-per-label needs a labels column: pass --labels COL."),
])
def test_rules_across_corpus_and_selection_fail_at_flow_start_in_one_line(flags, message, bundled_slice, tmp_path,
                                                                          monkeypatch, capsys, prefect_harness):
    import selectflow.flows.pipeline as pipeline
    from selectflow.flows.cli import main

    monkeypatch.setattr(pipeline, "run_embed_corpus", lambda *a, **k: pytest.fail("work started"))
    code = main(["select", str(bundled_slice), "--id", "id", "--out", str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"selectflow: error: {message}"
    assert not (tmp_path / "out").exists()


def test_the_flow_start_check_runs_for_served_runs_too(monkeypatch, bundled_slice, prefect_harness):
    import selectflow.flows.pipeline as pipeline
    from selectflow.tasks.errors import ConfigError

    monkeypatch.setattr(pipeline, "run_embed_corpus", lambda *a, **k: pytest.fail("work started"))
    # A deployment's parameters arrive as JSON: the old shape for the sampler, no group column, per_group on.
    with pytest.raises(ConfigError, match="--per-group needs a group column"):
        pipeline.select_subset(corpus={"path": str(bundled_slice), "id_column": "id"},
                               selection={"sampler": "random", "per_group": True},
                               output=OutputParams(out_dir="never").model_dump())

"""Command-line flags generated from the flow parameter models (flows/params.py, flows/runners.py).

Each model field is declared once, as a pydantic field; its flag takes the field's default, its description as
help, its `Literal` choices and its numeric bounds from there. List fields are repeatable and add up
(`action="extend"`: `--text a --text b` and `--text a b` both mean [a, b]). `FLAGS` only says where a flag's
name, metavar or parsing departs from the field, and why. `select` and `serve` add every model's flags the same
way, so the two commands cannot drift apart; `embed`, `dedup` and `evaluate` add the corpus, encoder and runner
flags (and --cache-dir) the same way too.

Every flag's `dest` is its field name, so `model_values(args, Model)` turns parsed arguments into a model.
"""

import argparse
import json
import types
from dataclasses import dataclass
from typing import Callable, Literal, Optional, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from selectflow.flows.params import CorpusParams, EncoderParams, OutputParams, SelectionParams, parse_budget
from selectflow.flows.runners import RunnerParams

# Help sections, in the order `selectflow select --help` shows them.
SECTIONS: dict[str, type[BaseModel]] = {
    "corpus": CorpusParams, "encoder": EncoderParams, "selection": SelectionParams, "output": OutputParams,
    "runner": RunnerParams,
}


@dataclass(frozen=True)
class Flag:
    """Where a field's flag departs from what its declaration would give."""

    name: Optional[str] = None       # default: --field-name
    metavar: Optional[str] = None
    parse: Optional[Callable] = None  # default: from the field's type and bounds
    split: Optional[str] = None      # a list option that also takes SEP-separated values (--format jsonl,hf)
    positional: bool = False
    why: str = ""                     # why the parsing departs from the declaration


def budget_type(value: str):
    """`Budget` (tasks/samplers/budget.py) as an argparse type."""
    try:
        return parse_budget(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def sampler_option(value: str) -> tuple[str, object]:
    if "=" not in value:
        raise argparse.ArgumentTypeError(f"sampler option {value!r} must look like NAME=VALUE, e.g. k=64")
    key, raw = value.split("=", 1)
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw
    return key.strip(), parsed


FLAGS: dict[type[BaseModel], dict[str, Flag]] = {
    CorpusParams: {
        "path": Flag("input", positional=True),
        "text_columns": Flag("--text", "COL"),
        "id_column": Flag("--id", "COL"),
        "quality_column": Flag("--quality", "COL"),
        "label_column": Flag("--labels", "COL"),
        "group_column": Flag("--group", "COL"),
        "embeddings": Flag(metavar="COL|FILE.npy"),
    },
    EncoderParams: {
        "model": Flag(metavar="PATH"),
        "batch_size": Flag(metavar="N"),
        "batch_tokens": Flag(metavar="N"),
    },
    SelectionParams: {
        "sampler": Flag(metavar="NAME", parse=str,
                        why="a tagged union (the sampler's name and its options): --sampler sets the name (select takes "
                            "several, comma-separated; the command checks each against SamplerName and reports an "
                            "unknown one as a one-line error), -o its options"),
        "budget": Flag(metavar="N|FRACTION", parse=budget_type, why="Budget (a union) parsed by params.parse_budget"),
        "seed": Flag(metavar="N"),
        "options": Flag("-o", "NAME=VALUE", parse=sampler_option,
                        why="the options of the `sampler` choice (no field of their own): repeatable NAME=VALUE, "
                            "checked against the chosen sampler's Options model; the default is its default options"),
        "target": Flag(metavar="CORPUS"),
        "target_text_columns": Flag("--target-text", "COL"),
        "feedback": Flag(metavar="FILE.parquet"),
        "previous_runs": Flag("--previous", "RUN_DIR"),
        "dedup": Flag(metavar="THRESHOLD", parse=str,
                      why="checked by semantic_dedup.check_threshold (the same (0, 1] bounds) with a one-line error"),
        "min_per_group": Flag(metavar="N"),
        "min_per_label": Flag(metavar="N"),
        "partitions": Flag(metavar="K"),
        "memory_limit": Flag(metavar="GiB"),
    },
    OutputParams: {
        "out_dir": Flag("--out", "DIR"),
        "formats": Flag("--format", "FORMAT", split=","),
        "cache_dir": Flag(metavar="DIR"),
    },
    RunnerParams: {
        "kind": Flag("--runner"),
        "address": Flag(metavar="ADDRESS"),
        "workers": Flag(metavar="N"),
        "unit_rows": Flag(metavar="N"),
        "shard_rows": Flag(metavar="N"),
    },
}

# -o NAME=VALUE: the options of the chosen sampler, which live in the `sampler` choice (no field of their own).
SAMPLER_OPTIONS_FIELD = FieldInfo(description="Options of the chosen sampler.")

# Fields with no flag at all, and why (none today: every field of every parameter model has one).
NOT_EXPOSED: dict[type[BaseModel], dict[str, str]] = {}


def flag_name(model: type[BaseModel], field: str) -> str:
    spec = FLAGS.get(model, {}).get(field, Flag())
    return spec.name or "--" + field.replace("_", "-")


def field_default(field: FieldInfo):
    default = field.get_default(call_default_factory=True)
    # A tagged-union choice (SelectionParams.sampler) defaults to its tag: the flag takes a name (--sampler NAME).
    return default.name if field.discriminator == "name" and isinstance(default, BaseModel) else default


def _unwrap(annotation):
    """(the type without Optional, whether None was allowed)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _bounded(kind: type, field: FieldInfo) -> Callable:
    """int or float, checked against the field's ge/gt/le/lt."""
    checks = []
    for m in field.metadata:
        if isinstance(m, Ge):
            checks.append((lambda v, b=m.ge: v >= b, f"at least {m.ge}"))
        elif isinstance(m, Gt):
            checks.append((lambda v, b=m.gt: v > b, f"above {m.gt}"))
        elif isinstance(m, Le):
            checks.append((lambda v, b=m.le: v <= b, f"at most {m.le}"))
        elif isinstance(m, Lt):
            checks.append((lambda v, b=m.lt: v < b, f"below {m.lt}"))
    what = "a whole number" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        failed = [say for ok, say in checks if not ok(value)]
        if failed:
            raise argparse.ArgumentTypeError(f"{text} must be {' and '.join(say for _, say in checks)}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _split(sep: str, choices) -> Callable:
    def parse(text: str) -> list[str]:
        items = [v.strip() for v in text.split(sep) if v.strip()]
        bad = [v for v in items if choices and v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"invalid choice {bad[0]!r} (choose from {', '.join(choices)})")
        return items

    return parse


class ExtendSplit(argparse.Action):
    """`action="extend"` for a type that splits one value into several (`--format jsonl,hf --format parquet`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, self.dest) or [])
        for value in values:
            items.extend(value)
        setattr(namespace, self.dest, items)


def help_text(field: FieldInfo, default, extra: str = "") -> str:
    text = (field.description or "").replace("Empty:", "Default:")
    if extra:
        text = f"{text} {extra}"
    shown = not (default is None or default is False or default == [] or default == "") and "Default:" not in text
    if shown:
        text += f" (default: {','.join(default) if isinstance(default, list) else default})"
    return text.replace("%", "%%")


_TYPES: dict = {}


def _cached(model, name, make):
    """One parsing function per field, shared by every command that has its flag."""
    if (model, name) not in _TYPES:
        _TYPES[model, name] = make()
    return _TYPES[model, name]


def argument(model: type[BaseModel], name: str, extra_help: str = "") -> tuple[list[str], dict]:
    """The add_argument call (names, keyword arguments) for one field."""
    field = SAMPLER_OPTIONS_FIELD if (model, name) == (SelectionParams, "options") else model.model_fields[name]
    spec = FLAGS.get(model, {}).get(name, Flag())
    default = field_default(field)
    kind, _ = _unwrap(field.annotation)
    kwargs: dict = {"default": default, "help": help_text(field, default, extra_help)}
    if name == "options" and model is SelectionParams:  # the options of the `sampler` choice
        kwargs.update(default=[], action="append", type=spec.parse, metavar=spec.metavar, dest="option",
                      help=help_text(field, [], "One NAME=VALUE each (repeatable), checked against the chosen "
                                                "sampler's options, listed below."))
        return ["-o", "--option"], kwargs
    if spec.positional:
        kwargs.update(nargs="?", metavar=spec.name)
        return [name], kwargs
    kwargs["dest"] = name
    if kind is bool:
        kwargs["action"] = "store_true"
        return [flag_name(model, name)], kwargs
    if spec.metavar:
        kwargs["metavar"] = spec.metavar
    if get_origin(kind) is list:
        kwargs["help"] = help_text(field, default, "Comma-separated or repeatable; values add up." if spec.split
                                   else "Repeatable; values add up, in order.")
        item = get_args(kind)[0]
        choices = list(get_args(item)) if get_origin(item) is Literal else None
        if spec.split:
            kwargs.update(nargs="+", action=ExtendSplit, type=_cached(model, name, lambda: _split(spec.split, choices)))
        else:
            kwargs.update(nargs="+", action="extend")
            if choices:
                kwargs["choices"] = choices
    elif spec.parse is not None:
        kwargs["type"] = spec.parse
    elif get_origin(kind) is Literal:
        kwargs["choices"] = list(get_args(kind))
    elif kind in (int, float):
        kwargs["type"] = _cached(model, name, lambda: _bounded(kind, field))
    return [flag_name(model, name)], kwargs


def add_model_flags(parser: argparse.ArgumentParser, model: type[BaseModel], *, title: str | None = None,
                    only: list[str] | None = None, extra_help: dict[str, str] | None = None):
    """Add one flag per field of `model` (or of the fields in `only`) to an argument group of `parser`."""
    doc = model.__doc__.strip().splitlines()[0] if model.__doc__ and only is None else None
    group = parser.add_argument_group(title or model.__name__, doc)
    skip = NOT_EXPOSED.get(model, {})
    for name in model.model_fields:
        if name in skip or (only is not None and name not in only):
            continue
        names, kwargs = argument(model, name, (extra_help or {}).get(name, ""))
        group.add_argument(*names, **kwargs)
        if model is SelectionParams and name == "sampler":
            # The sampler field is a tagged union (name + that sampler's options): --sampler NAME sets the tag,
            # -o NAME=VALUE the options (cli._selection maps both onto the choice).
            group.add_argument(*argument(SelectionParams, "options")[0], **argument(SelectionParams, "options")[1])
    return group


def add_params_flags(parser: argparse.ArgumentParser, sections: list[str] | None = None,
                     extra_help: dict[str, str] | None = None) -> None:
    """Every parameter model's flags, one help group per model (all five when `sections` is None)."""
    for title in sections or SECTIONS:
        add_model_flags(parser, SECTIONS[title], title=title, extra_help=extra_help)


def model_values(args: argparse.Namespace, model: type[BaseModel]) -> dict:
    """The parsed values of `model`'s fields (the ones this command has flags for), by field name."""
    return {name: getattr(args, name) for name in model.model_fields if hasattr(args, name)}

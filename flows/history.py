"""Run history and readable names for flow runs.

Deployment runs (served, or picked up by a worker) keep their own history: each writes into its own
subfolder of the output root, named by the flow run (`<UTC start>-<flow run name>-<first 8 hex of the run id>`),
and once its outputs are complete the root's `latest` file (written atomically) names that subfolder.
A retry of the same flow run writes to the same subfolder, so it resumes there. CLI and Python runs are not
deployment runs: they keep writing exactly where --out / out_dir says.

Flow runs are named after what they do (sampler, budget, corpus), e.g. `kmeans-5pct-instructions`,
`kmeans+mig-500rows-instructions` (select-many), `embed-instructions` (embed-corpus).
"""

import re
from pathlib import Path
from typing import Any

from selectflow.tasks.io import storage

LATEST = "latest"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", str(text)).strip("-.") or "run"


def budget_label(budget: Any) -> str:
    """0.05 -> '5pct', 500 -> '500rows'."""
    try:
        number = float(budget)
    except (TypeError, ValueError):
        return _slug(budget)
    if 0 < number < 1:
        return f"{number * 100:.4g}pct"
    return f"{int(number)}rows"


def corpus_label(path: Any) -> str:
    """The corpus file's stem ('instructions' for .../instructions.parquet); the folder's name for a folder."""
    name = str(path or "").rstrip("/").split("/")[-1]
    return _slug(Path(name).stem if "." in name.lstrip(".") else name) or "corpus"


def _field(model: Any, name: str, default: Any = None) -> Any:
    # The parameters are the validated models in a run, plain dicts where validation is off.
    if isinstance(model, dict):
        return model.get(name, default)
    return getattr(model, name, default)


def _parameters() -> dict:
    from prefect.runtime import flow_run

    return flow_run.parameters or {}


def _corpus_path(params: dict) -> str:
    corpus = params.get("corpus")
    if corpus is None:
        from selectflow.flows.params import bundled_corpus

        return bundled_corpus()
    return _field(corpus, "path", "corpus")


def _selection(params: dict):
    from selectflow.flows.params import SelectionParams

    return params.get("selection") or SelectionParams()


def _sampler_label(value: Any) -> str:
    # A sampler is a name, or a choice (a model or dict with `name` and that sampler's options).
    if isinstance(value, str):
        return value
    name = _field(value, "name")
    return str(name) if name else "sampler"


def _sampler_of(selection: Any) -> str:
    name = getattr(selection, "sampler_name", None)
    return name if isinstance(name, str) else _sampler_label(_field(selection, "sampler", "coverage"))


def select_subset_run_name() -> str:
    """`<sampler>-<budget>-<corpus>`: the flow_run_name of select-subset."""
    try:
        params = _parameters()
        selection = _selection(params)
        return (f"{_sampler_of(selection)}-{budget_label(_field(selection, 'budget', 0.05))}"
                f"-{corpus_label(_corpus_path(params))}")
    except Exception:  # a name never fails a run
        return "select-subset"


def select_many_run_name() -> str:
    """`<sampler>+<sampler>...-<budget>-<corpus>`: the flow_run_name of select-many."""
    try:
        params = _parameters()
        names = list(dict.fromkeys(_sampler_label(s) for s in params.get("samplers") or []))
        samplers = "+".join(names) if len(names) <= 4 else f"{len(names)}-samplers"
        return f"{samplers}-{budget_label(_field(_selection(params), 'budget', 0.05))}-{corpus_label(_corpus_path(params))}"
    except Exception:
        return "select-many"


def embed_corpus_run_name() -> str:
    """`embed-<corpus>`: the flow_run_name of embed-corpus."""
    try:
        return f"embed-{corpus_label(_corpus_path(_parameters()))}"
    except Exception:
        return "embed-corpus"


def run_folder_name() -> str | None:
    """The subfolder of this flow run under the output root, or None when the run is not a deployment run."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx is not None else None
    if run is None or run.deployment_id is None:
        return None
    when = run.expected_start_time or run.start_time
    stamp = when.strftime("%Y%m%dT%H%M%SZ") if when is not None else "run"
    return f"{stamp}-{_slug(run.name)}-{str(run.id).replace('-', '')[:8]}"


def _join(root: str, name: str) -> str:
    return storage.join(root, name) if storage.is_remote(root) else str(Path(root).expanduser() / name)


def run_output_dir(out_dir: str) -> tuple[str, str | None]:
    """(the folder this run writes, the output root whose `latest` names it; None outside deployment runs)."""
    name = run_folder_name()
    if name is None:
        return out_dir, None
    return _join(out_dir, name), out_dir


def mark_latest(root: str, run_dir: str | Path) -> None:
    """Point the root's `latest` file at `run_dir` (its name, one line), atomically: readers see the old or the new."""
    from selectflow.tasks.io.atomic import write_text

    write_text(_join(root, LATEST), storage.name(str(run_dir)) + "\n")


def latest_run(root: str | Path) -> str | Path:
    """The folder of the latest completed deployment run under `root` (its `latest` file)."""
    root = str(root)
    pointer = _join(root, LATEST)
    text = storage.read_text(pointer) if storage.is_remote(root) else Path(pointer).read_text()
    folder = _join(root, text.strip())
    return folder if storage.is_remote(root) else Path(folder)

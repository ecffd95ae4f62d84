"""Serve the pipeline flows from one long-running process (`prefect.serve`), for teams without a worker.

The process registers two deployments with the Prefect server, `select-subset/<name>` and
`embed-corpus/<name>`, each with an optional cron schedule, then polls the server and runs every
scheduled or UI-triggered run of them in a subprocess until it is stopped (Ctrl-C pauses the schedules).
The parameters given here become the deployments' defaults; the UI's Run form can change any of them,
and the server validates them against the flows' parameter schema when a run is created.
"""

import zoneinfo
from pathlib import Path

from prefect import serve
from prefect.schedules import Cron

from selectflow.flows.exclusive import corpus_limit_name, exclusive_limits, exclusive_tag
from selectflow.flows.params import CorpusParams, EncoderParams, OutputParams, SelectionParams
from selectflow.flows.pipeline import embed_corpus, select_subset
from selectflow.flows.runners import RunnerParams
from selectflow.tasks.errors import ConfigError

DEFAULT_SELECT_CRON = "0 3 * * *"  # every night at 03:00


def _schedule(cron: str | None, timezone: str, option: str) -> list:
    if not cron:
        return []
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"--timezone {timezone!r} is not an IANA time zone; pass e.g. UTC or Europe/Berlin.") from None
    try:
        return [Cron(cron, timezone=timezone)]
    except ValueError:
        raise ConfigError(f"{option} {cron!r} is not a cron expression; pass five fields, e.g. '0 3 * * *'.") from None


def _absolute(path: str | None) -> str | None:
    # Served runs start in subprocesses; absolute paths keep them independent of any working directory.
    return str(Path(path).expanduser().resolve()) if path else path


def build_deployments(
    name: str = "selectflow",
    select_cron: str | None = DEFAULT_SELECT_CRON,
    embed_cron: str | None = None,
    timezone: str = "UTC",
    corpus: CorpusParams | None = None,
    encoder: EncoderParams | None = None,
    selection: SelectionParams | None = None,
    output: OutputParams | None = None,
    runner: RunnerParams | None = None,
) -> list:
    """The two runner deployments `serve_flows` serves, with their schedules and default parameters."""
    corpus = corpus or CorpusParams()
    encoder = encoder or EncoderParams()
    selection = selection or SelectionParams()
    output = output or OutputParams()
    runner = runner or RunnerParams()
    embeddings = corpus.embeddings
    if embeddings and embeddings.endswith(".npy"):  # a file, not a column name
        embeddings = _absolute(embeddings)
    corpus = corpus.model_copy(update={"path": _absolute(corpus.path), "embeddings": embeddings})
    output = output.model_copy(update={"out_dir": _absolute(output.out_dir), "cache_dir": _absolute(output.cache_dir)})
    selection = selection.model_copy(update={"target": _absolute(selection.target), "feedback": _absolute(selection.feedback),
                                             "previous_runs": [_absolute(p) for p in selection.previous_runs]})
    select_parameters = {"corpus": corpus.model_dump(mode="json"), "encoder": encoder.model_dump(mode="json"),
                         "selection": selection.model_dump(mode="json"), "output": output.model_dump(mode="json"),
                         "runner": runner.model_dump(mode="json")}
    # Both deployments of this corpus share one concurrency limit (flows/exclusive.py): their runs never overlap,
    # nor do those of other `selectflow serve` processes on the same corpus file.
    tags = ["selectflow", exclusive_tag(corpus_limit_name(corpus.path))]
    embed_parameters = {"corpus": select_parameters["corpus"], "encoder": select_parameters["encoder"],
                        "cache_dir": output.cache_dir, "runner": select_parameters["runner"]}
    return [
        select_subset.to_deployment(
            name=name, schedules=_schedule(select_cron, timezone, "--cron"), parameters=select_parameters,
            description="Embed the corpus, select a subset, write selected.parquet, manifest.json and the report.",
            tags=tags,
        ),
        embed_corpus.to_deployment(
            name=name, schedules=_schedule(embed_cron, timezone, "--embed-cron"), parameters=embed_parameters,
            description="Embed and index the corpus into the cache, ready for selections.",
            tags=tags,
        ),
    ]


def serve_flows(
    name: str = "selectflow",
    select_cron: str | None = DEFAULT_SELECT_CRON,
    embed_cron: str | None = None,
    timezone: str = "UTC",
    corpus: CorpusParams | None = None,
    encoder: EncoderParams | None = None,
    selection: SelectionParams | None = None,
    output: OutputParams | None = None,
    runner: RunnerParams | None = None,
    limit: int | None = 1,
) -> None:
    """Register both deployments and run their scheduled and triggered runs until interrupted.

    `limit` caps concurrent runs (default 1: each run already uses every core for the encoder).
    """
    deployments = build_deployments(name, select_cron, embed_cron, timezone, corpus, encoder, selection, output, runner)
    create_limits(deployments)
    serve(*deployments, limit=limit)


def create_limits(deployments) -> list[str]:
    """Create the concurrency limits the served runs take, when missing (limit 1 each): the corpus's exclusive limit
    and one per GPU of this machine (tasks/concurrency_limits.py). Strict: runs never meet a missing limit."""
    from selectflow.tasks.concurrency_limits import create_local_gpu_limits, ensure_limits

    limits = list(dict.fromkeys(name for d in deployments for name in exclusive_limits(d.tags)))
    return ensure_limits(limits) + create_local_gpu_limits()

"""The pipeline flows: they wire tasks together and do nothing else.

embed_corpus:  corpus -> prepared rows -> embeddings (through the store) -> FAISS index  (an EmbeddedCorpus)
select_subset: embed_corpus, then sampler -> selected.parquet + manifest.json + report.json/html + artifacts
select_groups: per-group selection, one select task mapped per group (its group and quota), then one merge
select_many:   several samplers on one embed_corpus, one output folder each, then a comparison report
The results they pass on are the typed models of tasks/io/results.py.
"""

import time
from pathlib import Path
from typing import Optional, Union

from prefect import flow, unmapped

from selectflow.flows.params import (CorpusParams, EncoderParams, OutputParams, SamplerChoice, SamplerName, SelectionParams,
                                     sampler_choice)
from selectflow.flows import failures, history
from selectflow.flows.exclusive import exclusive
from selectflow.tasks.corpus import prepare_corpus_task
from selectflow.flows.runners import RunnerParams, run_on
from selectflow.tasks.embed import assemble_task, encode_unit_task, plan_embedding_task
from selectflow.tasks.import_embeddings import import_embeddings_task
from selectflow.tasks.index import build_index_task
from selectflow.tasks.errors import ConfigError
from selectflow.tasks.io import storage
from selectflow.tasks.io.hashing import config_hash
from selectflow.tasks.io.outputs import check_output_dir
from selectflow.tasks.io.results import EmbeddedCorpus, Embeddings, PreparedCorpus, Selection
from selectflow.tasks.io.workspace import Workspace
from selectflow.tasks.report import publish_artifacts_task, write_outputs_task
from selectflow.tasks.planning.sampler_run import Rounds, SamplerRun
from selectflow.tasks.select import merge_groups_task, plan_groups_task, select_task


class _Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    def run(self, stage: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            with failures.stage(stage):
                return fn(*args, **kwargs)
        finally:
            self.seconds[stage] = round(time.perf_counter() - t0, 3)


@flow(name="embed-corpus", log_prints=True, flow_run_name=history.embed_corpus_run_name,
      on_failure=[failures.publish_failure])
@exclusive  # a deployment's run holds its corpus's limit: scheduled runs of one corpus never overlap (flows/exclusive.py)
def embed_corpus(
    corpus: CorpusParams = CorpusParams(),
    encoder: EncoderParams = EncoderParams(),
    cache_dir: str | None = None,
    runner: RunnerParams = RunnerParams(),
) -> EmbeddedCorpus:
    """Read and validate the corpus, embed what the store does not have yet, and build the FAISS index."""
    cache = str(Workspace(cache_dir).root)
    timer = _Timer()
    prepared, embedded = prepare_and_embed(corpus, encoder, cache=cache, runner=runner, timer=timer)
    index = timer.run("index", build_index_task, embedded, encoder.index, cache)
    return EmbeddedCorpus(prepared=prepared, embeddings=embedded, index=index, timings=timer.seconds, cache_dir=cache)


def prepare_and_embed(corpus: CorpusParams, encoder: EncoderParams, *, cache: str, runner: RunnerParams,
                      timer: "_Timer") -> tuple[PreparedCorpus, Embeddings]:
    """The prepared corpus and its embeddings (imported, or encoded through the store), timed as 'corpus' and 'embed'."""
    prepared = timer.run("corpus", prepare_corpus_task, corpus.spec(), cache)
    if corpus.embeddings:
        embedded = timer.run("embed", import_embeddings_task, prepared, corpus.embeddings, corpus.normalize_embeddings, cache)
    else:
        embedded = timer.run("embed", _embed, prepared, encoder, cache, runner)
    return prepared, embedded


def encode_units(prepared: PreparedCorpus, encoder: EncoderParams, cache: str, runner: RunnerParams):
    """Plan the encoding units and run them (mapped over the task runner): the plan, the texts each unit encoded
    (every unit waited for; one error naming each failed unit) and the seconds the units took. Shared by the
    matrix path (_embed) and the partitioned path (embeddings kept as shards)."""
    plan = plan_embedding_task(prepared, model=encoder.model, device=encoder.device, cache_dir=cache,
                               unit_rows=runner.unit_rows, backend=encoder.backend)
    t0 = time.perf_counter()
    futures = encode_unit_task.map(list(range(len(plan.units))), prepared=unmapped(prepared), plan=unmapped(plan),
                                   model=unmapped(encoder.model), batch_size=unmapped(encoder.batch_size),
                                   cache_dir=unmapped(cache), shard_rows=unmapped(runner.shard_rows),
                                   backend=unmapped(encoder.backend), batch_tokens=unmapped(encoder.batch_tokens))
    encoded = failures.collect(futures, "encode-unit", [f"unit {i}" for i in range(len(futures))])
    return plan, encoded, time.perf_counter() - t0


def _embed(prepared: PreparedCorpus, encoder: EncoderParams, cache: str, runner: RunnerParams) -> Embeddings:
    plan, encoded, seconds = encode_units(prepared, encoder, cache, runner)
    return assemble_task(prepared, plan, encoded, cache_dir=cache, encode_seconds=seconds)


def run_embed_corpus(corpus: CorpusParams, encoder: EncoderParams, cache_dir: str | None, runner: RunnerParams) -> EmbeddedCorpus:
    """embed_corpus on the chosen task runner."""
    return run_on(runner, embed_corpus, corpus, encoder, cache_dir, runner)


@flow(name="select-groups", log_prints=True)
def select_groups(prepared: PreparedCorpus, embedded: Embeddings, *, selection: SelectionParams, cache: str,
                  target: Optional[Embeddings] = None) -> Selection:
    """Per-group selection: one sampler task per group (mapped over the task runner), then one merged selection."""
    plan = plan_groups_task(prepared, selection.budget, selection.min_per_group)
    run = _sampler_run(selection)
    futures = select_task.map(
        group=[g.group for g in plan], quota=[g.quota for g in plan],
        prepared=unmapped(prepared), embeddings=unmapped(embedded), index=unmapped(None), run=unmapped(run),
        rounds=unmapped(_rounds(selection, target)), cache_dir=unmapped(cache), dedup=unmapped(selection.dedup),
        min_per_label=unmapped(selection.min_per_label))
    parts = failures.collect(futures, "select", [f"group {g.group}" for g in plan])
    return merge_groups_task(parts, plan, run=run, cache_dir=cache)


def _sampler_run(selection: SelectionParams) -> SamplerRun:
    return SamplerRun(sampler=selection.sampler_name, options=selection.sampler_options(), budget=selection.budget,
                      seed=selection.seed)


def _rounds(selection: SelectionParams, target: Embeddings | None) -> Rounds:
    return Rounds(target=target, feedback=selection.feedback, previous=selection.previous_runs or [])


def _embed_for(selection: SelectionParams):
    """embed_corpus, or in partitioned selection embed_shards (no (N, D) matrix, no index over all rows)."""
    from selectflow.flows.partitioned_flow import run_embed_shards

    return run_embed_shards if selection.partitioned() else run_embed_corpus


def check_floors(corpus: CorpusParams, selection: SelectionParams) -> None:
    """Rules that span the corpus and selection parameters (the server's JSON schema cannot express them):
    per-group selection and coverage floors need their column. Fails at flow start, before any work, naming the flag."""
    if selection.per_group and not corpus.group_column:
        raise ConfigError("--per-group needs a group column: pass --group COL.")
    if selection.min_per_group is not None and not corpus.group_column:
        raise ConfigError("--min-per-group needs a group column: pass --group COL.")
    if selection.min_per_label is not None and not corpus.label_column:
        raise ConfigError("--min-per-label needs a labels column: pass --labels COL.")
    from selectflow.flows.partitioned_flow import check_partitioned

    check_partitioned(selection)


def _run_config(corpus: CorpusParams, encoder: EncoderParams, selection: SelectionParams) -> dict:
    """Everything that decides a run's outputs: its identity (run key) and the manifest's configuration."""
    return {"corpus": corpus.model_dump(), "encoder": encoder.model_dump(),
            "selection": {"sampler": selection.sampler_name, "budget": selection.budget, "seed": selection.seed,
                          "options": selection.sampler_options(), "target": selection.target,
                          "target_text_columns": selection.target_text_columns, "feedback": selection.feedback,
                          "previous_runs": selection.previous_runs, "per_group": selection.per_group,
                          **({"dedup": selection.dedup} if selection.dedup is not None else {}), **selection.floors(),
                          **{k: v for k, v in (("partitions", selection.partitions),
                                               ("memory_limit", selection.memory_limit)) if v is not None}}}


def _select_and_write(embedded: EmbeddedCorpus, *, corpus: CorpusParams, encoder: EncoderParams, selection: SelectionParams,
                      output: OutputParams, runner: RunnerParams, out_dir, run_key: str, config: dict) -> dict:
    cache, timer = embedded.cache_dir, _Timer()
    timer.seconds.update(embedded.timings)
    target = None
    if selection.target:
        target_corpus = CorpusParams(path=selection.target, text_columns=selection.target_text_columns or corpus.text_columns)
        target = timer.run("target", run_embed_corpus, target_corpus, encoder, output.cache_dir, runner).embeddings
    if selection.partitioned():
        from selectflow.flows.partitioned_flow import run_select_partitioned

        chosen = timer.run("select", run_select_partitioned, embedded.prepared, embedded.embeddings, selection, cache, runner)
    elif selection.per_group:
        chosen = timer.run("select", run_on, runner, select_groups, embedded.prepared, embedded.embeddings,
                           selection=selection, cache=cache, target=target)
    else:
        chosen = timer.run("select", select_task, prepared=embedded.prepared, embeddings=embedded.embeddings,
                           index=embedded.index, run=_sampler_run(selection), rounds=_rounds(selection, target),
                           cache_dir=cache, dedup=selection.dedup, **selection.floors())
    with failures.stage("write-outputs"):
        outputs = write_outputs_task(spec=corpus.spec(), prepared=embedded.prepared, embeddings=embedded.embeddings,
                                     index=embedded.index, selection=chosen, out_dir=str(out_dir), run_key=run_key,
                                     config=config, timings=timer.seconds, formats=tuple(output.formats))
    with failures.stage("publish-artifacts"):
        publish_artifacts_task(outputs, embedded.prepared, chosen)
    return {**outputs, "run_key": run_key, "prepared": embedded.prepared, "embedded": embedded.embeddings,
            "index": embedded.index, "selection": chosen}


@flow(name="select-subset", log_prints=True, flow_run_name=history.select_subset_run_name,
      on_failure=[failures.publish_failure])
@exclusive
def select_subset(
    corpus: CorpusParams = CorpusParams(),
    encoder: EncoderParams = EncoderParams(),
    selection: SelectionParams = SelectionParams(),
    output: OutputParams = OutputParams(),
    runner: RunnerParams = RunnerParams(),
) -> dict:
    """The whole pipeline: embed the corpus, select a subset, write the Parquet, manifest and audit report."""
    check_floors(corpus, selection)
    config = _run_config(corpus, encoder, selection)
    run_key = config_hash(config)
    # A deployment run writes its own subfolder of out_dir (run history); a CLI run writes out_dir itself.
    run_dir, history_root = history.run_output_dir(output.out_dir)
    out_dir = check_output_dir(run_dir, run_key, output.overwrite)
    embedded = _embed_for(selection)(corpus, encoder, output.cache_dir, runner)
    result = _select_and_write(embedded, corpus=corpus, encoder=encoder, selection=selection, output=output, runner=runner,
                               out_dir=out_dir, run_key=run_key, config=config)
    if history_root is not None:
        history.mark_latest(history_root, out_dir)
    return result


@flow(name="select-many", log_prints=True, flow_run_name=history.select_many_run_name,
      on_failure=[failures.publish_failure])
@exclusive
def select_many(
    samplers: list[Union[SamplerName, SamplerChoice]],  # type: ignore[valid-type]
    corpus: CorpusParams = CorpusParams(),
    encoder: EncoderParams = EncoderParams(),
    selection: SelectionParams = SelectionParams(),
    output: OutputParams = OutputParams(),
    runner: RunnerParams = RunnerParams(),
) -> dict:
    """Several samplers on one embedding pass: one output folder each under out_dir, then a comparison report."""
    from selectflow.flows.compare_flow import compare_runs

    check_floors(corpus, selection)
    if storage.is_remote(output.out_dir):
        # The per-sampler runs could go to object storage, but the comparison reads them from local folders.
        raise ConfigError(f"--out {storage.redact(output.out_dir)}: several samplers in one run need a local output "
                          "folder (the comparison report reads the runs from disk); run one sampler per command to "
                          "write to object storage, or pass a local --out.")
    run_root, history_root = history.run_output_dir(output.out_dir)  # a deployment run: its own subfolder
    planned = []
    # Each sampler once, in order: a choice with its options, or a name (the selection's options when it is the
    # selection's sampler, else that sampler's defaults).
    choices = {}
    for spec in samplers:
        choice = sampler_choice(selection.sampler if spec == selection.sampler_name else spec)
        choices.setdefault(choice.name, choice)
    for name, choice in choices.items():
        chosen = selection.with_sampler(choice)
        config = _run_config(corpus, encoder, chosen)
        run_key = config_hash(config)
        # Every folder is checked before any work, so a refusal never leaves half of the runs written.
        planned.append((chosen, config, run_key, check_output_dir(Path(run_root) / name, run_key, output.overwrite)))
    embedded = _embed_for(selection)(corpus, encoder, output.cache_dir, runner)
    runs = []
    for chosen, config, key, out in planned:
        with failures.stage(f"sampler {_sampler_run(chosen).sampler}"):
            runs.append(_select_and_write(embedded, corpus=corpus, encoder=encoder, selection=chosen, output=output,
                                          runner=runner, out_dir=out, run_key=key, config=config))
    with failures.stage("compare"):
        comparison = compare_runs([r["out_dir"] for r in runs], out_dir=str(Path(run_root) / "compare"),
                                  seed=selection.seed, overwrite=True) if len(runs) > 1 else None
    if history_root is not None:
        history.mark_latest(history_root, run_root)
    return {"runs": runs, "comparison": comparison, "embedded": embedded.embeddings, "prepared": embedded.prepared}

"""Partitioned selection (issue #13), the pipeline's mode for corpora no machine holds as one (N, D) matrix.

embed_shards        corpus -> prepared rows -> embeddings as shards (the user's .npy shards, checked one task per
                    shard; or the store's embeddings written one task per range of rows). No matrix, no index.
select_partitioned  centroids on a seeded sample -> one route task per shard -> the budget over partitions ->
                    one select task per partition (its own rows and columns only) -> one merge task: a Selection.

Chosen with `--partitions K` or `--memory-limit GiB` (SelectionParams.partitioned); every sampler runs this way.
Not combined (refused before any work): --per-group, --dedup, the coverage floors, --target, --feedback, --previous.
"""

import time

from prefect import flow, unmapped

from selectflow.flows import failures
from selectflow.flows.params import CorpusParams, EncoderParams, SelectionParams
from selectflow.flows.runners import RunnerParams, run_on
from selectflow.tasks.errors import ConfigError
from selectflow.tasks.io import storage
from selectflow.tasks.io.results import EmbeddedCorpus, Embeddings, PreparedCorpus, Selection
from selectflow.tasks.io.workspace import Workspace
from selectflow.tasks.planning.sampler_run import SamplerRun

NOT_WITH_PARTITIONS = {"per_group": "--per-group", "dedup": "--dedup", "min_per_group": "--min-per-group",
                       "min_per_label": "--min-per-label", "target": "--target", "feedback": "--feedback",
                       "previous_runs": "--previous"}


def check_partitioned(selection: SelectionParams) -> None:
    """Refuse, before any work, what partitioned selection does not do yet."""
    if not selection.partitioned():
        return
    used = [flag for field, flag in NOT_WITH_PARTITIONS.items() if getattr(selection, field)]
    if used:
        raise ConfigError(f"Partitioned selection (--partitions / --memory-limit) cannot be combined with {', '.join(used)} yet.")


@flow(name="embed-shards", log_prints=True)
def embed_shards(corpus: CorpusParams = CorpusParams(), encoder: EncoderParams = EncoderParams(),
                 cache_dir: str | None = None, runner: RunnerParams = RunnerParams()) -> EmbeddedCorpus:
    """The prepared corpus and its embeddings as shards; no (N, D) matrix is assembled and no index is built."""
    from selectflow.tasks.corpus import prepare_corpus_task

    cache = str(Workspace(cache_dir).root)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    prepared = prepare_corpus_task(corpus.spec(), cache)
    timings["corpus"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    if corpus.embeddings:
        embedded = _import_shards(prepared, corpus.embeddings, corpus.normalize_embeddings, cache)
    else:
        embedded = _encode_shards(prepared, encoder, cache, runner)
    timings["embed"] = round(time.perf_counter() - t0, 3)
    return EmbeddedCorpus(prepared=prepared, embeddings=embedded, index=None, timings=timings, cache_dir=cache)


def _import_shards(prepared: PreparedCorpus, source: str, normalize: bool, cache: str) -> Embeddings:
    from selectflow.tasks.embedding.sharded import is_sharded_source
    from selectflow.tasks.import_embeddings import import_embeddings_task
    from selectflow.tasks.partitioned import imported_shards_result, import_shard_task, plan_import_task

    if not is_sharded_source(source):
        # A list-of-floats column of the input: imported as today (written chunk by chunk, never held in memory),
        # and that file is the one shard.
        embedded = import_embeddings_task(prepared, source, normalize, cache)
        return embedded.model_copy(update={"shards": [embedded.matrix_path]})
    plan = plan_import_task(prepared, source, cache)
    futures = import_shard_task.map(list(range(len(plan.files))), plan=unmapped(plan), prepared=unmapped(prepared),
                                    normalize=unmapped(normalize), cache_dir=unmapped(cache))
    parts = failures.collect(futures, "import-shard", [f"shard {i}" for i in range(len(plan.files))])
    return imported_shards_result(source=source, prepared=prepared, parts=parts, normalize=normalize, cache_dir=cache)


def _encode_shards(prepared: PreparedCorpus, encoder: EncoderParams, cache: str, runner: RunnerParams) -> Embeddings:
    """Encode what the store lacks (the same units as embed_corpus), then one shard per unit_rows corpus rows."""
    from selectflow.flows.pipeline import encode_units
    from selectflow.tasks.embedding.encoder import EncoderInfo
    from selectflow.tasks.embedding.sharded import write_shard_list
    from selectflow.tasks.partitioned import assemble_shard_task

    plan, per_unit, seconds = encode_units(prepared, encoder, cache, runner)
    encoded = int(sum(per_unit))
    starts = list(range(0, prepared.n_usable, runner.unit_rows))
    stops = [min(prepared.n_usable, s + runner.unit_rows) for s in starts]
    futures = assemble_shard_task.map(starts, stop=stops, prepared=unmapped(prepared), plan=unmapped(plan),
                                      cache_dir=unmapped(cache))
    parts = failures.collect(futures, "assemble-shard", [f"rows {a}-{b}" for a, b in zip(starts, stops)])
    info = EncoderInfo(**plan.encoder)
    listing = write_shard_list(Workspace(cache).path("matrix", f"{plan.key}.shards.json"), [p["path"] for p in parts],
                               [p["rows"] for p in parts], info.dim)
    n = prepared.n_usable
    return Embeddings(matrix_path=str(listing), shards=[p["path"] for p in parts], n_rows=n, dim=info.dim,
                      store_dir=None, store_key=None, key=plan.key, encoded=encoded, reused=max(0, n - encoded),
                      truncated=int(sum(p["truncated"] for p in parts)), max_seq_length=info.max_seq_length,
                      encode_seconds=seconds, texts_per_second=(encoded / seconds) if encoded and seconds > 0 else None,
                      encoder=info.to_dict())


def run_embed_shards(corpus: CorpusParams, encoder: EncoderParams, cache_dir: str | None, runner: RunnerParams) -> EmbeddedCorpus:
    """embed_shards on the chosen task runner."""
    return run_on(runner, embed_shards, corpus, encoder, cache_dir, runner)


@flow(name="select-partitioned", log_prints=True)
def select_partitioned(prepared: PreparedCorpus, embedded: Embeddings, *, selection: SelectionParams, cache: str) -> Selection:
    """Partitioned selection: fit, route (one task per shard), select (one task per partition), merge."""
    from selectflow.tasks.partitioned import (fit_partitions_task, merge_partitions_task, partition_selection_key,
                                              plan_partition_budget_task, resolve_partitions, resolved_budget,
                                              route_shard_task, select_partition_task, selection_dir)
    from selectflow.tasks.samplers import get_sampler

    name = getattr(selection, "sampler_name", None) or selection.sampler  # a tagged choice or a name
    run = SamplerRun(sampler=name, options=selection.sampler_options(), budget=selection.budget,
                     seed=selection.seed)
    options = get_sampler(run.sampler, run.options).options.model_dump()  # validates the options before any work
    n_budget = resolved_budget(run, embedded.n_rows)
    k = resolve_partitions(embedded.n_rows, embedded.dim, selection.partitions, selection.memory_limit)
    key = partition_selection_key(embedded, run, options, n_budget, k)
    folder = selection_dir(cache, key)
    if storage.exists(storage.join(folder, "selection.json")):
        return Selection.read(storage.join(folder, "selection.json"))
    plan = fit_partitions_task(embedded, k=k, seed=selection.seed, cache_dir=cache)
    shards = list(range(len(plan.shards)))
    failures.collect(route_shard_task.map(shards, plan=unmapped(plan)), "route-shard", [f"shard {i}" for i in shards])
    budget = plan_partition_budget_task(plan, run.sampler, n_budget)
    busy = [p for p in range(k) if budget.quotas[p] > 0]
    futures = select_partition_task.map(busy, plan=unmapped(plan), budget=unmapped(budget), prepared=unmapped(prepared),
                                        run=unmapped(run), out_dir=unmapped(folder))
    parts = failures.collect(futures, "select-partition", [f"partition {p}" for p in busy])
    return merge_partitions_task(parts, plan=plan, budget=budget, run=run, key=key, out_dir=folder)


def run_select_partitioned(prepared: PreparedCorpus, embedded: Embeddings, selection: SelectionParams, cache: str,
                           runner: RunnerParams) -> Selection:
    return run_on(runner, select_partitioned, prepared, embedded, selection=selection, cache=cache)

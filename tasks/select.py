"""Prefect tasks: run one sampler over the embeddings (or reuse its cached result); per-group plan and merge.

The work is plain code: io/selection_input.py (the sampler's input, selection.npz), planning/sampler_run.py
(dedup, sampler, floors) and planning/groups.py (quotas per group, the merge); these tasks read, call, write.
"""

import time

import polars as pl
from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

from .errors import ConfigError
from .io import storage
from .io.atomic import write_json
from .io.hashing import config_hash
from .io.results import DedupSummary, Embeddings, IndexRef, PreparedCorpus, Selection
from .io.selection_input import load_arrays, load_selection_input, save_arrays
from .io.workspace import Workspace
from .planning.groups import GroupQuota, merge_arrays, merged_record, plan_groups
from .planning.sampler_run import Rounds, SamplerRun, run_sampler, selection_arrays, selection_key
from .retry import RETRY_OPTIONS
from .samplers import get_sampler, resolve_budget

@task(name="select", cache_policy=NONE, **RETRY_OPTIONS)
def select_task(*, prepared: PreparedCorpus, embeddings: Embeddings, index: IndexRef | None, run: SamplerRun,
                rounds: Rounds, cache_dir: str, group: str | None = None, quota: int | None = None,
                dedup: float | None = None, min_per_group: int | None = None,
                min_per_label: int | None = None) -> Selection:
    """Run the sampler over the whole corpus, or, with `group`, over that group's rows only (`quota` rows of it).

    With `dedup` (a cosine threshold), semantic dedup runs first (within the group, if any) and the sampler
    selects among the rows it keeps; the dropped rows and the kept row each was dropped for are saved too.
    """
    logger = get_run_logger()
    chosen = get_sampler(run.sampler, run.options)  # validates the options before any work
    budget = run.budget if quota is None else quota
    n_budget = resolve_budget(budget, prepared.n_usable)
    key = selection_key(embeddings=embeddings, index=index, run=run, options=chosen.options.model_dump(), n_budget=n_budget,
                        rounds=rounds, group=group, dedup=dedup, min_per_group=min_per_group, min_per_label=min_per_label)
    folder = Workspace(cache_dir).selection_dir(key)
    meta_path = storage.join(folder, "selection.json")
    if storage.exists(meta_path):
        logger.info("reusing the cached %s selection of %d rows", run.sampler, n_budget)
        return Selection.read(meta_path)
    data, facts = load_selection_input(prepared, embeddings, index, target=rounds.target, feedback=rounds.feedback,
                                       previous=rounds.previous, mmap=group is not None)
    t0 = time.perf_counter()
    selection, extra = run_sampler(chosen, data, n_budget, run.seed, group=group, dedup=dedup, min_per_group=min_per_group,
                                   min_per_label=min_per_label)
    selection.diagnostics.update(facts)
    seconds = time.perf_counter() - t0
    arrays = save_arrays(storage.join(folder, "selection.npz"), selection_arrays(selection, extra))
    result = Selection(key=key, sampler=run.sampler, options=chosen.options.model_dump(), budget=n_budget,
                       budget_requested=budget, seed=run.seed, arrays=str(arrays),
                       has_clusters=selection.clusters is not None, diagnostics=selection.diagnostics, seconds=seconds,
                       dedup=None if dedup is None else DedupSummary(threshold=dedup, rows_dropped=len(extra["dedup_dropped"])))
    write_json(meta_path, result.record())
    logger.info("%s selected %d of %d rows in %.1fs", run.sampler, n_budget, prepared.n_usable, seconds)
    return result


@task(name="plan-groups", cache_policy=NONE)
def plan_groups_task(prepared: PreparedCorpus, budget: int | float, min_per_group: int | None = None) -> list[GroupQuota]:
    """The budget split over the groups (planning/groups.py: plan_groups)."""
    if not prepared.has_groups:
        raise ConfigError("Per-group selection needs a group column: pass --group COL.")
    groups = pl.read_parquet(storage.local_copy(prepared.prepared_path), columns=["group"])["group"]
    return plan_groups(groups, resolve_budget(budget, prepared.n_usable), min_per_group)


@task(name="merge-groups", cache_policy=NONE)
def merge_groups_task(parts: list[Selection], plan: list[GroupQuota], *, run: SamplerRun, cache_dir: str) -> Selection:
    """One selection from the per-group ones: groups interleaved by rank, largest group first."""
    merged = merge_arrays([load_arrays(p) for p in parts])
    key = config_hash({"parts": [p.key for p in parts]})
    folder = Workspace(cache_dir).selection_dir(key)
    path = save_arrays(storage.join(folder, "selection.npz"), merged)
    result = merged_record(parts, plan, key=key, sampler=run.sampler, budget=run.budget, seed=run.seed, arrays=str(path),
                           n_rows=int(len(merged["rows"])))
    write_json(storage.join(folder, "selection.json"), result.record())
    return result.model_copy(update={"reused": all(p.reused for p in parts)})

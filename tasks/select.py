"""Prefect task: run one sampler over the embeddings (or reuse its cached result)."""

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

from .embedding.faiss_index import load_index, searcher
from .io.atomic import atomic_path, write_json
from .io.hashing import config_hash, file_hash
from .io.rounds import feedback_scores, previous_rows
from .io.workspace import Workspace
from .samplers import SelectionInput, get_sampler, resolve_budget
from .samplers.base import subset_input
from .samplers.semantic_dedup import VERSION as DEDUP_VERSION
from .samplers.floors import apply_floors, floor_quotas
from .samplers.quotas import allocate_quotas


def load_selection_input(prepared: dict, embedded: dict, index: dict | None, target: dict | None = None,
                         feedback: str | None = None, previous: list[str] | None = None,
                         mmap: bool = False) -> tuple[SelectionInput, dict]:
    """The sampler's input, plus facts for the diagnostics (ids of earlier rounds or feedback not found)."""
    cols = ["id", "quality", "labels", "group"]
    frame = pl.read_parquet(prepared["prepared_path"], columns=cols)
    knn = None
    if index is not None:
        faiss_index, _ = load_index(index["path"])
        knn = searcher(faiss_index)
    ids = frame["id"].to_numpy()
    facts: dict = {}
    prev = None
    if previous:
        prev, facts["previous_ids_not_in_corpus"] = previous_rows(previous, ids)
        facts["previous_rows"] = int(len(prev))
    fb = None
    if feedback:
        fb, facts["feedback_ids_not_in_corpus"] = feedback_scores(feedback, ids)
        facts["feedback_rows"] = int(np.isfinite(fb).sum())
    data = SelectionInput(
        embeddings=np.load(embedded["matrix_path"], allow_pickle=False, mmap_mode="r" if mmap else None),
        quality=frame["quality"].to_numpy() if prepared["has_quality"] else None,
        labels=[tuple(x) for x in frame["labels"].to_list()] if prepared["has_labels"] else None,
        groups=frame["group"].to_numpy() if prepared["has_groups"] else None,
        ids=ids,
        knn=knn,
        target_embeddings=np.load(target["matrix_path"], allow_pickle=False) if target else None,
        feedback=fb,
        previous_rows=prev,
    )
    return data, facts


@task(name="select", cache_policy=NONE)
def select_task(prepared: dict, embedded: dict, index: dict | None, sampler: str, options: dict,
                budget: float, seed: int, cache_dir: str, target: dict | None = None, feedback: str | None = None,
                previous: list[str] | None = None, group: str | None = None, dedup: float | None = None,
                min_per_group: int | None = None, min_per_label: int | None = None) -> dict:
    """Run the sampler over the whole corpus, or, with `group`, over that group's rows only (budget: a row count).

    With `dedup` (a cosine threshold), semantic dedup runs first (within the group, if any) and the sampler
    selects among the rows it keeps; the dropped rows and the kept row each was dropped for are saved too.
    """
    logger = get_run_logger()
    chosen = get_sampler(sampler, options)  # validates the options before any work
    n_budget = resolve_budget(budget, prepared["n_usable"])
    rounds = {"target": target["key"] if target else None,
              "feedback": file_hash(feedback) if feedback else None,
              "previous": [file_hash(p if not Path(p).is_dir() else Path(p) / "selected.parquet") for p in previous or []]}
    key = config_hash({"matrix": embedded["key"], "sampler": sampler, "options": chosen.options.model_dump(),
                       "budget": n_budget, "seed": seed, "index": index["key"] if index else None, "rounds": rounds,
                       "group": group, **({"dedup": {"threshold": dedup, "version": DEDUP_VERSION}} if dedup is not None else {}),
                       **({"min_per_group": min_per_group} if min_per_group else {}),
                       **({"min_per_label": min_per_label} if min_per_label else {})})
    folder = Workspace(cache_dir).selection_dir(key)
    meta_path = folder / "selection.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        logger.info("reusing the cached %s selection of %d rows", sampler, n_budget)
        return {**meta, "reused": True}
    data, facts = load_selection_input(prepared, embedded, index, target, feedback, previous, mmap=group is not None)
    members = None
    if group is not None:
        # One partition of a per-group selection: the sampler sees only this group's rows, renumbered.
        members = np.flatnonzero(data.groups == group)
        local_previous = np.flatnonzero(np.isin(members, data.previous_rows)) if data.previous_rows is not None else None
        data = replace(subset_input(data, members), previous_rows=local_previous)
    t0 = time.perf_counter()
    deduped = None
    if dedup is not None:
        deduped, data = _dedup_input(data, dedup, n_budget, seed)
    # Sampler.select refuses a budget above the rows left by earlier rounds and never returns one of them.
    selection = chosen.select(data, n_budget, seed)
    # Coverage floors (a per-group run gets its group floor from the plan's quotas instead).
    if min_per_group and group is None:
        selection = apply_floors(chosen, data, selection, n_budget, seed, floor=min_per_group, by="group")
    if min_per_label:
        selection = apply_floors(chosen, data, selection, n_budget, seed, floor=min_per_label, by="labels")
    selection.diagnostics.update(facts)
    extra = {}
    if deduped is not None:
        selection.rows = deduped.kept[selection.rows]
        selection.diagnostics["dedup"] = deduped.diagnostics
        extra = {"dedup_dropped": deduped.dropped, "dedup_kept_for": deduped.kept_for, "dedup_similarity": deduped.similarity}
    if members is not None:
        selection.rows = members[selection.rows]
        extra = {k: (members[v] if k != "dedup_similarity" else v) for k, v in extra.items()}
    seconds = time.perf_counter() - t0
    arrays = folder / "selection.npz"
    with atomic_path(arrays, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, rows=selection.rows, scores=selection.scores, weights=selection.weights,
                     clusters=selection.clusters if selection.clusters is not None else np.full(len(selection.rows), -1), **extra)
    meta = {"key": key, "sampler": sampler, "options": chosen.options.model_dump(), "budget": n_budget,
            "budget_requested": budget, "seed": seed, "arrays": str(arrays), "has_clusters": selection.clusters is not None,
            "diagnostics": selection.diagnostics, "seconds": seconds,
            "dedup": None if deduped is None else {"threshold": dedup, "rows_dropped": int(len(deduped.dropped))}}
    write_json(meta_path, meta)
    logger.info("%s selected %d of %d rows in %.1fs", sampler, n_budget, prepared["n_usable"], seconds)
    return {**meta, "reused": False}


def _dedup_input(data, threshold: float, n_budget: int, seed: int):
    """Semantic dedup of the sampler's input: (the dedup result, the input restricted to the kept rows)."""
    from .errors import ConfigError
    from .samplers.semantic_dedup import semantic_dedup

    deduped = semantic_dedup(data.embeddings, threshold, quality=data.quality, ids=data.ids, seed=seed)
    kept = deduped.kept
    if n_budget > len(kept):
        raise ConfigError(f"Budget of {n_budget} rows is more than the {len(kept)} rows left after --dedup {threshold:g} "
                          f"dropped {len(deduped.dropped)} near-duplicates; lower --budget or raise the --dedup threshold.")
    local_previous = None
    if data.previous_rows is not None:
        local_previous = np.flatnonzero(np.isin(kept, data.previous_rows))
    return deduped, replace(subset_input(data, kept), previous_rows=local_previous)


def load_selection(selection: dict) -> dict[str, np.ndarray]:
    with np.load(selection["arrays"], allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@task(name="plan-groups", cache_policy=NONE)
def plan_groups_task(prepared: dict, budget: float, min_per_group: int | None = None) -> list[dict]:
    """The budget split over the groups in proportion to their sizes (largest remainder, capped by size);
    with `min_per_group`, each group first gets that floor (fitted to the budget)."""
    from .errors import ConfigError

    if not prepared["has_groups"]:
        raise ConfigError("Per-group selection needs a group column: pass --group COL.")
    groups = pl.read_parquet(prepared["prepared_path"], columns=["group"])["group"]
    if groups.null_count():
        raise ConfigError(f"Per-group selection: {groups.null_count()} rows have no group value; fill the group column or drop them.")
    counts = groups.value_counts().sort(["count", "group"], descending=[True, False])
    names, sizes = counts["group"].to_list(), counts["count"].to_numpy()
    n_budget = resolve_budget(budget, prepared["n_usable"])
    quotas = floor_quotas(sizes, n_budget, min_per_group) if min_per_group else allocate_quotas(sizes, n_budget)
    return [{"group": g, "size": int(n), "quota": int(q)} for g, n, q in zip(names, sizes, quotas) if q > 0]


@task(name="merge-groups", cache_policy=NONE)
def merge_groups_task(parts: list[dict], plan: list[dict], sampler: str, budget: float, seed: int, cache_dir: str) -> dict:
    """One selection from the per-group ones: groups interleaved by rank, largest group first."""
    arrays = [load_selection(p) for p in parts]
    order = [(rank, g) for g, a in enumerate(arrays) for rank in range(len(a["rows"]))]
    order.sort()
    merged = {k: np.concatenate([arrays[g][k][rank : rank + 1] for rank, g in order]) for k in ("rows", "scores", "weights", "clusters")}
    dedup_keys = ("dedup_dropped", "dedup_kept_for", "dedup_similarity")
    if any(dedup_keys[0] in a for a in arrays):  # each group deduplicated inside itself: all of their dropped rows
        for k in dedup_keys:
            merged[k] = np.concatenate([a[k] for a in arrays if k in a])
        by_row = np.argsort(merged[dedup_keys[0]], kind="stable")
        merged.update({k: merged[k][by_row] for k in dedup_keys})
    key = config_hash({"parts": [p["key"] for p in parts]})
    folder = Workspace(cache_dir).selection_dir(key)
    path = folder / "selection.npz"
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **merged)
    meta = {"key": key, "sampler": sampler, "options": parts[0]["options"], "budget": int(len(merged["rows"])),
            "budget_requested": budget, "seed": seed, "arrays": str(path), "has_clusters": False,
            "diagnostics": {"per_group": [{**g, "diagnostics": {k: v for k, v in p["diagnostics"].items()
                                                                 if not isinstance(v, (list, dict))}}
                                          for g, p in zip(plan, parts)]},
            "seconds": float(sum(p["seconds"] for p in parts)),
            "dedup": None if parts[0].get("dedup") is None else {
                "threshold": parts[0]["dedup"]["threshold"], "rows_dropped": int(sum(p["dedup"]["rows_dropped"] for p in parts))}}
    write_json(folder / "selection.json", meta)
    return {**meta, "reused": all(p["reused"] for p in parts)}

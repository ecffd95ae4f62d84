"""Prefect task: run one sampler over the embeddings (or reuse its cached result)."""

import json
import time

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

from .embedding.index import load_index, searcher
from .io.atomic import atomic_path, write_json
from .io.hashing import config_hash
from .io.workspace import Workspace
from .samplers import SelectionInput, get_sampler, resolve_budget


def load_selection_input(prepared: dict, embedded: dict, index: dict | None) -> SelectionInput:
    cols = ["id", "quality", "labels", "group"]
    frame = pl.read_parquet(prepared["prepared_path"], columns=cols)
    knn = None
    if index is not None:
        faiss_index, _ = load_index(index["path"])
        knn = searcher(faiss_index)
    return SelectionInput(
        embeddings=np.load(embedded["matrix_path"], allow_pickle=False),
        quality=frame["quality"].to_numpy() if prepared["has_quality"] else None,
        labels=[tuple(x) for x in frame["labels"].to_list()] if prepared["has_labels"] else None,
        groups=frame["group"].to_numpy() if prepared["has_groups"] else None,
        ids=frame["id"].to_numpy(),
        knn=knn,
    )


@task(name="select", cache_policy=NONE)
def select_task(prepared: dict, embedded: dict, index: dict | None, sampler: str, options: dict,
                budget: float, seed: int, cache_dir: str) -> dict:
    logger = get_run_logger()
    chosen = get_sampler(sampler, options)  # validates the options before any work
    n_budget = resolve_budget(budget, prepared["n_usable"])
    key = config_hash({"matrix": embedded["key"], "sampler": sampler, "options": chosen.options.model_dump(),
                       "budget": n_budget, "seed": seed, "index": index["key"] if index else None})
    folder = Workspace(cache_dir).selection_dir(key)
    meta_path = folder / "selection.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        logger.info("reusing the cached %s selection of %d rows", sampler, n_budget)
        return {**meta, "reused": True}
    data = load_selection_input(prepared, embedded, index)
    t0 = time.perf_counter()
    selection = chosen.select(data, n_budget, seed)
    seconds = time.perf_counter() - t0
    arrays = folder / "selection.npz"
    with atomic_path(arrays, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, rows=selection.rows, scores=selection.scores, weights=selection.weights,
                     clusters=selection.clusters if selection.clusters is not None else np.full(len(selection.rows), -1))
    meta = {"key": key, "sampler": sampler, "options": chosen.options.model_dump(), "budget": n_budget,
            "budget_requested": budget, "seed": seed, "arrays": str(arrays), "has_clusters": selection.clusters is not None,
            "diagnostics": selection.diagnostics, "seconds": seconds}
    write_json(meta_path, meta)
    logger.info("%s selected %d of %d rows in %.1fs", sampler, n_budget, prepared["n_usable"], seconds)
    return {**meta, "reused": False}


def load_selection(selection: dict) -> dict[str, np.ndarray]:
    with np.load(selection["arrays"], allow_pickle=False) as z:
        return {k: z[k] for k in z.files}

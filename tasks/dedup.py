"""Prefect tasks of the standalone `selectflow dedup`: semantic dedup of a whole corpus, and its output folder.

The algorithm is samplers/semantic_dedup.py, the output folder reporting/dedup_folder.py; `select --dedup` runs the
algorithm inside the select task instead.
"""

import json
import time

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

from .io.atomic import atomic_path, write_json
from .io.hashing import config_hash
from .io.results import Embeddings, PreparedCorpus
from .io.workspace import Workspace
from .reporting.dedup_folder import write_dedup_folder
from .samplers.semantic_dedup import VERSION, semantic_dedup


@task(name="dedup", cache_policy=NONE)
def dedup_task(prepared: PreparedCorpus, embedded: Embeddings, *, threshold: float, seed: int, cache_dir: str) -> dict:
    """Semantic dedup over every usable row (or reuse the cached result of the same matrix, threshold and seed)."""
    logger = get_run_logger()
    key = config_hash({"matrix": embedded.key, "dedup": threshold, "seed": seed, "version": VERSION})
    folder = Workspace(cache_dir).selection_dir(key)
    meta_path = folder / "dedup.json"
    if meta_path.exists():
        logger.info("reusing the cached dedup result")
        return {**json.loads(meta_path.read_text()), "reused": True}
    frame = pl.read_parquet(prepared.prepared_path, columns=["id", "quality"])
    embeddings = np.load(embedded.matrix_path, allow_pickle=False, mmap_mode="r")
    t0 = time.perf_counter()
    result = semantic_dedup(embeddings, threshold, quality=frame["quality"].to_numpy() if prepared.has_quality else None,
                            ids=frame["id"].to_numpy(), seed=seed)
    arrays = folder / "dedup.npz"
    with atomic_path(arrays, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, kept=result.kept, dedup_dropped=result.dropped, dedup_kept_for=result.kept_for,
                     dedup_similarity=result.similarity, clusters=result.clusters)
    meta = {"key": key, "threshold": threshold, "seed": seed, "arrays": str(arrays), "diagnostics": result.diagnostics,
            "seconds": time.perf_counter() - t0}
    write_json(meta_path, meta)
    logger.info("dedup kept %d of %d rows (%d near-duplicates dropped)", len(result.kept), result.n_rows, len(result.dropped))
    return {**meta, "reused": False}


@task(name="write-dedup-outputs", cache_policy=NONE)
def write_dedup_outputs_task(*, spec: dict, prepared: PreparedCorpus, embedded: Embeddings, dedup: dict, out_dir: str,
                             run_key: str, config: dict, timings: dict) -> dict:
    """kept.parquet, dropped.parquet, dedup_report.json and manifest.json (reporting/dedup_folder.py)."""
    return write_dedup_folder(spec=spec, prepared=prepared, embedded=embedded, dedup=dedup, out_dir=out_dir,
                              run_key=run_key, config=config, timings=timings)

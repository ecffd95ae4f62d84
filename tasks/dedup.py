"""Prefect tasks of the standalone `selectflow dedup`: semantic dedup of a whole corpus, and its output folder.

The algorithm is tasks/samplers/semantic_dedup.py; `select --dedup` runs it inside the select task instead.
"""

import json
import time
from pathlib import Path

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

from .io.atomic import atomic_path, write_json
from .io.corpus_reader import CorpusSpec, read_original_rows
from .io.hashing import config_hash
from .io.outputs import begin_outputs, write_parquet
from .io.workspace import Workspace
from .io.results import Embeddings, Manifest, ManifestEncoder, ManifestInput, ManifestRows, PreparedCorpus
from .reporting.run_folder import dedup_examples, dropped_frame, library_versions, texts_by_row
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
    """kept.parquet (the input's own columns of every kept row, plus sf_id, sf_duplicates_dropped, sf_dedup_cluster),
    dropped.parquet (dropped_id, kept_id, similarity), dedup_report.json and manifest.json (written last)."""
    out = Path(out_dir)
    with np.load(dedup["arrays"], allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    frame = pl.read_parquet(prepared.prepared_path, columns=["row", "id"])
    ids = frame["id"].to_list()
    kept = arrays["kept"]
    corpus_spec = CorpusSpec.from_params(spec)
    originals = read_original_rows(corpus_spec, frame["row"].to_numpy()[kept])
    counts = np.bincount(arrays["dedup_kept_for"], minlength=len(ids))
    provenance = pl.DataFrame({
        "sf_id": pl.Series([ids[int(r)] for r in kept], dtype=pl.String),
        "sf_duplicates_dropped": counts[kept].astype(np.int64),
        "sf_dedup_cluster": arrays["clusters"][kept].astype(np.int64),
    })
    begin_outputs(out, run_key)
    write_parquet(pl.concat([originals, provenance], how="horizontal"), out / "kept.parquet")
    write_parquet(dropped_frame(arrays, ids, kept).drop("kept_selected"), out / "dropped.parquet")
    examples = dedup_examples(arrays, ids, texts_by_row(prepared.prepared_path), dedup["threshold"])
    n = len(ids)
    report = {"threshold": dedup["threshold"], "seed": dedup["seed"], "rows": n, "kept": int(len(kept)),
              "dropped": int(n - len(kept)), "diagnostics": dedup["diagnostics"], "examples": examples}
    write_json(out / "dedup_report.json", report)
    manifest = Manifest(
        run_key=run_key,
        input=ManifestInput.of(prepared),
        rows=ManifestRows.of(prepared, kept=int(len(kept)), dropped_by_dedup=int(n - len(kept))),
        config=config,
        encoder=ManifestEncoder(name=embedded.encoder["name"], weights_hash=embedded.encoder["weights_hash"]),
        dedup={"threshold": dedup["threshold"], "seed": dedup["seed"], "diagnostics": dedup["diagnostics"]},
        library_versions=library_versions(),
        timings_seconds=timings,
        outputs=["kept.parquet", "dropped.parquet", "dedup_report.json"],
    )
    manifest.write(out)  # last: a folder with a manifest is a complete run
    return {"out_dir": str(out), "rows": n, "kept": int(len(kept)), "dropped": int(n - len(kept)),
            "kept_parquet": str(out / "kept.parquet"), "dropped_parquet": str(out / "dropped.parquet"),
            "manifest": str(out / "manifest.json"), "diagnostics": dedup["diagnostics"]}

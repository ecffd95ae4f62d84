"""The output folder of a select run: selected rows (Parquet, JSONL, HF dataset), dropped.parquet, report.json,
report.html and manifest.json, written in that order (the manifest last: a folder with one is a complete run).

write_run_folder  everything above, from the cached corpus, embeddings, index and selection
run_manifest      manifest.json's content (io/results.py: Manifest)
dropped_frame, dedup_examples  semantic dedup's dropped rows, as a table and as the report's examples
Plain code: tasks/report.py calls it and publishes the Prefect artifacts.
"""

import platform
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import polars as pl

from ..io.atomic import write_json, write_text
from ..io.changes import changes_since_previous
from ..io.corpus_reader import CorpusSpec, read_original_rows
from ..io.outputs import begin_outputs, provenance_frame, write_hf_dataset, write_jsonl, write_parquet
from ..io.results import (CacheFiles, Embeddings, IndexRef, Manifest, ManifestBudget, ManifestEmbeddings, ManifestEncoder,
                          ManifestInput, ManifestRows, PreparedCorpus, Selection)
from ..io.selection_input import load_arrays
from ..io.storage import local_copy, name
from ..embedding.sharded import ShardedMatrix, sampled_analysis
from ..samplers.clustering import kmeans
from .build import EXAMPLE_CHARS, analysis_k, build_report
from .metrics import nearest_selected

LIBRARIES = ("selectflow", "prefect", "sentence-transformers", "transformers", "torch", "faiss-cpu", "faiss-gpu",
             "polars", "pyarrow", "numpy", "scikit-learn", "scipy")


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def texts_by_row(prepared_path: str):
    """A function from corpus positions to their texts (read from the prepared corpus, in the order asked)."""
    def fetch(rows: list[int]) -> list[str]:
        if not rows:
            return []
        wanted = pl.DataFrame({"pos": np.asarray(rows, dtype=np.uint32), "order": np.arange(len(rows))})
        found = (pl.scan_parquet(local_copy(prepared_path)).select("text").with_row_index("pos")
                 .join(wanted.lazy(), on="pos", how="inner").sort("order").collect())
        return found["text"].to_list()

    return fetch


def write_run_folder(*, spec: dict, prepared: PreparedCorpus, embeddings: Embeddings, index: IndexRef | None,
                     selection: Selection, out_dir: str, run_key: str, config: dict, timings: dict,
                     formats: tuple = ("parquet",), previous_dir: str | None = None) -> dict:
    """Write the output folder; returns its paths and the report's diversity and composition sections.

    `previous_dir`: where the previous run of this output lives when `out_dir` is only a staging folder (an
    object-store output is staged locally, then published); default `out_dir`."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    # Partitioned selection: rows read from the shards on demand (embedding/sharded.py), never one (N, D) matrix.
    emb = ShardedMatrix(embeddings.shards) if embeddings.shards else np.load(local_copy(embeddings.matrix_path), mmap_mode="r")
    arrays = load_arrays(selection)
    rows = arrays["rows"]
    seed = selection.seed
    frame = pl.read_parquet(local_copy(prepared.prepared_path), columns=["row", "id", "text_hash", "labels", "group"])
    ids = frame["id"].to_list()

    nearest_pos, nearest_sim = nearest_selected(emb, rows, seed=seed)
    analysis = (sampled_analysis(emb, analysis_k(len(ids)), seed=seed) if embeddings.shards
                else kmeans(emb, analysis_k(len(ids)), seed=seed))
    clusters = arrays["clusters"] if selection.has_clusters else analysis.assignments[rows]

    # Before anything is replaced: what this run changes against the previous run in the same folder.
    changes = changes_since_previous(previous_dir or out, [ids[int(r)] for r in rows], set(ids))
    originals = read_original_rows(CorpusSpec.from_params(spec), frame["row"].to_numpy()[rows])
    provenance = provenance_frame(ids=ids, rows=rows, sampler=selection.sampler, scores=arrays["scores"],
                                  weights=arrays["weights"], clusters=clusters, nearest_pos=nearest_pos, nearest_sim=nearest_sim)
    selected = pl.concat([originals, provenance], how="horizontal")
    begin_outputs(out, run_key)
    write_parquet(selected, out / "selected.parquet")
    outputs = ["selected.parquet"]
    dropped = dropped_frame(arrays, ids, rows)
    if dropped is not None:
        write_parquet(dropped, out / "dropped.parquet")  # every row semantic dedup dropped, beside the row kept for it
        outputs.append("dropped.parquet")
    else:
        (out / "dropped.parquet").unlink(missing_ok=True)  # never leave an earlier run's list beside this run
    if "jsonl" in formats:
        write_jsonl(selected, out / "selected.jsonl")
        outputs.append("selected.jsonl")
    if "hf" in formats:
        write_hf_dataset(selected, out / "selected_hf")
        outputs.append("selected_hf/")

    summary = {
        "input": prepared.input_path, "input_name": name(prepared.input_path),
        "input_hash": prepared.input_hash, "rows_read": prepared.n_read, "usable_rows": prepared.n_usable,
        "excluded_rows": prepared.n_excluded, "budget_requested": selection.budget_requested, "selected": len(rows),
        "sampler": selection.sampler, "seed": seed, "encoder": embeddings.encoder["name"],
        "encoder_weights_hash": embeddings.encoder["weights_hash"], "index": index.kind if index else "none",
        "text_columns": ", ".join(prepared.text_columns),
        "duration_seconds": round(sum(timings.values()), 2), "selectflow_version": library_versions().get("selectflow", ""),
    }
    if dropped is not None:
        summary["dedup_threshold"] = selection.dedup.threshold
        summary["dedup_dropped_rows"] = dropped.height
    data_problems = {"rows_read": prepared.n_read, "rows_excluded": prepared.n_excluded, "excluded": prepared.excluded,
                     "truncated_texts": embeddings.truncated,
                     "exact_duplicate_rows": int(frame.select(pl.col("text_hash").is_duplicated().sum()).item()),
                     "empty_label_rows": prepared.empty_label_rows}
    knn = None
    if index is not None:
        from ..embedding.faiss_index import load_index, searcher

        knn = searcher(load_index(index.path)[0])
    timings = {**timings}
    texts = texts_by_row(prepared.prepared_path)
    report, page = build_report(
        embeddings=emb, rows=rows, scores=arrays["scores"], analysis_clusters=analysis.assignments, ids=ids,
        texts_by_row=texts,
        groups=frame["group"].to_list() if prepared.has_groups else None,
        labels=frame["labels"].to_list() if prepared.has_labels else None,
        diagnostics=selection.diagnostics, summary=summary, data_problems=data_problems,
        sampler_options=selection.options, timings=timings, knn=knn,
        nearest_row=nearest_pos, nearest_sim=nearest_sim, seed=seed, changes=changes,
        extra_examples=None if dropped is None else [dedup_examples(arrays, ids, texts, selection.dedup.threshold)],
    )
    timings["report"] = time.perf_counter() - t0
    report["timings"] = timings
    write_json(out / "report.json", report)
    write_text(out / "report.html", page)
    manifest = run_manifest(run_key=run_key, prepared=prepared, embeddings=embeddings, index=index, selection=selection,
                            config=config, changes=changes, timings=timings, selected=len(rows),
                            dropped=None if dropped is None else dropped.height,
                            outputs=outputs + ["report.json", "report.html"])
    manifest.write(out)  # last: a folder with a manifest is a complete run
    return {"out_dir": str(out), "selected": len(rows), "report": str(out / "report.html"),
            "parquet": str(out / "selected.parquet"), "manifest": str(out / "manifest.json"),
            "diversity": report["diversity_coverage"], "composition": report["composition"]}


def run_manifest(*, run_key: str, prepared: PreparedCorpus, embeddings: Embeddings, index: IndexRef | None,
                 selection: Selection, config: dict, changes: dict | None, timings: dict, selected: int,
                 dropped: int | None, outputs: list[str]) -> Manifest:
    """manifest.json of a select run: input, row counts, configuration, encoder, cache files, versions, timings."""
    encoder = embeddings.encoder
    return Manifest(
        run_key=run_key,
        input=ManifestInput.of(prepared),
        rows=ManifestRows.of(prepared, selected=selected, **({"dropped_by_dedup": dropped} if dropped is not None else {})),
        config=config,
        seed=selection.seed,
        budget=ManifestBudget(requested=selection.budget_requested, rows=selection.budget),
        encoder=ManifestEncoder(name=encoder["name"], path=encoder["path"], weights_hash=encoder["weights_hash"],
                                max_seq_length=embeddings.max_seq_length, device=encoder["device"]),
        embeddings=ManifestEmbeddings(store_key=embeddings.store_key, encoded_this_run=embeddings.encoded,
                                      reused_from_store=embeddings.reused, truncated=embeddings.truncated),
        index=index.params if index else None,
        changes_since_previous=None if changes is None else {k: v for k, v in changes.items() if k != "examples"},
        cache_files=CacheFiles(prepared_corpus=prepared.prepared_path, embedding_matrix=embeddings.matrix_path,
                               selection_arrays=selection.arrays),
        library_versions=library_versions(),
        timings_seconds=timings,
        outputs=outputs,
    )


DEDUP_REPORT_ROWS = 200


def dropped_frame(arrays: dict, ids: list[str], rows: np.ndarray) -> pl.DataFrame | None:
    """dropped.parquet: each row semantic dedup dropped, the kept row it was dropped for, their similarity. None without dedup."""
    if "dedup_dropped" not in arrays:
        return None
    dropped, kept = arrays["dedup_dropped"], arrays["dedup_kept_for"]
    return pl.DataFrame({
        "dropped_id": pl.Series([ids[int(r)] for r in dropped], dtype=pl.String),
        "kept_id": pl.Series([ids[int(r)] for r in kept], dtype=pl.String),
        "similarity": np.asarray(arrays["dedup_similarity"], dtype=np.float64),
        "kept_selected": np.isin(kept, rows),
    })


def dedup_examples(arrays: dict, ids: list[str], texts_by_row, threshold: float) -> dict:
    """The report's table of dropped rows beside their kept row (the first DEDUP_REPORT_ROWS; all are in dropped.parquet)."""
    dropped, kept, sims = arrays["dedup_dropped"], arrays["dedup_kept_for"], arrays["dedup_similarity"]
    shown = min(len(dropped), DEDUP_REPORT_ROWS)
    texts = texts_by_row([int(r) for r in dropped[:shown]] + [int(r) for r in kept[:shown]])
    cut = lambda t: (t[:EXAMPLE_CHARS] + "…") if t and len(t) > EXAMPLE_CHARS else t  # noqa: E731
    more = f"; the first {shown} shown, all in dropped.parquet" if shown < len(dropped) else ""
    return {
        "title": f"Rows dropped by semantic dedup (similarity ≥ {threshold:g}) beside the row kept for them: {len(dropped)}{more}",
        "headers": ["dropped id", "dropped text", "similarity", "kept id", "kept text"],
        "rows": [[ids[int(dropped[j])], cut(texts[j]), float(sims[j]), ids[int(kept[j])], cut(texts[shown + j])]
                 for j in range(shown)],
    }



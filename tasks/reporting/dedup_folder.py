"""The output folder of `selectflow dedup`: kept.parquet, dropped.parquet, dedup_report.json, manifest.json (last).

Plain code: tasks/dedup.py runs the dedup and calls write_dedup_folder.
"""

from pathlib import Path

import numpy as np
import polars as pl

from ..io.atomic import write_json
from ..io.corpus_reader import CorpusSpec, read_original_rows
from ..io.outputs import begin_outputs, write_parquet
from ..io.results import Embeddings, Manifest, ManifestEncoder, ManifestInput, ManifestRows, PreparedCorpus
from .run_folder import dedup_examples, dropped_frame, library_versions, texts_by_row


def write_dedup_folder(*, spec: dict, prepared: PreparedCorpus, embedded: Embeddings, dedup: dict, out_dir: str,
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

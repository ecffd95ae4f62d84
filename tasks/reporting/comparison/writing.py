"""Writing a comparison: measure the runs of a plan and write compare.html, compare.json and overlap.parquet.

Each file is written atomically; compare.json last, since it carries the key that lets the same comparison
refresh its folder.
"""

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl

from ...io.atomic import write_json, write_text
from ...io.outputs import write_parquet
from .measures import compare_selections, overlap_frame
from .page import render_comparison
from .runs import RunInfo, prepare_comparison, selected_positions, texts_at


def write_comparison(plan: dict) -> dict:
    """Measure the runs of a plan from prepare_comparison and write compare.html, compare.json and overlap.parquet."""
    t0 = time.perf_counter()
    runs = [RunInfo(**r) for r in plan["runs"]]
    out = Path(plan["out_dir"])
    ref = runs[0]
    ids = pl.read_parquet(ref.prepared_corpus, columns=["id"])["id"].to_list()
    selections = [selected_positions(r) for r in runs]
    embeddings = np.load(ref.embedding_matrix, mmap_mode="r")
    # Group and label values of the first run configured with such a column: every run has the same rows.
    group_run = next((r for r in runs if r.group_column), None)
    label_run = next((r for r in runs if r.label_column), None)
    groups = pl.read_parquet(group_run.prepared_corpus, columns=["group"])["group"].to_list() if group_run else None
    labels = pl.read_parquet(label_run.prepared_corpus, columns=["labels"])["labels"].to_list() if label_run else None
    names = [r.label for r in runs]
    result = compare_selections(embeddings=embeddings, selections=selections, names=names, ids=ids,
                                texts_at=lambda pos: texts_at(ref.prepared_corpus, pos), groups=groups, labels=labels,
                                seed=plan["seed"])
    result.update({
        "compare_key": plan["compare_key"],
        "seed": plan["seed"],
        "runs": [asdict(r) for r in runs],
        "pool": {"input": ref.input_path, "input_name": Path(ref.input_path).name, "content_hash": ref.input_hash,
                 "usable_rows": ref.usable_rows, "text_columns": ref.text_columns, "measured_with": ref.encoder,
                 "encoders": sorted({r.encoder for r in runs}),
                 "group_column": group_run.group_column if group_run else None,
                 "label_column": label_run.label_column if label_run else None},
    })
    result["seconds"] = round(time.perf_counter() - t0, 3)
    write_parquet(overlap_frame(selections, ids), out / "overlap.parquet")
    write_text(out / "compare.html", render_comparison(result))
    write_json(out / "compare.json", result)  # last: it carries the key that lets the same comparison refresh the folder
    return {"out_dir": str(out), "report": str(out / "compare.html"), "json": str(out / "compare.json"),
            "overlap_parquet": str(out / "overlap.parquet"), "names": names, "run_dirs": [r.run_dir for r in runs],
            "jaccard": result["overlap"]["jaccard"], "only_this_run": result["overlap"]["only_this_run"],
            "coverage_distance": [m["selected"]["coverage_distance"] for m in result["diversity_coverage"]],
            "mean_pairwise_similarity": [m["selected"]["mean_pairwise_similarity"] for m in result["diversity_coverage"]],
            "seconds": result["seconds"]}


def compare_runs(run_dirs: list[str], out_dir: str, seed: int = 0, overwrite: bool = False) -> dict:
    """Plain entry point: check, measure and write in one call."""
    return write_comparison(prepare_comparison(run_dirs, out_dir, seed, overwrite))

"""Prefect task: evaluate samplers against random selection on the embedded, labelled corpus.

Writes evaluation.md and then evaluation.json (last, so a folder with evaluation.json is complete) into
the output folder, publishes the tables as a markdown artifact, and returns paths, not arrays.
"""

import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

from .errors import ConfigError
from .evaluation import EvaluationConfig, evaluate, render_markdown
from .io.atomic import write_json, write_text
from .io.corpus_reader import read_input_columns
from .report import library_versions


@task(name="evaluate-samplers", cache_policy=NONE)
def evaluate_task(prepared: dict, embedded: dict, *, config: dict, out_dir: str, run_key: str,
                  label_column: str) -> dict:
    """Run every sampler x budget x seed on the pool, measure each on the test split, write the results."""
    logger = get_run_logger()
    if not prepared.has_labels:
        raise ConfigError("The evaluation needs a label column: pass --labels COL (e.g. --labels source for the bundled corpus).")
    evaluation = EvaluationConfig(**config)
    t0 = time.perf_counter()
    embeddings = np.load(embedded.matrix_path, allow_pickle=False)
    frame = pl.read_parquet(prepared.prepared_path, columns=["row", "id", "quality", "labels", "group"])
    extra = [c for c in (evaluation.fine_label_column, evaluation.sampler_label_column) if c]
    columns = read_input_columns(prepared.input_path, extra, frame["row"]) if extra else {}
    artifact_id = create_progress_artifact(progress=0.0, description="Evaluating samplers")
    bar = None
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=0, unit="run", desc="evaluating", leave=False, dynamic_ncols=True)

    def progress(done: int, total: int, what: str) -> None:
        if bar is not None:
            bar.total, bar.n = total, done
            bar.set_postfix_str(what, refresh=True)
        update_progress_artifact(artifact_id, progress=100.0 * done / total)
        logger.info("run %d/%d done: %s", done, total, what)

    try:
        result = evaluate(
            embeddings, frame["labels"].to_list(), evaluation,
            fine_labels=columns.get(evaluation.fine_label_column),
            sampler_labels=columns.get(evaluation.sampler_label_column),
            quality=frame["quality"].to_numpy() if prepared.has_quality else None,
            groups=frame["group"].to_numpy() if prepared.has_groups else None,
            ids=frame["id"].to_numpy(), progress=progress,
        )
    finally:
        if bar is not None:
            bar.close()
    context = {"input_name": Path(prepared.input_path).name, "label_column": label_column,
               "encoder": embedded.encoder["name"]}
    markdown = render_markdown(result, context)
    out = Path(out_dir)
    seconds = round(time.perf_counter() - t0, 2)
    document = {
        "run_key": run_key,
        "input": {"path": prepared.input_path, "content_hash": prepared.input_hash, "label_column": label_column},
        "encoder": {"name": embedded.encoder["name"], "weights_hash": embedded.encoder["weights_hash"]},
        "embeddings": {"matrix_key": embedded.key},
        "library_versions": library_versions(),
        "seconds": seconds,
        **result,
    }
    write_text(out / "evaluation.md", markdown)
    write_json(out / "evaluation.json", document)  # last: a folder with evaluation.json is complete
    create_markdown_artifact(key="sampler-evaluation", markdown=markdown, description="Samplers against random selection")
    failed = sum(1 for r in result["runs"] if "error" in r)
    logger.info("evaluated %d runs in %.1fs (%d failed)", len(result["runs"]), seconds, failed)
    return {"out_dir": str(out), "json": str(out / "evaluation.json"), "markdown": str(out / "evaluation.md"),
            "runs": len(result["runs"]), "failed_runs": failed, "seconds": seconds}

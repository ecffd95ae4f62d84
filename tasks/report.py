"""Prefect tasks: write the output folder (reporting/run_folder.py) and publish the run's artifacts."""

from pathlib import Path

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from .io.results import Embeddings, IndexRef, PreparedCorpus, Selection
from .reporting.run_folder import library_versions, write_run_folder

__all__ = ["library_versions", "publish_artifacts_task", "write_outputs_task"]  # library_versions: for tasks/evaluate.py


@task(name="write-outputs", cache_policy=NONE)
def write_outputs_task(*, spec: dict, prepared: PreparedCorpus, embeddings: Embeddings, index: IndexRef | None,
                       selection: Selection, out_dir: str, run_key: str, config: dict, timings: dict,
                       formats: tuple = ("parquet",)) -> dict:
    """selected.parquet (and the other formats), dropped.parquet, report.json/html, manifest.json (last)."""
    return write_run_folder(spec=spec, prepared=prepared, embeddings=embeddings, index=index, selection=selection,
                            out_dir=out_dir, run_key=run_key, config=config, timings=timings, formats=formats)


@task(name="publish-artifacts", cache_policy=NONE)
def publish_artifacts_task(outputs: dict, prepared: PreparedCorpus, selection: Selection) -> None:
    dc = outputs["diversity"]
    sel, rnd = dc["selected"], dc["random"]
    create_markdown_artifact(
        key="selection-summary",
        description="What this run selected",
        markdown=(
            f"# Selection: {selection.sampler}\n\n"
            f"- input: `{prepared.input_path}` ({prepared.n_read} rows read, {prepared.n_usable} usable)\n"
            f"- selected: **{outputs['selected']}** rows (budget {selection.budget_requested}), seed {selection.seed}\n"
            f"- mean pairwise similarity: {sel['mean_pairwise_similarity']:.4f} "
            f"(random {rnd['mean_pairwise_similarity']['mean']:.4f} ± {rnd['mean_pairwise_similarity']['std']:.4f})\n"
            f"- coverage distance: {sel['coverage_distance']:.4f} "
            f"(random {rnd['coverage_distance']['mean']:.4f} ± {rnd['coverage_distance']['std']:.4f})\n"
            f"- outputs: `{outputs['out_dir']}`\n"
            + (f"- semantic dedup: {selection.dedup.rows_dropped} near-duplicates (cosine ≥ {selection.dedup.threshold:g}) "
               "dropped before selecting, each listed beside its kept row in `dropped.parquet`\n" if selection.dedup else "")
        ),
    )
    comp = outputs["composition"].get("groups") or outputs["composition"]["clusters"]
    create_table_artifact(
        key="selection-composition",
        description="Rows per group (or cluster): pool against selection",
        table=[{"value": c["value"], "pool": c["pool"], "selected": c["selected"],
                "pool_share": round(c["pool_share"], 4), "selected_share": round(c["selected_share"], 4)} for c in comp],
    )
    create_link_artifact(key="selection-report", link=Path(outputs["report"]).resolve().as_uri(),
                         link_text="report.html", description="The audit report of this selection")

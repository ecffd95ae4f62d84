"""Prefect tasks: write the output folder (reporting/run_folder.py) and publish the run's artifacts."""

from pathlib import Path

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from .io import storage
from .io.results import Embeddings, IndexRef, PreparedCorpus, Selection
from .reporting.formatting import number
from .reporting.links import artifact_key, https_url
from .reporting.run_folder import library_versions, write_run_folder
from .reporting.verdict import verdict_against_random, verdict_markdown

__all__ = ["library_versions", "publish_artifacts_task", "write_outputs_task"]  # library_versions: for tasks/evaluate.py


@task(name="write-outputs", cache_policy=NONE)
def write_outputs_task(*, spec: dict, prepared: PreparedCorpus, embeddings: Embeddings, index: IndexRef | None,
                       selection: Selection, out_dir: str, run_key: str, config: dict, timings: dict,
                       formats: tuple = ("parquet",)) -> dict:
    """selected.parquet (and the other formats), dropped.parquet, report.json/html, manifest.json (last).

    An object-store `out_dir` (s3://...) is written to a local staging folder, then published object by object
    with the manifest last (storage.staged_folder); the paths returned are URLs.
    """
    if storage.is_remote(out_dir):
        return _write_remote(spec=spec, prepared=prepared, embeddings=embeddings, index=index, selection=selection,
                             out_dir=out_dir, run_key=run_key, config=config, timings=timings, formats=formats)
    return write_run_folder(spec=spec, prepared=prepared, embeddings=embeddings, index=index, selection=selection,
                            out_dir=out_dir, run_key=run_key, config=config, timings=timings, formats=formats)


def _write_remote(*, out_dir: str, **kwargs) -> dict:
    url = str(out_dir).rstrip("/")
    with storage.staged_folder(url) as staging:
        outputs = write_run_folder(out_dir=str(staging), previous_dir=url, **kwargs)
    local = str(staging)
    return {k: (storage.join(url, v[len(local):]) if isinstance(v, str) and v.startswith(local) else v)
            for k, v in outputs.items()}


def _deployment_name() -> str | None:
    """The deployment this flow run belongs to (prefect.runtime), or None outside one."""
    try:
        from prefect.runtime import deployment

        return deployment.name
    except Exception:  # noqa: BLE001 - no API or no run context: not a deployment run
        return None


def summary_markdown(outputs: dict, prepared: PreparedCorpus, selection: Selection) -> str:
    """The selection-summary artifact: the verdict against random with its margins, then what was selected where."""
    dc = outputs["diversity"]
    sel, rnd = dc["selected"], dc["random"]
    return (
        f"# Selection: {selection.sampler}\n\n"
        + verdict_markdown(verdict_against_random(dc)) + "\n"
        + f"- input: `{prepared.input_path}` ({prepared.n_read} rows read, {prepared.n_usable} usable)\n"
        f"- selected: **{outputs['selected']}** rows (budget {selection.budget_requested}), seed {selection.seed}\n"
        f"- mean pairwise similarity: {number(sel['mean_pairwise_similarity'])} "
        f"(random {number(rnd['mean_pairwise_similarity']['mean'])} ± {number(rnd['mean_pairwise_similarity']['std'])})\n"
        f"- coverage distance: {number(sel['coverage_distance'])} "
        f"(random {number(rnd['coverage_distance']['mean'])} ± {number(rnd['coverage_distance']['std'])})\n"
        f"- outputs: `{outputs['out_dir']}`\n"
        + (f"- semantic dedup: {selection.dedup.rows_dropped} near-duplicates (cosine ≥ {selection.dedup.threshold:g}) "
           "dropped before selecting, each listed beside its kept row in `dropped.parquet`\n" if selection.dedup else "")
    )


@task(name="publish-artifacts", cache_policy=NONE)
def publish_artifacts_task(outputs: dict, prepared: PreparedCorpus, selection: Selection) -> dict:
    """The run's artifacts, keyed by deployment ('cli' outside one) and sampler so that each keeps its own history:
    selection-summary-<deployment>-<sampler> (markdown, with the verdict against random), selection-composition-...
    (table) and selection-report-... (an https link for object storage; on a local disk, the path to copy as text,
    since browsers will not open file:// links from the UI's page). Returns the keys."""
    deployment = _deployment_name()
    keys = {kind: artifact_key(kind, deployment, selection.sampler)
            for kind in ("selection-summary", "selection-composition", "selection-report")}
    create_markdown_artifact(key=keys["selection-summary"], description="What this run selected, against random",
                             markdown=summary_markdown(outputs, prepared, selection))
    comp = outputs["composition"].get("groups") or outputs["composition"]["clusters"]
    create_table_artifact(
        key=keys["selection-composition"],
        description="Rows per group (or cluster): pool against selection",
        table=[{"value": c["value"], "pool": c["pool"], "selected": c["selected"],
                "pool_share": round(c["pool_share"], 4), "selected_share": round(c["selected_share"], 4)} for c in comp],
    )
    report = outputs["report"]
    if storage.is_remote(report):
        create_link_artifact(key=keys["selection-report"], link=https_url(report), link_text="report.html",
                             description="The audit report of this selection")
    else:
        path = str(Path(report).resolve())
        create_markdown_artifact(
            key=keys["selection-report"], description="The audit report of this selection (a local file)",
            markdown=("The report is a file on the machine that ran the flow; browsers do not open local files from "
                      f"this page. Copy the path into a browser there:\n\n```\n{path}\n```\n"))
    return keys

"""Prefect tasks: compare several selections of one corpus (see reporting/comparison/) and publish the result."""

from pathlib import Path

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

from .reporting.comparison import prepare_comparison, write_comparison


@task(name="check-runs", cache_policy=NONE)
def check_runs_task(run_dirs: list[str], out_dir: str, seed: int, overwrite: bool) -> dict:
    """Check that the runs are complete and over the same corpus, and that the output folder may be written."""
    return prepare_comparison(run_dirs, out_dir, seed, overwrite)


@task(name="write-comparison", cache_policy=NONE)
def write_comparison_task(plan: dict) -> dict:
    """Measure every run in one embedding space; write compare.html, compare.json and overlap.parquet."""
    result = write_comparison(plan)
    get_run_logger().info("compared %d runs in %.1fs -> %s", len(result["names"]), result["seconds"], result["report"])
    return result


@task(name="publish-comparison", cache_policy=NONE)
def publish_comparison_task(result: dict) -> None:
    names = result["names"]
    header = "| run | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    rows = "".join(f"| {a} | " + " | ".join(f"{v:.3f}" for v in result["jaccard"][i]) + " |\n" for i, a in enumerate(names))
    measures = "".join(
        f"- {n}: coverage distance {c:.4f}, mean pairwise similarity {s:.4f}, {o} rows no other run picked\n"
        for n, c, s, o in zip(names, result["coverage_distance"], result["mean_pairwise_similarity"], result["only_this_run"])
    )
    create_markdown_artifact(key="selection-comparison", description="Overlap, coverage and diversity of several selections",
                             markdown=f"# Comparison of {len(names)} selections\n\nJaccard similarity:\n\n{header}{rows}\n{measures}"
                                      f"\n- outputs: `{result['out_dir']}`\n")
    create_link_artifact(key="selection-comparison-report", link=Path(result["report"]).resolve().as_uri(),
                         link_text="compare.html", description="The comparison report")

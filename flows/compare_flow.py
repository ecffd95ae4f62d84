"""The compare flow: several selections of one corpus in one report. It wires tasks and does nothing else."""

from prefect import flow

from selectflow.tasks.compare import check_runs_task, publish_comparison_task, write_comparison_task


@flow(name="compare-runs", log_prints=True)
def compare_runs(run_dirs: list[str], out_dir: str = "selectflow-compare", seed: int = 0, overwrite: bool = False) -> dict:
    """Compare output folders of select-subset over the same corpus: overlap, diversity, coverage, composition, one map."""
    plan = check_runs_task(run_dirs, out_dir, seed, overwrite)
    result = write_comparison_task(plan)
    publish_comparison_task(result)
    return result

"""Task runners: where the pipeline's mapped tasks (embedding units) run.

thread  Prefect's thread pool in this process (default)
dask    prefect-dask: a local Dask cluster (processes), or an existing one at `address`
ray     prefect-ray: a local Ray runtime, or an existing cluster at `address`
Results do not depend on the runner: units of work are planned before they run, and every unit
writes content-addressed shards, so the same input, options and seed give the same selection.
"""

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from selectflow.tasks.errors import ConfigError


class RunnerParams(BaseModel):
    """Where embedding units run."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["thread", "dask", "ray"] = Field(default="thread", description="thread: this process; dask or ray: a local cluster, or the one at `address`.")
    address: Optional[str] = Field(default=None, description="Address of an existing Dask scheduler (tcp://host:8786) or Ray cluster (ray://host:10001). Empty: start a local one.")
    workers: int = Field(default=1, ge=1, le=1024, description="Workers of a local cluster, or threads of the thread runner.")
    unit_rows: int = Field(default=50_000, ge=1, le=10_000_000, description="Texts per embedding task.")
    shard_rows: int = Field(default=2048, ge=1, le=1_000_000, description="Texts per embedding-store shard: a killed run loses at most one unfinished shard per task.")


def make_task_runner(params: RunnerParams):
    if params.kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=params.workers)
    if params.kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ConfigError("The dask runner needs prefect-dask: pip install 'selectflow[dask]'.") from None
        if params.address:
            return DaskTaskRunner(address=params.address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": params.workers, "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None})
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise ConfigError("The ray runner needs prefect-ray: pip install 'selectflow[ray]'.") from None
    return RayTaskRunner(address=params.address) if params.address else RayTaskRunner(init_kwargs={"num_cpus": params.workers})

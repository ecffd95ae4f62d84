"""Task runners: where the pipeline's mapped tasks (embedding units) run.

thread  Prefect's thread pool in this process (default)
dask    prefect-dask: a local Dask cluster (processes), or an existing one at `address`
ray     prefect-ray: a local Ray runtime, or an existing cluster at `address`
Results do not depend on the runner: units of work are planned before they run, and every unit
writes content-addressed shards, so the same input, options and seed give the same selection.
"""

import os
from contextlib import contextmanager
from typing import Literal, Optional
from urllib.parse import urlsplit

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


# What a Ray worker of an existing cluster needs from the flow's environment besides PREFECT_API_URL: the settings
# that change where selectflow reads and writes, and how (cache, offline model loading, the S3 endpoint). Never
# credentials (AWS keys, PREFECT_API_KEY, PREFECT_API_AUTH_STRING): Ray keeps a runtime env in its GCS and shows it
# on its dashboard, so workers take those from their own environment (the one `ray start` ran in).
WORKER_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "AWS_ENDPOINT_URL",
              "AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_REGION", "AWS_DEFAULT_REGION")
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


def _host(url: str) -> str:
    try:
        return (urlsplit(url if "://" in url else f"x://{url}").hostname or "").lower()
    except ValueError:
        return ""


def _is_loopback(host: str) -> bool:
    return host in _LOOPBACK or host.startswith("127.")


def cluster_api_url(kind: str, address: str) -> str:
    """The Prefect API that the workers of the existing `kind` cluster at `address` report to (Dask and Ray alike).

    Refused with a one-line ConfigError when workers could not reach it: no PREFECT_API_URL is configured (the flow
    would run on a temporary API inside this process, and each worker would start its own, invisible one), or the
    API is on this machine's loopback while the cluster is not.
    """
    from prefect.settings import get_current_settings

    api = get_current_settings().api.url
    if not api:
        raise ConfigError(
            f"--runner {kind} --address needs a Prefect API the {kind} workers can reach: set PREFECT_API_URL "
            "(e.g. `prefect server start` and PREFECT_API_URL=http://HOST:4200/api) in the flow's and the workers' "
            "environment; without it Prefect uses a temporary API inside this process.")
    if _is_loopback(_host(api)) and address != "auto" and not _is_loopback(_host(address)):
        raise ConfigError(
            f"--runner {kind} --address {address}: PREFECT_API_URL {api} is on this machine's loopback, which the "
            f"{kind} workers cannot reach; serve the Prefect API on an address they can reach and set PREFECT_API_URL to it.")
    return str(api)


def ray_worker_env(api_url: str) -> dict[str, str]:
    """Environment variables for the Ray runtime env of an existing cluster: the Prefect API, the SELECTFLOW_*
    settings and WORKER_ENV, as far as this process has them."""
    env = {k: v for k, v in os.environ.items() if k.startswith("SELECTFLOW_") or k in WORKER_ENV}
    env["PREFECT_API_URL"] = api_url
    return env


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
            cluster_api_url("dask", params.address)
            return DaskTaskRunner(address=params.address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": params.workers, "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None})
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise ConfigError("The ray runner needs prefect-ray: pip install 'selectflow[ray]'.") from None
    if params.address:
        env = ray_worker_env(cluster_api_url("ray", params.address))
        return RayTaskRunner(address=params.address, init_kwargs={"runtime_env": {"env_vars": env}})
    return RayTaskRunner(init_kwargs={"num_cpus": params.workers})


@contextmanager
def api_for_local_workers(params: RunnerParams):
    """Inside: the Prefect API the workers of a local Dask or Ray cluster report to.

    With no PREFECT_API_URL, Prefect runs this process's flows on a temporary API (a server subprocess on loopback).
    The local cluster's workers are other processes: given no URL, each would start a temporary API of its own
    (0.2 GiB and seconds of start-up per worker), and its task runs would not be the flow's. So the temporary API
    is started here and its URL set for the duration; Prefect sends the settings with every task it submits.
    A configured API, the thread runner and an existing cluster (`cluster_api_url` checks that one) are left as
    they are.
    """
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    settings = get_current_settings()
    if params.kind == "thread" or params.address or settings.api.url or not settings.server.ephemeral.enabled:
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the one instance Prefect's own clients use: started once per process
    server.start()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield


def run_on(params: RunnerParams, flow, *args, **kwargs):
    """Call `flow` with its tasks on the runner `params` asks for, its workers reporting to the flow's API."""
    with api_for_local_workers(params):
        return flow.with_options(task_runner=make_task_runner(params))(*args, **kwargs)

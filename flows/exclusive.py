"""No overlapping scheduled runs: the deployments of one corpus share a global concurrency limit with limit 1.

A deployment joins a limit with a tag, `selectflow-exclusive:<limit name>` (infra/prefect.yaml sets
`selectflow-exclusive:selectflow-corpus-instructions` on the nightly, weekly and embed deployments; `selectflow
serve` sets `selectflow-exclusive:selectflow-corpus-<file stem>-<path hash>` on the two it serves). A flow run of
such a deployment holds one slot of every limit it is tagged with for its whole run, so a weekly run that starts
while the nightly one is running waits for it, and the other way round. The slot is a lease, renewed while the
run lives: a crashed run frees it when the lease expires.

Strict: the limit is created (limit 1) when missing, by `selectflow serve` when it starts and by the first run that
needs it, so a missing limit never means no limit. Create it up front with
    prefect gcl create selectflow-corpus-instructions --limit 1
Runs without a deployment (the CLI, subflows) hold nothing.
"""

import functools
import hashlib
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

EXCLUSIVE_TAG = "selectflow-exclusive:"


def exclusive_tag(limit: str) -> str:
    return EXCLUSIVE_TAG + limit


def exclusive_limits(tags: Iterable[str]) -> list[str]:
    """The limit names a flow run's tags ask it to hold, in order, each once."""
    return list(dict.fromkeys(t[len(EXCLUSIVE_TAG):] for t in tags or () if t.startswith(EXCLUSIVE_TAG) and t[len(EXCLUSIVE_TAG):]))


def corpus_limit_name(path: str) -> str:
    """The limit shared by every deployment of one corpus file: `selectflow-corpus-<stem>-<hash of the path>`."""
    stem = re.sub(r"[^a-z0-9-]+", "-", Path(path).stem.lower()).strip("-") or "corpus"
    return f"selectflow-corpus-{stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


@contextmanager
def hold(limits: list[str]) -> Iterator[None]:
    """One slot of each limit (created with limit 1 when missing), waiting for it, held until the block ends."""
    if not limits:
        yield
        return
    from prefect.concurrency.sync import concurrency

    from selectflow.tasks.concurrency_limits import ensure_limits

    ensure_limits(limits)
    with concurrency(limits, occupy=1, strict=True):
        yield


def _deployment_run_limits() -> list[str]:
    """The exclusive limits of the current flow run when it is a deployment's run (not a subflow, not the CLI)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    run = context.flow_run if context else None
    if run is None or run.deployment_id is None:
        return []
    return exclusive_limits(run.tags)


def exclusive(fn):
    """Flow function decorator (under `@flow`): a deployment run tagged `selectflow-exclusive:<limit>` runs holding
    that limit's slot. The signature, and so the parameter schema, is the function's."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        limits = _deployment_run_limits()
        if limits:
            from prefect.logging import get_run_logger

            get_run_logger().info("waiting for no other run of %s (concurrency limit, 1 at a time)", ", ".join(limits))
        with hold(limits):
            return fn(*args, **kwargs)

    return wrapper

"""Prefect global concurrency limits: the GPU slots (one per device, see embedding/gpu_slots.py for the choice of
device) and the exclusive limits that keep one corpus's scheduled runs from overlapping (flows/exclusive.py).

Task floor: this module talks to the Prefect API; the plain slot choice stays below it.
"""

from contextlib import ExitStack
from typing import Optional

from .embedding.gpu_slots import limit_name, local_gpu_devices


def _busy(exc: BaseException) -> bool:
    """Whether a failed acquisition means 'all slots taken' (HTTP 423), rather than an error."""
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    return getattr(response, "status_code", None) == 423


def _missing(exc: BaseException) -> bool:
    return "must be created" in str(exc)


def ensure_limits(names: list[str], limit: int = 1) -> list[str]:
    """Create the limits that do not exist yet (limit 1 each); returns the names created. Existing limits are left
    as they are (an operator may have set one inactive or to 0 on purpose)."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    created = []
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                client.read_global_concurrency_limit_by_name(name)
                continue
            except ObjectNotFound:
                pass
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
                created.append(name)
            except ObjectAlreadyExists:  # another run created it first
                pass
    return created


def prefect_try_acquire(name: str) -> Optional[ExitStack]:
    """One non-blocking, strict attempt at a slot of `name`: the held slot (close it to release), or None when busy.
    A missing limit is created (limit 1) and tried again."""
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
    from prefect.concurrency.sync import concurrency

    for attempt in range(2):
        stack = ExitStack()
        try:
            stack.enter_context(concurrency(name, occupy=1, max_retries=0, strict=True))
            return stack
        except ConcurrencySlotAcquisitionError as exc:
            if _busy(exc):
                return None
            if _missing(exc) and attempt == 0:
                ensure_limits([name])
                continue
            raise
    return None


def create_local_gpu_limits() -> list[str]:
    """Create the missing limits of this machine's GPUs (for `selectflow serve`); returns the names created."""
    names = [limit_name(d) for d in local_gpu_devices()]
    return ensure_limits(names) if names else []

"""GPU slots: one Prefect global concurrency limit per device, so concurrent flow runs never share a GPU.

Each GPU of each machine has its own limit, `selectflow-gpu-<host>-<index>`, with limit 1. An encode unit planned
for a GPU takes the slot of any free device of its machine (its planned device first), then encodes on the
device whose slot it holds (`cuda:<index>`); when every slot is busy it waits and tries again. Units on the CPU
take no slot.

Strict: a slot is always taken with `strict=True`, so a missing limit never silently means no limit. A missing
limit is created (limit 1) the first time a unit needs it, and `selectflow serve` creates its machine's limits
when it starts; on a server with workers you can create them up front:
    prefect gcl create selectflow-gpu-<host>-<index> --limit 1     # one per GPU; <host> as `host_name()` gives it
To take a GPU out of service, set its limit inactive or to 0 (`prefect gcl update ... --limit 0`): units then
use the other devices.

The slot choice (`acquire_device`) is plain code over a device list and an acquire function, tested without a GPU.
"""

import re
import socket
import time
from contextlib import ExitStack, contextmanager
from typing import Callable, ContextManager, Iterator, Optional

GPU_LIMIT_PREFIX = "selectflow-gpu"
POLL_SECONDS = 2.0


def host_name(name: Optional[str] = None) -> str:
    """This machine's name as it appears in limit names: lower case, letters, digits and dashes."""
    raw = (name if name is not None else socket.gethostname()).split(".")[0].lower()
    return re.sub(r"[^a-z0-9-]+", "-", raw).strip("-") or "host"


def limit_name(device: str, host: Optional[str] = None) -> Optional[str]:
    """The concurrency limit of a device ('cuda:1' -> 'selectflow-gpu-<host>-1'); None for a device with no slot (CPU)."""
    if not device.startswith("cuda"):
        return None
    index = device.partition(":")[2] or "0"
    return f"{GPU_LIMIT_PREFIX}-{host_name(host)}-{int(index)}"


def slot_order(devices: list[str], preferred: str) -> list[str]:
    """The GPUs to try, each once: the preferred device first, then the others in their order after it."""
    gpus = [d for d in dict.fromkeys(devices) if d.startswith("cuda")]
    if preferred in gpus:
        i = gpus.index(preferred)
        gpus = gpus[i:] + gpus[:i]
    return gpus


def acquire_device(devices: list[str], preferred: str, try_acquire: Callable[[str], Optional[object]], *,
                   host: Optional[str] = None, wait: Callable[[float], None] = time.sleep,
                   poll_seconds: float = POLL_SECONDS, timeout: Optional[float] = None,
                   clock: Callable[[], float] = time.monotonic) -> tuple[str, Optional[object]]:
    """(device, lease): the first device of `slot_order` whose slot `try_acquire(limit name)` grants (a lease, or
    None when busy), waiting `poll_seconds` between rounds. A CPU device returns at once with no lease."""
    if limit_name(preferred, host) is None:
        return preferred, None
    order = slot_order(devices, preferred)
    start = clock()
    while True:
        for device in order:
            lease = try_acquire(limit_name(device, host))
            if lease is not None:
                return device, lease
        if timeout is not None and clock() - start >= timeout:
            raise TimeoutError(f"no free GPU slot among {', '.join(limit_name(d, host) for d in order)} "
                               f"within {timeout:.0f} s")
        wait(poll_seconds)


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


@contextmanager
def device_slot(preferred: str, devices: list[str], *,
                try_acquire: Callable[[str], Optional[ContextManager]] = prefect_try_acquire,
                host: Optional[str] = None, wait: Callable[[float], None] = time.sleep,
                visible: Optional[Callable[[], list[str]]] = None) -> Iterator[str]:
    """Yields the device to encode on, holding its slot until the block ends. CPU: the device itself, no slot.
    The candidates are the GPUs visible where the unit runs (a Dask or Ray worker may have others than the machine
    that planned the units), else `devices`."""
    if limit_name(preferred, host) is not None:
        devices = (visible or local_gpu_devices)() or devices
    device, lease = acquire_device(devices, preferred, try_acquire, host=host, wait=wait)
    if lease is None:
        yield device
        return
    with lease:
        yield device


def local_gpu_devices() -> list[str]:
    """This machine's CUDA devices ('cuda:0', ...), or [] without CUDA."""
    try:
        import torch
    except ImportError:
        return []
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def create_local_gpu_limits() -> list[str]:
    """Create the missing limits of this machine's GPUs (for `selectflow serve`); returns the names created."""
    names = [limit_name(d) for d in local_gpu_devices()]
    return ensure_limits(names) if names else []

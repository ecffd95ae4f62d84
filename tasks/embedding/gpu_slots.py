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

The slot choice (`acquire_device`, `device_slot`) is plain code over a device list and an acquire function,
tested without a GPU; taking a slot on the Prefect server (`prefect_try_acquire`) lives on the task floor, in
tasks/concurrency_limits.py.
"""

import re
import socket
import time
from contextlib import contextmanager
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


@contextmanager
def device_slot(preferred: str, devices: list[str], *,
                try_acquire: Callable[[str], Optional[ContextManager]],
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

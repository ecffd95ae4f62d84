"""GPU slots: one concurrency limit per device; a unit encodes on the device whose slot it holds; the CPU takes none.

No GPU here: the slot choice is tested as a plain function over fake device lists and a fake acquire; the Prefect
acquisition (strict, non-blocking, a missing limit created) against the test harness's API.
"""

from contextlib import nullcontext

import pytest

from selectflow.tasks.embedding import gpu_slots
from selectflow.tasks.embedding.gpu_slots import acquire_device, device_slot, host_name, limit_name, slot_order

FOUR = ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]


def test_one_limit_per_device_and_host():
    assert limit_name("cuda:1", "gpu-box.example.org") == "selectflow-gpu-gpu-box-1"
    assert limit_name("cuda", "Node_7") == "selectflow-gpu-node-7-0"
    assert limit_name("cpu", "any") is None and limit_name("mps", "any") is None
    assert host_name("A.B") == "a" and host_name("") == "host"


def test_slot_order_starts_at_the_planned_device_and_tries_each_gpu_once():
    assert slot_order(FOUR * 2, "cuda:2") == ["cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert slot_order(["cpu", "cuda:0"], "cuda:9") == ["cuda:0"]


def test_a_unit_takes_a_free_device_and_encodes_there():
    busy = {"selectflow-gpu-h-0", "selectflow-gpu-h-1"}
    tried = []

    def try_acquire(name):
        tried.append(name)
        return None if name in busy else f"lease:{name}"

    device, lease = acquire_device(FOUR, "cuda:1", try_acquire, host="h", wait=pytest.fail)
    assert (device, lease) == ("cuda:2", "lease:selectflow-gpu-h-2")
    assert tried == ["selectflow-gpu-h-1", "selectflow-gpu-h-2"]


def test_all_slots_busy_waits_then_takes_the_first_freed():
    rounds = {"n": 0}
    waits = []

    def try_acquire(name):
        return "lease" if rounds["n"] >= 2 and name.endswith("-0") else None

    def wait(seconds):
        waits.append(seconds)
        rounds["n"] += 1

    device, _ = acquire_device(FOUR[:2], "cuda:1", try_acquire, host="h", wait=wait, poll_seconds=0.5)
    assert device == "cuda:0" and waits == [0.5, 0.5]
    with pytest.raises(TimeoutError, match="no free GPU slot"):
        acquire_device(FOUR[:2], "cuda:0", lambda name: None, host="h", wait=lambda s: None, timeout=0,
                       clock=iter(range(10)).__next__)


def test_the_cpu_path_takes_no_gpu_slot():
    def must_not_acquire(name):
        raise AssertionError(f"the CPU path asked for {name}")

    with device_slot("cpu", ["cpu", "cpu"], try_acquire=must_not_acquire, wait=pytest.fail) as device:
        assert device == "cpu"


def test_the_slot_is_held_while_encoding_and_released_after():
    events = []

    class Lease:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            events.append(("hold", self.name))

        def __exit__(self, *exc):
            events.append(("release", self.name))

    with device_slot("cuda:0", FOUR[:2], try_acquire=lambda n: None if n.endswith("-0") else Lease(n), host="h",
                     wait=pytest.fail) as device:
        events.append(("encode", device))
    assert events == [("hold", "selectflow-gpu-h-1"), ("encode", "cuda:1"), ("release", "selectflow-gpu-h-1")]


def test_the_gpus_where_the_unit_runs_are_the_candidates():
    # Planned on a 4-GPU machine for cuda:3, run on a 2-GPU worker: it takes a slot of one of the worker's GPUs.
    tried = []

    def try_acquire(name):
        tried.append(name)
        return nullcontext()

    with device_slot("cuda:3", FOUR, try_acquire=try_acquire, host="w", wait=pytest.fail,
                     visible=lambda: ["cuda:0", "cuda:1"]) as device:
        assert device == "cuda:0" and tried == ["selectflow-gpu-w-0"]


@pytest.mark.usefixtures("prefect_harness")
def test_prefect_slots_are_strict_non_blocking_and_created_when_missing():
    from prefect import get_client

    from selectflow.tasks import concurrency_limits as gpu_slots  # the Prefect side of the slots (task floor)

    name = limit_name("cuda:0", "test-slots")
    first = gpu_slots.prefect_try_acquire(name)  # the limit does not exist yet: created with limit 1
    assert first is not None
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(name).limit == 1
    assert gpu_slots.prefect_try_acquire(name) is None  # busy: no waiting
    first.close()
    again = gpu_slots.prefect_try_acquire(name)
    assert again is not None
    again.close()
    assert gpu_slots.ensure_limits([name]) == []  # exists: left as it is

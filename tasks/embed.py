"""Prefect tasks: embed the prepared corpus through the embedding store, sharded into units of work.

plan_embedding_task   which texts are missing from the store, split into units (files of positions)
encode_unit_task      encode one unit into store shards (mapped over the task runner: threads, Dask, Ray)
assemble_task         write the (N, D) matrix in corpus order from the store
Progress goes to a Prefect progress artifact and, in a terminal, to a progress bar.
"""

import functools
import sys
import threading

import numpy as np
from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

from .embedding.encode_units import (EmbeddingPlan, assemble_matrix, embeddings_result, encode_positions, encoding_settings,
                                     open_store, plan_units)
from .embedding.encoder import EncoderInfo, load_encoder
from .concurrency_limits import prefect_try_acquire
from .embedding.gpu_slots import device_slot
from .embedding.store import store_key
from .io import storage
from .io.atomic import write_npy
from .io.hashing import config_hash
from .io.results import Embeddings, PreparedCorpus
from .io.workspace import Workspace
from .retry import RETRY_OPTIONS

_bars: dict = {}
_bars_lock = threading.Lock()
# Embedding progress per plan (its artifact id): texts done per unit, and the last value published. Units run
# concurrently and each reports its own count, so the artifact shows the sum over units, never less than before.
_progress: dict[str, dict] = {}
_progress_lock = threading.Lock()


def cached_encoder(model: str | None, device: str, backend: str = "torch", cache_dir: str | None = None):
    """One loaded encoder per (model, device, backend) per worker process; ONNX exports live in <cache>/onnx."""
    export_root = str(Workspace(cache_dir).local_root / "onnx") if backend != "torch" else None
    return _load_once(model, device, backend, export_root)


@functools.lru_cache(maxsize=4)
def _load_once(model: str | None, device: str, backend: str, export_root: str | None):
    return load_encoder(model, device, backend, export_root)


def _devices(device: str, backend: str = "torch") -> list[str]:
    """The devices to spread units over: every visible GPU (one encoder each), else the one asked for."""
    if backend != "torch" and device == "auto":
        return ["cpu"]  # ONNX Runtime runs here on the CPU
    if device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu" if device == "auto" else device]


@task(name="plan-embedding", cache_policy=NONE)
def plan_embedding_task(prepared: PreparedCorpus, *, model: str | None, device: str, cache_dir: str,
                        unit_rows: int = 50_000, backend: str = "torch") -> EmbeddingPlan:
    ws = Workspace(cache_dir)
    devices = _devices(device, backend)
    _, info = cached_encoder(model, devices[0], backend, cache_dir)
    store = open_store(ws.store_root, info)
    units = plan_units(prepared.prepared_path, store, unit_rows)
    key = config_hash({"corpus": prepared.key, "store": store_key(info.weights_hash, encoding_settings(info))})
    unit_paths = []
    offsets = np.cumsum([0] + [len(u) for u in units])
    for i, unit in enumerate(units):
        path = ws.path("units", key, f"unit-{i:05d}.npy")
        write_npy(path, unit)
        unit_paths.append(str(path))
    total = int(offsets[-1])
    artifact_id = create_progress_artifact(progress=0.0 if total else 100.0,
                                           description=f"Embedding {total} new texts of {prepared.n_usable} with {info.name}")
    return EmbeddingPlan(key=key, units=unit_paths, offsets=offsets[:-1].tolist(), total=total,
                         devices=[devices[i % len(devices)] for i in range(len(units))], artifact_id=str(artifact_id),
                         encoder=info.to_dict())


@task(name="encode-unit", cache_policy=NONE, **RETRY_OPTIONS)
def encode_unit_task(unit: int, *, prepared: PreparedCorpus, plan: EmbeddingPlan, model: str | None, batch_size: int,
                     cache_dir: str, shard_rows: int = 2048, backend: str = "torch", batch_tokens: int | None = None) -> int:
    """Encode one unit of missing texts on its device; safe to re-run (finished shards are skipped)."""
    from uuid import UUID

    positions = np.load(storage.local_copy(plan.units[unit]), allow_pickle=False)
    total = plan.total
    bar = _terminal_bar(plan.artifact_id, total)

    def progress(done: int, _unit_total: int) -> None:
        rows = _report_progress(plan.artifact_id, unit, done, total)
        if bar is not None:
            _advance(bar, rows)

    def encode(device: str) -> int:
        encoder, info = cached_encoder(model, device, backend, cache_dir)
        store = open_store(Workspace(cache_dir).store_root, info)
        return encode_positions(prepared.prepared_path, positions, encoder, info, store=store, batch_size=batch_size,
                                shard_rows=shard_rows, progress=progress, batch_tokens=batch_tokens)

    # CPU: no slot. GPU: the slot of any free GPU of this machine (one limit per device, `selectflow-gpu-<host>-<index>`
    # with limit 1, taken strictly: see tasks/embedding/gpu_slots.py), then encode on the device whose slot it holds.
    with device_slot(plan.devices[unit], plan.devices, try_acquire=prefect_try_acquire) as device:
        return encode(device)


def _report_progress(artifact_id: str, unit: int, done: int, total: int, step: float = 1.0) -> int:
    """Record that `unit` has encoded `done` texts and publish the plan's progress; returns the texts done in all units.

    The published value is the sum over the units this process runs, and only ever grows: it is published under
    the lock, when it has grown by `step` percentage points or reached 100 (a retried unit restarting from 0 does
    not pull it back). Units in other processes (Dask, Ray) are counted by their own process.
    """
    from uuid import UUID

    with _progress_lock:
        entry = _progress.setdefault(artifact_id, {"units": {}, "published": 0.0})
        units = entry["units"]
        units[unit] = max(units.get(unit, 0), int(done))
        rows = min(sum(units.values()), total)
        value = 100.0 * rows / max(total, 1)
        if value > entry["published"] and (value - entry["published"] >= step or rows >= total):
            entry["published"] = value
            update_progress_artifact(UUID(artifact_id), progress=value)
        return rows


def _advance(bar, position: int) -> None:
    # Task functions reach the lock only through module functions: Dask pickles tasks by value, and a lock cannot be pickled.
    with _bars_lock:
        bar.n = position
        bar.refresh()


def _terminal_bar(key: str, total: int):
    if not sys.stderr.isatty():
        return None
    with _bars_lock:
        if key not in _bars:
            from tqdm.auto import tqdm

            _bars[key] = tqdm(total=total, unit="text", desc="embedding", leave=False, dynamic_ncols=True)
        return _bars[key]


@task(name="assemble-embeddings", cache_policy=NONE)
def assemble_task(prepared: PreparedCorpus, plan: EmbeddingPlan, encoded: list[int], *, cache_dir: str,
                  encode_seconds: float) -> Embeddings:
    from uuid import UUID

    logger = get_run_logger()
    info = EncoderInfo(**plan.encoder)
    store = open_store(Workspace(cache_dir).store_root, info)
    matrix = Workspace(cache_dir).matrix_path(plan.key)
    n, truncated = assemble_matrix(prepared.prepared_path, store, matrix)
    update_progress_artifact(UUID(plan.artifact_id), progress=100.0)
    with _progress_lock:
        _progress.pop(plan.artifact_id, None)
    bar = _bars.pop(plan.artifact_id, None)
    if bar is not None:
        bar.close()
    total_encoded = int(sum(encoded))
    logger.info("embedded %d rows: %d texts encoded, the rest reused from the store; %d truncated", n, total_encoded, truncated)
    return embeddings_result(matrix_path=matrix, n_rows=n, info=info, store=store, encoded=total_encoded,
                             reused=n - total_encoded if total_encoded <= n else 0, truncated=truncated,
                             encode_seconds=encode_seconds)

"""Prefect tasks of partitioned selection (issue #13): embeddings kept as shards, k-means partitions, one
sampler task per partition, one merge. The work is plain code in embedding/sharded.py, planning/partitions.py
and planning/partition_merge.py; these tasks read, call and write.

plan_import_task / import_shard_task    the user's sharded .npy embeddings, checked shard by shard (mapped)
assemble_shard_task                     the store's embeddings of a range of corpus rows, as one shard (mapped)
fit_partitions_task                     centroids on a seeded sample (reused when the cache has them)
route_shard_task                        one shard's rows to the partitions' fragment files (mapped)
plan_partition_budget_task              partition sizes, quotas and spares
select_partition_task                   the sampler on one partition's rows only (mapped)
merge_partitions_task                   the partitions' picks merged into one Selection (the same typed result)

Nothing here loads the (N, D) matrix: a task holds at most one shard chunk, one partition, or the merge's
quota+spares vectors.

The cache may be a local folder or an object store (s3://, gs://): paths below are strings, a local path or a URL.
The plain functions read and write local files, so on object storage a task reads through local copies
(io/storage.local_copy) and a partition folder is mirrored file by file (PartitionFolder); nothing assumes that
the flow and the workers share a disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict

from .embedding.sharded import assemble_shard, import_shard, npy_shape, shard_sources, write_shard_list
from .errors import ConfigError, InputError
from .io.atomic import write_json, write_npy
from .io import storage
from .io.hashing import config_hash, file_hash
from .io.results import Embeddings, PreparedCorpus, Selection
from .io.selection_input import save_arrays
from .io.workspace import Workspace
from .planning import partition_merge, partitions
from .planning.sampler_run import SamplerRun
from .samplers import get_sampler, resolve_budget

PARTITIONS_VERSION = 1


def _cache_path(cache_dir: str, *parts: str) -> str:
    """A path under the cache, as a string: a local path or an object-store URL."""
    return str(Workspace(cache_dir).path(*parts))


class PartitionFolder:
    """A partition folder of the cache (planning/partitions.py's layout) as the plain functions need it: local files.

    On a local or shared filesystem that is the folder itself. On object storage each task works in a local mirror
    (in the scratch space): it fetches only the files it reads (the routing manifests, one partition's fragments)
    and publishes only those it writes, each atomically and a shard's routing manifest last, so a task on another
    machine sees a shard routed completely or not at all.
    """

    def __init__(self, url: str):
        self.url = str(url)
        self.remote = storage.is_remote(self.url)
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:24]
        self.local = storage.default_scratch() / "partitions" / digest if self.remote else Path(self.url)

    def has(self, name: str) -> bool:
        return storage.exists(storage.join(self.url, name))

    def read_json(self, name: str) -> Any:
        return json.loads(storage.read_text(storage.join(self.url, name)))

    def fetch(self, names: list[str]) -> Path:
        """The local folder, holding `names` as they are on the store now (hard links to the scratch copies, which
        storage.local_copy downloads once per object version: a folder rebuilt on the store is not read stale)."""
        if self.remote:
            for name in names:
                target = self.local / name
                source = storage.local_copy(storage.join(self.url, name))
                if target.exists() and os.path.samefile(source, target):
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
                try:
                    os.link(source, tmp)
                except OSError:  # another filesystem: copy
                    shutil.copyfile(source, tmp)
                os.replace(tmp, target)
        return self.local

    def publish(self, names: list[str]) -> None:
        """Upload `names` from the local folder, in order (nothing to do when the folder is local)."""
        if self.remote:
            for name in names:
                storage.publish(self.local / name, storage.join(self.url, name))


# --- embeddings as shards ---------------------------------------------------------------------------------

class ShardPlan(BaseModel):
    """The user's shards: each file, its first input row, and its usable rows (positions inside the file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    files: list[str]
    input_offsets: list[int]
    n_rows: list[int]  # rows of each file
    usable: list[Optional[str]]  # None: every row of the file is usable; else an .npy of the usable positions in it
    dim: int


@task(name="plan-import-shards", cache_policy=NONE)
def plan_import_task(prepared: PreparedCorpus, source: str, cache_dir: str) -> ShardPlan:
    """The .npy shards of `source` (folder, glob or file), checked against the corpus's input row count."""
    files = shard_sources(source)
    lengths, dims = [], set()
    for f in files:
        shape, dtype = npy_shape(f)
        if len(shape) != 2 or shape[1] == 0 or not np.issubdtype(dtype, np.number):
            raise InputError(f"{f}: embeddings must be a 2-D numeric array (rows, dim); got {dtype} {shape}.")
        lengths.append(shape[0])
        dims.add(shape[1])
    if len(dims) != 1:
        raise InputError(f"{source}: the shards have different dimensions ({sorted(dims)}); every row needs the same one.")
    if sum(lengths) != prepared.n_read:
        raise InputError(f"{source}: the shards hold {sum(lengths)} rows but the corpus has {prepared.n_read}; "
                         "they must hold one row per input row, in order (files in name order).")
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    rows = pl.read_parquet(storage.local_copy(prepared.prepared_path), columns=["row"])["row"].to_numpy().astype(np.int64)
    cut = np.searchsorted(rows, offsets)
    usable: list[Optional[str]] = []
    for i in range(len(files)):
        local = rows[cut[i] : cut[i + 1]] - offsets[i]
        if len(local) == lengths[i]:
            usable.append(None)
        else:
            usable.append(str(write_npy(_cache_path(cache_dir, "shards", "usable", prepared.key, f"shard-{i:05d}.npy"), local)))
    return ShardPlan(files=files, input_offsets=offsets[:-1].tolist(), n_rows=[int(x) for x in lengths], usable=usable,
                     dim=int(dims.pop()))


@task(name="import-shard", cache_policy=NONE)
def import_shard_task(shard: int, *, plan: ShardPlan, prepared: PreparedCorpus, normalize: bool, cache_dir: str) -> dict:
    """Check one user shard; returns {"path", "rows", "dim", "hash"} (the path is the user's file when it is usable as is).

    The result is kept in the cache under the file's version (modification time and size, or the object's ETag),
    so a later run on an unchanged shard neither hashes nor checks it again (41-99 s per sampler run at 4M rows
    before, bench/results/scale.md)."""
    path = plan.files[shard]
    source = path if storage.is_remote(path) else str(Path(path).expanduser().resolve())
    record = _cache_path(cache_dir, "shards", "checked", config_hash(
        {"file": source, "version": storage.version(path), "corpus": prepared.key, "shard": shard,
         "input_offset": plan.input_offsets[shard], "normalize": normalize}) + ".json")
    if storage.exists(record):
        found = json.loads(storage.read_text(record))
        if storage.exists(found["path"]):
            return found
    found = _check_shard(shard, plan=plan, prepared=prepared, normalize=normalize, cache_dir=cache_dir)
    write_json(record, found)
    return found


def _check_shard(shard: int, *, plan: ShardPlan, prepared: PreparedCorpus, normalize: bool, cache_dir: str) -> dict:
    path = plan.files[shard]
    local = storage.local_copy(path)
    hashed = file_hash(local)
    out = _cache_path(cache_dir, "shards", config_hash({"corpus": prepared.key, "source_hash": hashed,
                                                        "normalize": normalize}), f"shard-{shard:05d}.npy")
    usable = (np.arange(plan.n_rows[shard], dtype=np.int64) if plan.usable[shard] is None
              else np.load(storage.local_copy(plan.usable[shard]), allow_pickle=False))
    found = import_shard(str(local), input_offset=plan.input_offsets[shard], usable=usable, normalize=normalize,
                         out_path=out)
    if found["path"] == str(local):  # the user's file is the shard as it is
        found["path"] = path
        if storage.is_remote(out) and not storage.is_remote(path):
            # A cache on object storage is the one place every worker reads: a file on this machine's disk is not.
            found["path"] = storage.publish(local, out)
    return {**found, "hash": hashed}


def imported_shards_result(*, source: str, prepared: PreparedCorpus, parts: list[dict], normalize: bool,
                           cache_dir: str) -> Embeddings:
    """The Embeddings of the user's shards: `shards` lists them; `matrix_path` is the shard list (no matrix is written)."""
    key = config_hash({"corpus": prepared.key, "embeddings": "npy-shards", "hashes": [p["hash"] for p in parts],
                       "normalize": normalize})
    listing = write_shard_list(_cache_path(cache_dir, "matrix", f"{key}.shards.json"), [p["path"] for p in parts],
                               [p["rows"] for p in parts], parts[0]["dim"])
    n = int(sum(p["rows"] for p in parts))
    return Embeddings(
        matrix_path=str(listing), shards=[p["path"] for p in parts], n_rows=n, dim=int(parts[0]["dim"]), store_dir=None,
        store_key=None, key=key, encoded=0, reused=n, truncated=0, max_seq_length=None, encode_seconds=0.0,
        texts_per_second=None,
        encoder={"name": f"user embeddings ({storage.name(source) or source}, {len(parts)} shards)",
                 "path": source if storage.is_remote(source) else str(Path(source).expanduser().resolve()),
                 "weights_hash": config_hash({"hashes": [p["hash"] for p in parts]}), "max_seq_length": None,
                 "dim": int(parts[0]["dim"]), "device": "none"},
    )


@task(name="assemble-shard", cache_policy=NONE)
def assemble_shard_task(start: int, *, stop: int, prepared: PreparedCorpus, plan, cache_dir: str) -> dict:
    """Corpus rows [start, stop) from the embedding store, as one float32 shard of the cache; returns its path and truncations."""
    from .embedding.encode_units import open_store, read_digests
    from .embedding.encoder import EncoderInfo

    info = EncoderInfo(**plan.encoder)
    store = open_store(Workspace(cache_dir).store_root, info)
    path = _cache_path(cache_dir, "shards", plan.key, f"rows-{start:012d}-{stop:012d}.npy")
    digests = read_digests(prepared.prepared_path)[start:stop]
    n, tokens = assemble_shard(digests, store, path)
    max_len = info.max_seq_length
    return {"path": str(path), "rows": n, "dim": int(store.dim), "truncated": int((tokens >= max_len).sum()) if max_len else 0}


# --- partitions ------------------------------------------------------------------------------------------------

class PartitionPlan(BaseModel):
    """Where one embedding's partitions live, and how they were fitted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    folder: str
    k: int
    seed: int
    shards: list[str]
    row_offsets: list[int]
    n_rows: int
    dim: int
    fit_seconds: float = 0.0


@task(name="fit-partitions", cache_policy=NONE)
def fit_partitions_task(embeddings: Embeddings, *, k: int, seed: int, cache_dir: str) -> PartitionPlan:
    """K centroids by seeded k-means on a sample of the shards (planning/partitions.py), saved once per (embeddings, K, seed)."""
    shards = list(embeddings.shards or [embeddings.matrix_path])
    lengths = [npy_shape(s)[0][0] for s in shards]  # headers only
    folder = PartitionFolder(_cache_path(cache_dir, "partitions", config_hash(
        {"embeddings": embeddings.key, "k": k, "seed": seed, "version": PARTITIONS_VERSION})))
    seconds = 0.0
    if not folder.has("centroids.npy"):
        t0 = time.perf_counter()
        local_shards = [str(storage.local_copy(s)) for s in shards]
        partitions.save_centroids(partitions.fit_partitions(local_shards, k=k, seed=seed), folder.local)
        folder.publish(["centroids.npy"])
        seconds = time.perf_counter() - t0
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return PartitionPlan(folder=folder.url, k=k, seed=seed, shards=shards, row_offsets=offsets[:-1].tolist(),
                         n_rows=int(offsets[-1]), dim=embeddings.dim, fit_seconds=seconds)


@task(name="route-shard", cache_policy=NONE)
def route_shard_task(shard: int, *, plan: PartitionPlan) -> list[int]:
    """Route one shard's rows to the partitions (reused when its routing manifest is there); its per-partition counts."""
    folder = PartitionFolder(plan.folder)
    manifest = partitions.routing_name(shard)
    if folder.has(manifest):
        return folder.read_json(manifest)["counts"]
    local = folder.fetch(["centroids.npy"])
    routed = partitions.route_shard(shard=str(storage.local_copy(plan.shards[shard])), shard_index=shard,
                                    row_offset=plan.row_offsets[shard], centroids=local / "centroids.npy", out_dir=local)
    present = [p for p, c in enumerate(routed.counts) if c]
    folder.publish([partitions.fragment_name(p, shard, kind) for p in present for kind in ("emb", "rows")] + [manifest])
    return routed.counts


class PartitionBudget(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sizes: list[int]
    quotas: list[int]
    spares: list[int]
    budget: int
    rule: str


@task(name="plan-partition-budget", cache_policy=NONE)
def plan_partition_budget_task(plan: PartitionPlan, sampler: str, n_budget: int) -> PartitionBudget:
    """Rows per partition (from the routing manifests), the budget over them by the sampler's rule, and spares."""
    local = PartitionFolder(plan.folder).fetch([partitions.routing_name(s) for s in range(len(plan.shards))])
    sizes = partitions.partition_sizes(local, len(plan.shards))
    quotas = partitions.allocate_partition_budget(sizes, n_budget)
    spares = partitions.spare_counts(quotas, sizes)
    return PartitionBudget(sizes=sizes.tolist(), quotas=quotas.tolist(), spares=spares.tolist(), budget=int(n_budget),
                           rule=partitions.partition_rule(sampler).why)


def partition_columns(prepared: PreparedCorpus, rows: np.ndarray) -> dict[str, Any]:
    """The SelectionInput columns (ids, quality, labels, groups) of `rows` (ascending corpus positions) only."""
    cols = ["id"] + [c for c, has in (("quality", prepared.has_quality), ("labels", prepared.has_labels),
                                      ("group", prepared.has_groups)) if has]
    wanted = pl.Series("pos", np.asarray(rows, dtype=np.uint32))
    frame = (pl.scan_parquet(storage.local_copy(prepared.prepared_path)).select(cols).with_row_index("pos")
             .filter(pl.col("pos").is_in(wanted)).collect())
    if frame.height != len(rows):
        raise InputError(f"{prepared.prepared_path}: {frame.height} of a partition's {len(rows)} rows found; the shards "
                         "and the prepared corpus disagree.")
    out: dict[str, Any] = {"ids": frame["id"].to_numpy()}
    if prepared.has_quality:
        out["quality"] = frame["quality"].to_numpy()
    if prepared.has_labels:
        out["labels"] = [tuple(x) for x in frame["labels"].to_list()]
    if prepared.has_groups:
        out["groups"] = frame["group"].to_numpy()
    return out


@task(name="select-partition", cache_policy=NONE)
def select_partition_task(partition: int, *, plan: PartitionPlan, budget: PartitionBudget, prepared: PreparedCorpus,
                          run: SamplerRun, out_dir: str) -> dict:
    """The sampler on one partition's rows only (its fragments, its columns); its ranked picks and spares in a .npz."""
    sampler = get_sampler(run.sampler, run.options)
    path = storage.join(out_dir, f"p-{partition:05d}.npz")
    t0 = time.perf_counter()
    if not storage.exists(path):
        folder = PartitionFolder(plan.folder)
        n_shards = len(plan.shards)
        local = folder.fetch([partitions.routing_name(s) for s in range(n_shards)])
        counts = partitions.partition_sizes_by_shard(local, n_shards)[:, partition]
        folder.fetch([partitions.fragment_name(partition, s, kind) for s in np.flatnonzero(counts) for kind in ("emb", "rows")])
        partition_merge.select_in_partition(
            partition_dir=local, partition=partition, n_shards=n_shards, sampler=sampler,
            quota=budget.quotas[partition], spares=budget.spares[partition], seed=run.seed, out_path=path,
            columns=lambda rows: partition_columns(prepared, rows))
    return {"path": str(path), "seconds": round(time.perf_counter() - t0, 3)}


@task(name="merge-partitions", cache_policy=NONE)
def merge_partitions_task(parts: list[dict], *, plan: PartitionPlan, budget: PartitionBudget, run: SamplerRun,
                          key: str, out_dir: str) -> Selection:
    """One Selection of exactly the budget: partitions interleaved by rank, border near-duplicates replaced by spares."""
    logger = get_run_logger()
    t0 = time.perf_counter()
    merged = partition_merge.merge_partitions([storage.local_copy(p["path"]) for p in parts], budget=budget.budget)
    chosen = get_sampler(run.sampler, run.options)
    # Clusters: each partition's own cluster ids, offset so they stay distinct across partitions.
    has_clusters = bool((merged.clusters >= 0).any())
    clusters = np.full(len(merged.rows), -1, dtype=np.int64)
    if has_clusters:
        width = int(merged.clusters.max()) + 1
        clusters = np.where(merged.clusters >= 0, merged.partitions * width + merged.clusters, -1)
    arrays = save_arrays(storage.join(out_dir, "selection.npz"), {"rows": merged.rows, "scores": merged.scores,
                                                            "weights": merged.weights, "clusters": clusters})
    diagnostics = {"partitioned": {
        "k": plan.k, "seed": plan.seed, "rows": plan.n_rows, "shards": len(plan.shards), "sizes": budget.sizes,
        "quotas": budget.quotas, "spares": budget.spares, "budget_rule": budget.rule, "merge": merged.report.to_dict(),
        "partition_seconds": [p["seconds"] for p in parts],
        "note": ("Selected per k-means partition (planning/partition_merge.py); no (N, D) matrix was assembled, so the "
                 "report's analysis clusters are fitted on a seeded sample and every row assigned chunk by chunk, and "
                 "no FAISS index over all rows was built (no corpus near-duplicate estimate)."),
    }}
    result = Selection(key=key, sampler=run.sampler, options=chosen.options.model_dump(), budget=budget.budget,
                       budget_requested=run.budget, seed=run.seed, arrays=str(arrays), has_clusters=has_clusters,
                       diagnostics=diagnostics, seconds=round(sum(p["seconds"] for p in parts) + time.perf_counter() - t0, 3))
    write_json(storage.join(out_dir, "selection.json"), result.record())
    logger.info("%s selected %d of %d rows in %d partitions (%d border near-duplicates replaced)", run.sampler,
                budget.budget, plan.n_rows, plan.k, merged.report.replaced)
    return result


def partition_selection_key(embeddings: Embeddings, run: SamplerRun, options: dict, n_budget: int, k: int) -> str:
    return config_hash({"embeddings": embeddings.key, "sampler": run.sampler, "options": options, "budget": n_budget,
                        "seed": run.seed, "partitions": k, "version": PARTITIONS_VERSION})


def resolve_partitions(n_rows: int, dim: int, partitions_asked: int | None, memory_limit_gib: float | None) -> int:
    """K: as asked, or the fewest partitions whose rows fit the memory limit (planning/partitions.py)."""
    if partitions_asked:
        if partitions_asked > n_rows:
            raise ConfigError(f"--partitions {partitions_asked} is more than the {n_rows} rows.")
        return int(partitions_asked)
    return min(n_rows, partitions.partitions_for_memory(n_rows, dim, memory_limit_gib))


def selection_dir(cache_dir: str, key: str) -> str:
    return _cache_path(cache_dir, "selection", key)


def resolved_budget(run: SamplerRun, n_rows: int) -> int:
    return resolve_budget(run.budget, n_rows)

"""Partitioned selection, part 1: k-means partitions fitted on a sample and rows routed to them shard by shard.

No function here holds the (N, D) matrix. Embeddings stay in shards (`.npy` files read memory-mapped,
or any array-like with `.shape` and slicing, which the tests use to count what is read); every pass
reads at most `chunk_rows` rows at a time.

shard_lengths         rows of each shard, from the .npy headers only
sample_rows           a seeded sample of rows (global positions fixed first, so chunking does not matter)
fit_partitions        K unit-norm partition centroids by seeded FAISS k-means on that sample
assign_partitions     nearest centroid by inner product, ties to the lower partition, chunk-independent
route_shard           one shard's rows to per-partition fragment files (one mapped task per shard)
route_shards          route_shard over every shard in order (the single-process form)
partition_sizes       rows per partition, from the shards' routing manifests (partition_sizes_by_shard: per shard)
load_partition        one partition's global rows and float32 unit embeddings (its own fragments only)
allocate_partition_budget  the global budget over partitions: proportional (default) or the sampler's rule
spare_counts          how many ranked spare rows each partition selects beyond its quota
partition_rule        the documented per-sampler rule (SAMPLER_RULES); partition_seed, default_partitions
partitions_for_memory K so that one partition's selection task fits a memory limit (`--memory-limit GiB`)

Layout under a partition folder (`out_dir`), written with atomic renames:
  centroids.npy                          (K, D) float32 unit-norm centroids (`save_centroids`)
  p-<partition>/s-<shard>.emb.npy        that shard's rows of that partition, in the shard's dtype
  p-<partition>/s-<shard>.rows.npy       their global row positions (int64, ascending); written after .emb
  routing/s-<shard>.json                 the shard's per-partition counts; written last, marks the shard done
Global row positions count rows across the shards in the order given (shard 0 first).
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np

from ..errors import ConfigError, InputError
from ..io.atomic import atomic_path, write_json, write_npy
from ..samplers.quotas import allocate_quotas, allocate_weighted

# A shard: a .npy path (read with mmap) or an array-like with .shape and slicing (tests, in-memory data).
Shard = Any
DEFAULT_CHUNK_ROWS = 50_000
# Rows whose two best float32 scores are closer than this are re-scored in float64 one row at a time, so the
# assignment does not depend on how BLAS blocked the chunk (float32 dot products of 384 unit terms err < 1e-5).
_TIE_GAP = 1e-4


def _open(shard: Shard):
    if isinstance(shard, (str, Path)):
        return np.load(Path(shard), mmap_mode="r", allow_pickle=False)
    return shard


def shard_lengths(shards: Sequence[Shard]) -> np.ndarray:
    """Rows of each shard (for .npy files, read from the header: nothing is loaded)."""
    lengths = []
    for i, shard in enumerate(shards):
        shape = _open(shard).shape
        if len(shape) != 2 or shape[1] == 0:
            raise InputError(f"Embedding shard {i} ({shard if isinstance(shard, (str, Path)) else 'array'}) "
                             f"must be a (rows, dim) matrix; got shape {tuple(shape)}.")
        lengths.append(int(shape[0]))
    return np.asarray(lengths, dtype=np.int64)


def _as_unit32(block: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit norm (float16 shards are unit only to about 1e-3)."""
    x = np.array(block, dtype=np.float32, copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def _windows(n: int, chunk_rows: int) -> Iterator[tuple[int, int]]:
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be at least 1; got {chunk_rows}.")
    for start in range(0, n, chunk_rows):
        yield start, min(n, start + chunk_rows)


def sample_rows(shards: Sequence[Shard], n_sample: int, seed: int, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """A seeded uniform sample of `n_sample` rows: (global positions ascending, (n_sample, D) float32 unit rows).

    The positions are drawn first from the total row count (numpy's Generator.choice uses Floyd's algorithm
    when the sample is small against N, so this is O(n_sample) memory), then read shard by shard, at most
    `chunk_rows` positions per read; the sample does not depend on the shard or chunk sizes.
    """
    lengths = shard_lengths(shards)
    n = int(lengths.sum())
    if not 1 <= n_sample <= n:
        raise ConfigError(f"Sample of {n_sample} rows is outside 1..{n} (the rows in the shards).")
    positions = np.sort(np.random.default_rng(seed).choice(n, size=n_sample, replace=False)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    parts = []
    for i, shard in enumerate(shards):
        lo, hi = np.searchsorted(positions, [offsets[i], offsets[i + 1]])
        if lo == hi:
            continue
        array = _open(shard)
        local = positions[lo:hi] - offsets[i]
        for a, b in _windows(len(local), chunk_rows):
            parts.append(_as_unit32(array[local[a:b]]))
    return positions, np.concatenate(parts)


def fit_partitions(shards: Sequence[Shard], *, k: int, seed: int, sample_per_partition: int = 256,
                   n_iter: int = 20, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> np.ndarray:
    """(k, D) float32 unit-norm centroids: seeded FAISS k-means (one thread) on min(N, k*sample_per_partition) sampled rows.

    The centroids are renormalised (spherical k-means' last step), so nearest by inner product is nearest by
    cosine and by L2 at once.
    """
    from ..samplers.clustering import kmeans

    n = int(shard_lengths(shards).sum())
    if not 1 <= k <= n:
        raise ConfigError(f"Number of partitions k={k} must be between 1 and the number of rows ({n}).")
    _, sample = sample_rows(shards, min(n, k * sample_per_partition), seed, chunk_rows=chunk_rows)
    centroids = kmeans(sample, k, seed=seed, n_iter=n_iter, max_points_per_centroid=sample_per_partition).centroids
    return _as_unit32(centroids)


def save_centroids(centroids: np.ndarray, out_dir: str | Path) -> Path:
    return write_npy(Path(out_dir) / "centroids.npy", np.ascontiguousarray(centroids, dtype=np.float32))


def assign_partitions(block: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Partition (int64) of each row: the centroid of largest inner product, ties to the lower partition.

    float32 BLAS scores; rows whose best two scores are within 1e-4 are re-scored one by one in float64, so a
    row's partition is the same whichever chunk it arrives in.
    """
    x = np.ascontiguousarray(block, dtype=np.float32)
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    if len(x) == 0:
        return np.empty(0, dtype=np.int64)
    scores = x @ c.T
    best = np.argmax(scores, axis=1)
    if c.shape[0] > 1:
        top2 = np.partition(scores, -2, axis=1)[:, -2:]
        close = np.flatnonzero(top2[:, 1] - top2[:, 0] < _TIE_GAP)
        c64 = c.astype(np.float64)
        for i in close:
            best[i] = int(np.argmax(c64 @ x[i].astype(np.float64)))
    return best.astype(np.int64)


@dataclass(frozen=True)
class ShardRouting:
    shard: int
    row_offset: int
    n_rows: int
    counts: list[int]  # rows of this shard in each partition
    manifest: str  # routing/s-<shard>.json


def fragment_name(partition: int, shard: int, kind: str) -> str:
    """A fragment's name relative to the partition folder (kind: "emb" or "rows")."""
    return f"p-{partition:05d}/s-{shard:06d}.{kind}.npy"


def routing_name(shard: int) -> str:
    """A shard's routing manifest, relative to the partition folder."""
    return f"routing/s-{shard:06d}.json"


def _fragment(out_dir: Path, partition: int, shard: int, kind: str) -> Path:
    return out_dir / fragment_name(partition, shard, kind)


def _routing_manifest(out_dir: Path, shard: int) -> Path:
    return out_dir / routing_name(shard)


def route_shard(*, shard: Shard, shard_index: int, row_offset: int, centroids: np.ndarray | str | Path,
                out_dir: str | Path, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ShardRouting:
    """Route one shard's rows to the partitions and write each partition's fragment of this shard.

    Two passes over the shard, `chunk_rows` at a time: the first assigns (O(chunk·K) scores, O(rows) int64
    assignments), the second copies each chunk's rows into per-partition .npy files opened as memory maps
    (so memory is one chunk plus the page cache, never the shard). Fragments are written to temporary
    names and renamed; the rows file follows its .emb file and the routing manifest comes last, so a
    killed task leaves no fragment that a partition would read. Re-running a shard rewrites the same bytes.
    """
    out = Path(out_dir)
    cents = np.load(centroids, allow_pickle=False) if isinstance(centroids, (str, Path)) else np.asarray(centroids)
    array = _open(shard)
    n, d = int(array.shape[0]), int(array.shape[1])
    k = int(cents.shape[0])
    if d != cents.shape[1]:
        raise InputError(f"Embedding shard {shard_index} has {d} dimensions; the partition centroids have {cents.shape[1]}.")
    assignments = np.empty(n, dtype=np.int64)
    for a, b in _windows(n, chunk_rows):
        assignments[a:b] = assign_partitions(_as_unit32(array[a:b]), cents)
    counts = np.bincount(assignments, minlength=k)
    present = np.flatnonzero(counts)
    dtype = np.dtype(array.dtype) if np.dtype(array.dtype) in (np.float16, np.float32) else np.dtype(np.float32)
    cursor = np.zeros(k, dtype=np.int64)
    with contextlib.ExitStack() as stack:
        maps = {}
        for p in present:
            tmp = stack.enter_context(atomic_path(_fragment(out, int(p), shard_index, "emb"), suffix=".npy"))
            maps[int(p)] = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(int(counts[p]), d))
        for a, b in _windows(n, chunk_rows):
            block = np.asarray(array[a:b])
            local = assignments[a:b]
            order = np.argsort(local, kind="stable")
            bounds = np.searchsorted(local[order], present, side="left"), np.searchsorted(local[order], present, side="right")
            for p, lo, hi in zip(present, *bounds):
                if lo == hi:
                    continue
                take = order[lo:hi]
                maps[int(p)][cursor[p] : cursor[p] + len(take)] = block[take]
                cursor[p] += len(take)
        for m in maps.values():
            m.flush()
        maps.clear()
    for p in present:
        write_npy(_fragment(out, int(p), shard_index, "rows"), row_offset + np.flatnonzero(assignments == p))
    manifest = _routing_manifest(out, shard_index)
    write_json(manifest, {"shard": shard_index, "row_offset": int(row_offset), "n_rows": n, "k": k, "dim": d,
                          "dtype": dtype.name, "counts": counts.tolist()})
    return ShardRouting(shard=shard_index, row_offset=int(row_offset), n_rows=n, counts=counts.tolist(), manifest=str(manifest))


def route_shards(shards: Sequence[Shard], *, centroids: np.ndarray | str | Path, out_dir: str | Path,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> list[ShardRouting]:
    """`route_shard` over every shard in order, global row positions running across them."""
    offsets = np.concatenate([[0], np.cumsum(shard_lengths(shards))])
    return [route_shard(shard=s, shard_index=i, row_offset=int(offsets[i]), centroids=centroids, out_dir=out_dir,
                        chunk_rows=chunk_rows) for i, s in enumerate(shards)]


def _manifests(out_dir: Path, n_shards: int) -> list[dict]:
    found = []
    for s in range(n_shards):
        path = _routing_manifest(out_dir, s)
        if not path.exists():
            raise InputError(f"{out_dir}: shard {s} has not been routed (no {path.name}); route every shard before selecting.")
        found.append(json.loads(path.read_text()))
    return found


def partition_sizes_by_shard(out_dir: str | Path, n_shards: int) -> np.ndarray:
    """(n_shards, K): rows of each shard in each partition, from the routing manifests (all must be present)."""
    return np.array([m["counts"] for m in _manifests(Path(out_dir), n_shards)], dtype=np.int64)


def partition_sizes(out_dir: str | Path, n_shards: int) -> np.ndarray:
    """Rows per partition, summed over the `n_shards` shards' routing manifests (all must be present)."""
    return partition_sizes_by_shard(out_dir, n_shards).sum(axis=0)


@dataclass(frozen=True)
class PartitionData:
    partition: int
    rows: np.ndarray  # (n,) int64 global row positions, ascending
    embeddings: np.ndarray  # (n, D) float32, unit norm


def load_partition(out_dir: str | Path, partition: int, n_shards: int) -> PartitionData:
    """One partition's rows and embeddings, read from its own fragments only (shard order, so rows ascend)."""
    out = Path(out_dir)
    manifests = _manifests(out, n_shards)
    rows, embs = [], []
    for m in manifests:
        expected = m["counts"][partition]
        if expected == 0:
            continue
        r = np.load(_fragment(out, partition, m["shard"], "rows"), allow_pickle=False)
        e = np.load(_fragment(out, partition, m["shard"], "emb"), allow_pickle=False)
        if len(r) != expected or len(e) != expected:
            raise InputError(f"{out}: partition {partition}, shard {m['shard']}: fragment has {len(r)}/{len(e)} rows, "
                             f"the routing manifest says {expected}; route that shard again.")
        rows.append(r)
        embs.append(_as_unit32(e))
    d = manifests[0]["dim"] if manifests else 0
    return PartitionData(partition=partition,
                         rows=np.concatenate(rows) if rows else np.empty(0, np.int64),
                         embeddings=np.concatenate(embs) if embs else np.empty((0, d), np.float32))


# --- the global budget --------------------------------------------------------------------------------------

BudgetRule = Literal["proportional", "weighted"]


@dataclass(frozen=True)
class PartitionRule:
    """How a sampler's budget is split over partitions and how its partition selections are kept."""

    budget: BudgetRule
    # Multiply a partition's weights by (rows run)/(quota) when its picks are the first `quota` of a larger run:
    # right for Horvitz-Thompson weights of a run returned in random order (a prefix of b of B rows, weights
    # times B/b, stays unbiased: sensitivity.py); wrong for samplers whose weights are all 1.
    rescale_prefix_weights: bool
    why: str


SAMPLER_RULES: dict[str, PartitionRule] = {
    "random": PartitionRule("proportional", False,
                            "Proportional allocation is a stratified uniform sample: each row's chance stays budget/N."),
    "kmeans": PartitionRule("proportional", False,
                            "kMQ splits its budget over clusters in proportion to size; partitions are coarse clusters, "
                            "so proportional keeps its rule. A refinement round splits over clusters by feedback weights: "
                            "pass the partitions' refined weights through allocate_partition_budget(weights=...)."),
    "mig": PartitionRule("proportional", False,
                         "MIG's gains are relative to its own label graph, not comparable across partitions."),
    "dpp": PartitionRule("proportional", False,
                         "Log-det gains depend on each partition's kernel; not comparable across partitions."),
    "coverage": PartitionRule("proportional", False,
                              "Coverage radii are per partition; proportional keeps the covered density even."),
    "influence": PartitionRule("proportional", False,
                               "The proxy model is trained per partition, so scores are not comparable across "
                               "partitions; with a proxy trained on a global sample, the target/top mode would use "
                               "weights = each partition's count of rows above the global score cut."),
    "sensitivity": PartitionRule("proportional", True,
                                 "Proportional is stratified pi-ps sampling; rows come in random order, so the first "
                                 "quota of a quota+spares run are rescaled by (quota+spares)/quota."),
}
DEFAULT_RULE = PartitionRule("proportional", False, "Default: in proportion to partition size.")


def partition_rule(sampler: str) -> PartitionRule:
    return SAMPLER_RULES.get(sampler, DEFAULT_RULE)


def allocate_partition_budget(sizes: np.ndarray, budget: int, *, weights: np.ndarray | None = None,
                              capacity: np.ndarray | None = None) -> np.ndarray:
    """Each partition's quota; they sum to `budget` exactly and never exceed a partition's capacity.

    Default: in proportion to partition size (`allocate_quotas`: largest remainder, ties to the lower partition,
    a partition too small for its share is filled and the rest split again). The hook for a sampler's own
    rule: `weights` (one non-negative number per partition, e.g. kMQ refinement's feedback weights) split the
    budget by `allocate_weighted`, capped by `capacity` (default: the sizes; rows not selected before in rounds).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or not 1 <= budget <= int(sizes.sum()):
        raise ConfigError(f"Budget {budget!r} must be a whole number of rows in 1..{int(sizes.sum())}.")
    if weights is None and capacity is None:
        return allocate_quotas(sizes, int(budget))
    cap = sizes if capacity is None else np.minimum(np.asarray(capacity, dtype=np.int64), sizes)
    w = sizes.astype(np.float64) if weights is None else np.asarray(weights, dtype=np.float64)
    return allocate_weighted(w, cap, int(budget))


def spare_counts(quotas: np.ndarray, sizes: np.ndarray, *, fraction: float = 0.05, minimum: int = 2) -> np.ndarray:
    """Spare rows per partition: max(minimum, ceil(fraction·quota)), at most the rows left; none when the quota is 0."""
    quotas = np.asarray(quotas, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    want = np.maximum(int(minimum), np.ceil(fraction * quotas).astype(np.int64))
    return np.where(quotas > 0, np.minimum(want, sizes - quotas), 0).astype(np.int64)


def partition_seed(seed: int, partition: int) -> int:
    """The sampler seed of one partition: SeedSequence([seed, partition]), so re-running a partition repeats it."""
    return int(np.random.SeedSequence([int(seed), int(partition)]).generate_state(1, dtype=np.uint32)[0])


def default_partitions(n_rows: int, rows_per_partition: int = 1_000_000) -> int:
    """K so partitions hold about `rows_per_partition` rows (the size the samplers are benchmarked at)."""
    return max(1, math.ceil(n_rows / rows_per_partition))


# Bytes per row and dimension of a partition's selection task: its float32 rows (4 B) times 3 (the float16
# fragments and their float32 copy while loading, then the sampler's working set: MIG peaks at 2.53 GiB on
# 1M x 384 float32 rows of 1.43 GiB, bench/results/mig.md).
PARTITION_BYTES_PER_VALUE = 4 * 3


def partitions_for_memory(n_rows: int, dim: int, memory_limit_gib: float) -> int:
    """The fewest partitions whose selection task stays within `memory_limit_gib` per process (at least 1)."""
    if not memory_limit_gib or memory_limit_gib <= 0:
        raise ConfigError(f"Memory limit must be a positive number of GiB; got {memory_limit_gib!r}.")
    rows = max(1, int(memory_limit_gib * 2**30 // (dim * PARTITION_BYTES_PER_VALUE)))
    return max(1, math.ceil(n_rows / rows))

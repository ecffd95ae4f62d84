"""Embeddings kept as shards: what partitioned selection (issue #13) reads instead of one (N, D) matrix.

shard_sources      the user's sharded `--embeddings`: a folder of .npy files (name order), a glob, or one .npy
import_shard       check one user shard's usable rows; keep the file as it is, or write the usable rows to the cache
assemble_shard     rows [start, stop) of the prepared corpus from the embedding store, as one shard file
ShardedMatrix      read-only rows of the shards by position (`m[rows]`, `m[a:b]`, `.shape`), never all at once
sampled_analysis   the report's analysis clusters: k-means fitted on a seeded sample, every row assigned chunk by chunk

Shard order is row order: the shards, concatenated, are the prepared corpus's usable rows in order. Only
`.npy` files are read (allow_pickle=False, memory-mapped).
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError

NORM_TOLERANCE = 1e-3  # as imported.py
CHECK_CHUNK = 100_000


def is_sharded_source(source: str) -> bool:
    """A folder, a glob pattern, or a .npy file (local, or an object-store URL): sources that partition mode reads
    shard by shard."""
    from ..io import storage

    return any(c in source for c in "*?[") or source.lower().endswith(".npy") or storage.isdir(source)


def shard_sources(source: str) -> list[str]:
    """The .npy files of `source` in row order: a folder's *.npy by name, a glob's matches by name, or the one file.
    On object storage (s3://, gs://) the same, as URLs."""
    from ..io import storage

    if storage.is_remote(source):
        if any(c in source for c in "*?["):
            found = sorted(p for p in storage.glob(source) if p.lower().endswith(".npy"))
        elif storage.isdir(source):
            found = [storage.join(source, name) for name in storage.listdir(source) if name.lower().endswith(".npy")]
        elif storage.exists(source):
            found = [source]
        else:
            raise InputError(f"{storage.redact(source)}: embeddings file not found.")
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            found = sorted(str(p) for p in path.glob("*.npy"))
        elif any(c in source for c in "*?["):
            found = sorted(p for p in glob.glob(str(path)) if p.lower().endswith(".npy"))
        elif path.exists():
            found = [str(path)]
        else:
            raise InputError(f"{path}: embeddings file not found.")
    if not found:
        raise InputError(f"{source}: no .npy embedding shards found (a folder or glob of .npy files, one row per input row, in order).")
    return found


def npy_shape(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the .npy header only (an object-store shard is not downloaded for this)."""
    from ..io import storage

    try:
        if storage.is_remote(path):
            with storage.open_read(path) as fh:
                version = np.lib.format.read_magic(fh)
                header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)
                shape, _, dtype = header(fh)
            if dtype.hasobject:
                raise ValueError("object arrays need pickle")
            return tuple(shape), dtype
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{path}: not a plain numeric .npy array ({exc}); save it with numpy.save from a float array.") from None
    return tuple(array.shape), array.dtype


def import_shard(path: str, *, input_offset: int, usable: np.ndarray, normalize: bool, out_path: str | Path) -> dict:
    """Check the usable rows of one user shard (finite, non-zero, unit norm unless `normalize`).

    `usable` are the shard's usable rows as positions inside the shard (ascending). When every row is usable,
    the file is float16/float32 and no row needs scaling, the user's file is the shard (nothing is copied);
    otherwise the usable rows are written, as float32 unit rows, to `out_path`. Returns {"path", "rows", "dim"}.
    """
    from ..io.atomic import atomic_path

    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.ndim != 2 or array.shape[1] == 0 or not np.issubdtype(array.dtype, np.number):
        raise InputError(f"{path}: embeddings must be a 2-D numeric array (rows, dim); got {array.dtype} {array.shape}.")
    usable = np.asarray(usable, dtype=np.int64)
    keep_file = len(usable) == array.shape[0] and array.dtype in (np.float16, np.float32)
    scaled = False
    for a in range(0, len(usable), CHECK_CHUNK):
        rows = usable[a : a + CHECK_CHUNK]
        block = np.asarray(array[rows], dtype=np.float32)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            bad = input_offset + int(rows[np.flatnonzero(~finite)[0]])
            raise InputError(f"{path}: the embedding of input row {bad} has NaN or infinite values; fix or drop that row.")
        norms = np.linalg.norm(block, axis=1)
        if np.any(norms == 0):
            bad = input_offset + int(rows[np.flatnonzero(norms == 0)[0]])
            raise InputError(f"{path}: the embedding of input row {bad} is all zeros; it has no direction to compare.")
        off = np.abs(norms - 1.0) > NORM_TOLERANCE
        if off.any():
            if not normalize:
                bad = input_offset + int(rows[np.flatnonzero(off)[0]])
                raise InputError(f"{path}: embeddings are not unit-norm (input row {bad} has norm {norms[off][0]:.4g}); "
                                 "pass --normalize-embeddings to scale them to unit length.")
            scaled = True
    dim = int(array.shape[1])
    if keep_file and not scaled:
        return {"path": str(path), "rows": int(len(usable)), "dim": dim}
    with atomic_path(out_path, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(usable), dim))
        for a in range(0, len(usable), CHECK_CHUNK):
            block = np.asarray(array[usable[a : a + CHECK_CHUNK]], dtype=np.float32)
            out[a : a + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
        out.flush()
        del out
    return {"path": str(out_path), "rows": int(len(usable)), "dim": dim}


def assemble_shard(digests: np.ndarray, store, out_path: str | Path) -> tuple[int, np.ndarray]:
    """One shard (float32) of the given texts' stored embeddings; returns (rows, token counts)."""
    from ..io.atomic import atomic_path

    tokens = np.empty(len(digests), dtype=np.int32)
    with atomic_path(out_path, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(digests), store.dim))
        store.gather(digests, out, tokens)
        out.flush()
        del out
    return len(digests), tokens


class ShardedMatrix:
    """Rows of the shards by global position, read on demand (float32); never holds the whole matrix."""

    def __init__(self, paths: Sequence[str]):
        self.paths = [str(p) for p in paths]  # local paths or object-store URLs (copied to scratch when first read)
        shapes = [npy_shape(p)[0] for p in self.paths]
        self.offsets = np.concatenate([[0], np.cumsum([s[0] for s in shapes])]).astype(np.int64)
        self.shape = (int(self.offsets[-1]), int(shapes[0][1]) if shapes else 0)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def _take(self, rows: np.ndarray) -> np.ndarray:
        from ..io.storage import local_copy  # an object-store shard is read from its scratch copy

        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise IndexError(f"row out of range 0..{self.shape[0] - 1}")
        out = np.empty((len(rows), self.shape[1]), dtype=np.float32)
        shard = np.searchsorted(self.offsets, rows, side="right") - 1
        for s in np.unique(shard):
            where = np.flatnonzero(shard == s)
            local = rows[where] - self.offsets[s]
            order = np.argsort(local, kind="stable")  # ascending reads from the memory map
            # A map per read, dropped after it: pages of a map kept open count in this process's resident set
            # (a pass over every row would hold the whole matrix's pages: measured, bench/results/scale.md).
            array = np.load(local_copy(self.paths[s]), mmap_mode="r", allow_pickle=False)
            out[where[order]] = array[local[order]]
            del array
        return out

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self._take(np.arange(*key.indices(self.shape[0])))
        if isinstance(key, (int, np.integer)):
            return self._take(np.array([int(key)]))[0]
        key = np.asarray(key)
        if key.dtype == bool:
            key = np.flatnonzero(key)
        return self._take(key)

    def __array__(self, dtype=None, copy=None):  # pragma: no cover - a guard, not a path
        raise TypeError("ShardedMatrix is never assembled as one array; index rows (m[rows]) instead.")


@dataclass(frozen=True)
class Analysis:
    assignments: np.ndarray


def sampled_analysis(matrix: ShardedMatrix, k: int, *, seed: int, sample_per_cluster: int = 256,
                     chunk_rows: int = 100_000) -> Analysis:
    """k clusters fitted on a seeded sample of min(N, k·256) rows; every row assigned in chunks of `chunk_rows`."""
    from ..planning.partitions import _as_unit32, assign_partitions
    from ..samplers.clustering import kmeans

    n = matrix.shape[0]
    sample = np.sort(np.random.default_rng(seed).choice(n, size=min(n, k * sample_per_cluster), replace=False))
    centroids = _as_unit32(kmeans(_as_unit32(matrix[sample]), k, seed=seed, max_points_per_centroid=sample_per_cluster).centroids)
    out = np.empty(n, dtype=np.int64)
    for a in range(0, n, chunk_rows):
        b = min(n, a + chunk_rows)
        out[a:b] = assign_partitions(_as_unit32(matrix[a:b]), centroids)
    return Analysis(assignments=out)


def open_embeddings(embeddings):
    """The rows of an Embeddings result: its memory-mapped matrix, or a ShardedMatrix over its shards."""
    shards = getattr(embeddings, "shards", None)
    if shards:
        return ShardedMatrix(shards)
    return np.load(embeddings.matrix_path, mmap_mode="r")


def write_shard_list(path: str | Path, shards: list[str], rows: list[int], dim: int) -> Path:
    from ..io.atomic import write_json

    return write_json(path, {"shards": shards, "rows": rows, "dim": dim})


def read_shard_list(path: str | Path) -> dict:
    from ..io.storage import read_text

    return json.loads(read_text(path))

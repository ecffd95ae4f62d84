"""Bring-your-own embeddings: a list-of-floats column of the input, or a .npy array aligned with its rows.

Encoding is skipped entirely. The vectors are checked (shape, row count, finite values, unit norm)
and written as the same (N, D) float32 matrix the encoder path produces, for the usable rows only.
.npy files are read with allow_pickle=False, so loading one never executes code.
"""

from pathlib import Path

import numpy as np
import polars as pl

from ..errors import InputError
from ..io.atomic import atomic_path
from ..io.corpus_reader import scan
from ..io.hashing import config_hash, file_hash
from ..io.results import Embeddings, PreparedCorpus

NORM_TOLERANCE = 1e-3


def is_array_file(source: str) -> bool:
    return source.lower().endswith(".npy")


def import_embeddings(source: str, corpus_path: str, input_rows: np.ndarray, n_read: int, *, matrix_path: str | Path,
                      normalize: bool = False, chunk: int = 100_000) -> int:
    """Write the embeddings of the usable rows (input positions `input_rows`) to `matrix_path`; return the dimension."""
    if is_array_file(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise InputError(f"{path}: embeddings file not found.")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{path}: not a plain numeric .npy array ({exc}); save it with numpy.save from a float array.") from None
        if array.ndim != 2 or array.shape[1] == 0:
            raise InputError(f"{path}: embeddings must be a 2-D array (rows, dim); got shape {array.shape}.")
        if array.shape[0] != n_read:
            raise InputError(f"{path}: has {array.shape[0]} rows but the corpus has {n_read}; it must hold one row per input row, in order.")
        if not np.issubdtype(array.dtype, np.number):
            raise InputError(f"{path}: holds {array.dtype}, not numbers.")
        fetch = lambda rows: np.asarray(array[rows], dtype=np.float32)
        where = str(path)
        dim = int(array.shape[1])
    else:
        lf, _, columns = scan(corpus_path)
        if source not in columns:
            raise InputError(f"{corpus_path}: embeddings column {source!r} does not exist; columns are: {', '.join(columns)}.")
        dtype = lf.collect_schema()[source]
        if not isinstance(dtype, (pl.List, pl.Array)) or not dtype.inner.is_numeric():
            raise InputError(f"{corpus_path}: embeddings column {source!r} holds {dtype}; it must be a list of floats per row.")
        column = lf.select(pl.col(source)).collect()[source]
        lengths = column.list.len() if isinstance(dtype, pl.List) else None
        if lengths is not None:
            if column.null_count():
                bad = int(column.is_null().arg_true()[0])
                raise InputError(f"{corpus_path}: row {bad} has no embedding in column {source!r}.")
            dims = lengths.unique()
            if len(dims) != 1:
                bad = int((lengths != lengths[0]).arg_true()[0])
                raise InputError(
                    f"{corpus_path}: embeddings in column {source!r} have different lengths "
                    f"(row 0 has {lengths[0]}, row {bad} has {lengths[bad]}); every row needs the same dimension."
                )
        values = np.asarray(column.to_numpy() if isinstance(dtype, pl.Array) else np.stack(column.to_numpy()), dtype=np.float32)
        fetch = lambda rows: values[rows]
        where = f"{corpus_path} column {source!r}"
        dim = int(values.shape[1])

    n = len(input_rows)
    with atomic_path(matrix_path, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
        for start in range(0, n, chunk):
            rows = np.asarray(input_rows[start : start + chunk], dtype=np.int64)
            block = fetch(rows)
            finite = np.isfinite(block).all(axis=1)
            if not finite.all():
                bad = int(rows[np.flatnonzero(~finite)[0]])
                raise InputError(f"{where}: the embedding of input row {bad} has NaN or infinite values; fix or drop that row.")
            norms = np.linalg.norm(block, axis=1)
            if np.any(norms == 0):
                bad = int(rows[np.flatnonzero(norms == 0)[0]])
                raise InputError(f"{where}: the embedding of input row {bad} is all zeros; it has no direction to compare.")
            off = np.abs(norms - 1.0) > NORM_TOLERANCE
            if off.any():
                if not normalize:
                    bad = int(rows[np.flatnonzero(off)[0]])
                    raise InputError(
                        f"{where}: embeddings are not unit-norm (input row {bad} has norm {norms[off][0]:.4g}); "
                        "pass --normalize-embeddings to scale them to unit length."
                    )
                block = block / norms[:, None]
            out[start : start + len(block)] = block
        out.flush()
        del out
    return dim


def source_hash(prepared: PreparedCorpus, source: str) -> str:
    """What identifies the vectors: the .npy file's hash, or the input's (for a column of it)."""
    return file_hash(source) if is_array_file(source) else prepared.input_hash


def imported_key(prepared: PreparedCorpus, source: str, hashed: str, normalize: bool) -> str:
    """The cache key of the matrix imported from `source` (whose source_hash is `hashed`) for this prepared corpus."""
    return config_hash({"corpus": prepared.key, "embeddings": source if not is_array_file(source) else "npy",
                        "source_hash": hashed, "normalize": normalize})


def imported_result(*, source: str, hashed: str, key: str, matrix_path: str, n_rows: int, dim: int) -> Embeddings:
    """The Embeddings of an imported matrix: nothing encoded, every row the user's."""
    array = is_array_file(source)
    name = f"user embeddings ({Path(source).name if array else 'column ' + source})"
    return Embeddings(
        matrix_path=matrix_path, n_rows=n_rows, dim=dim, store_dir=None, store_key=None, key=key, encoded=0,
        reused=n_rows, truncated=0, max_seq_length=None, encode_seconds=0.0, texts_per_second=None,
        encoder={"name": name, "path": str(Path(source).resolve()) if array else source,
                 "weights_hash": hashed, "max_seq_length": None, "dim": dim, "device": "none"},
    )

"""Prefect task: use the user's own embeddings instead of encoding (a column of the input or a .npy file)."""

from pathlib import Path

import polars as pl
from prefect import task
from prefect.cache_policies import NONE

from .embedding.imported import import_embeddings, is_array_file
from .io.hashing import config_hash, file_hash
from .io.workspace import Workspace


@task(name="import-embeddings", cache_policy=NONE)
def import_embeddings_task(prepared: dict, source: str, normalize: bool, cache_dir: str) -> dict:
    source_hash = file_hash(source) if is_array_file(source) else prepared["input_hash"]
    key = config_hash({"corpus": prepared["key"], "embeddings": source if not is_array_file(source) else "npy",
                       "source_hash": source_hash, "normalize": normalize})
    matrix = Workspace(cache_dir).matrix_path(key)
    rows = pl.read_parquet(prepared["prepared_path"], columns=["row"])["row"].to_numpy()
    dim = import_embeddings(source, prepared["input_path"], rows, prepared["n_read"], matrix, normalize=normalize)
    name = f"user embeddings ({Path(source).name if is_array_file(source) else 'column ' + source})"
    return {
        "matrix_path": str(matrix), "n_rows": len(rows), "dim": dim, "store_dir": None, "store_key": None, "key": key,
        "encoded": 0, "reused": len(rows), "truncated": 0, "max_seq_length": None, "encode_seconds": 0.0,
        "texts_per_second": None,
        "encoder": {"name": name, "path": str(Path(source).resolve()) if is_array_file(source) else source,
                    "weights_hash": source_hash, "max_seq_length": None, "dim": dim, "device": "none"},
    }

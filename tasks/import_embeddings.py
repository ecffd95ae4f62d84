"""Prefect task: use the user's own embeddings instead of encoding (a column of the input or a .npy file)."""

import polars as pl
from prefect import task
from prefect.cache_policies import NONE

from .embedding.imported import import_embeddings, imported_key, imported_result, source_hash
from .io.results import Embeddings, PreparedCorpus
from .io.workspace import Workspace


@task(name="import-embeddings", cache_policy=NONE)
def import_embeddings_task(prepared: PreparedCorpus, source: str, normalize: bool, cache_dir: str) -> Embeddings:
    hashed = source_hash(prepared, source)
    key = imported_key(prepared, source, hashed, normalize)
    matrix = Workspace(cache_dir).matrix_path(key)
    rows = pl.read_parquet(prepared.prepared_path, columns=["row"])["row"].to_numpy()
    dim = import_embeddings(source, prepared.input_path, rows, prepared.n_read, matrix_path=matrix, normalize=normalize)
    return imported_result(source=source, hashed=hashed, key=key, matrix_path=str(matrix), n_rows=len(rows), dim=dim)

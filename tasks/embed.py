"""Prefect task: embed the prepared corpus through the embedding store, with progress in the UI and CLI."""

import sys

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

from .embedding.embed import embed_prepared, encoding_settings
from .embedding.encoder import load_encoder
from .embedding.store import store_key
from .io.hashing import config_hash
from .io.workspace import Workspace


@task(name="embed", cache_policy=NONE)
def embed_task(prepared: dict, model: str | None, device: str, batch_size: int, cache_dir: str) -> dict:
    logger = get_run_logger()
    ws = Workspace(cache_dir)
    encoder, info = load_encoder(model, device)
    key = config_hash({"corpus": prepared["key"], "store": store_key(info.weights_hash, encoding_settings(info))})
    matrix = ws.matrix_path(key)
    artifact_id = create_progress_artifact(progress=0.0, description=f"Embedding {prepared['n_usable']} texts with {info.name}")
    bar = None
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=0, unit="text", desc="embedding", leave=False, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()
        pct = 100.0 if total == 0 else 100.0 * done / total
        update_progress_artifact(artifact_id, progress=pct)

    try:
        result = embed_prepared(prepared["prepared_path"], encoder, info, ws.store_root, matrix,
                                batch_size=batch_size, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    update_progress_artifact(artifact_id, progress=100.0)
    logger.info("embedded %d rows: %d encoded, %d reused from the store, %d truncated",
                result.n_rows, result.encoded, result.reused, result.truncated)
    return {**result.to_dict(), "key": key, "encoder": info.to_dict()}

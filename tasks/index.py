"""Prefect task: build (or reuse) the FAISS index over the embedding matrix."""

import time

import numpy as np
from prefect import task
from prefect.cache_policies import NONE

from .embedding.faiss_index import build_index, choose_params, gpu_count, index_meta_path, save_index
from .io import storage
from .io.hashing import config_hash
from .io.results import Embeddings, IndexRef
from .io.workspace import Workspace


@task(name="build-index", cache_policy=NONE)
def build_index_task(embedded: Embeddings, kind: str, cache_dir: str, seed: int = 0) -> IndexRef:
    params = choose_params(embedded.n_rows, kind)
    key = config_hash({"matrix": embedded.key, "params": params.to_dict(), "seed": seed})
    path = Workspace(cache_dir).index_path(key)
    reused = storage.exists(path) and storage.exists(index_meta_path(path))
    seconds = 0.0
    if not reused:
        t0 = time.perf_counter()
        index = build_index(np.load(storage.local_copy(embedded.matrix_path), mmap_mode="r"), params, seed=seed)
        seconds = time.perf_counter() - t0
        save_index(index, params, path, extra={"build_seconds": seconds})
    return IndexRef(path=str(path), params=params.to_dict(), key=key, reused=reused, gpu=gpu_count() > 0,
                    build_seconds=seconds)

"""FAISS indexes over the unit-norm embeddings (inner product = cosine similarity).

`auto` picks an exact flat index for small corpora and IVF for large ones; HNSW is available. When
FAISS was installed with GPU support and a GPU is visible, flat and IVF indexes search on the GPU.
Indexes are saved in FAISS's own format (no pickle) beside a JSON file with their parameters.
"""

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import ConfigError
from ..io.atomic import atomic_path, write_json

IndexKind = Literal["auto", "flat", "ivf", "hnsw"]
FLAT_MAX_ROWS = 100_000


@dataclass(frozen=True)
class IndexParams:
    kind: str
    nlist: int | None = None
    nprobe: int | None = None
    hnsw_m: int | None = None
    ef_search: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def choose_params(n_rows: int, kind: IndexKind = "auto") -> IndexParams:
    if kind == "auto":
        kind = "flat" if n_rows <= FLAT_MAX_ROWS else "ivf"
    if kind == "flat":
        return IndexParams("flat")
    if kind == "ivf":
        nlist = int(max(1, min(round(4 * math.sqrt(n_rows)), n_rows // 39 or 1)))
        return IndexParams("ivf", nlist=nlist, nprobe=max(1, min(nlist, 16)))
    if kind == "hnsw":
        return IndexParams("hnsw", hnsw_m=32, ef_search=64)
    raise ConfigError(f"Unknown index kind {kind!r}; choose auto, flat, ivf or hnsw.")


def gpu_count() -> int:
    import faiss

    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def build_index(embeddings: np.ndarray, params: IndexParams, seed: int = 0, chunk: int = 100_000):
    import faiss

    n, d = embeddings.shape
    if params.kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif params.kind == "ivf":
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, params.nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        n_train = min(n, params.nlist * 64)
        train = np.ascontiguousarray(embeddings[np.sort(rng.choice(n, n_train, replace=False))], dtype=np.float32)
        index.cp.seed = int(seed)
        index.train(train)
        index.nprobe = params.nprobe
    else:
        index = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = params.ef_search
    for start in range(0, n, chunk):
        index.add(np.ascontiguousarray(embeddings[start : start + chunk], dtype=np.float32))
    return index


def index_meta_path(path: str | Path) -> Path | str:
    """The JSON file beside an index (<key>.json beside <key>.faiss); a URL string for a remote index."""
    from ..io import storage

    if storage.is_remote(path):
        return str(path).rsplit(".", 1)[0] + ".json"
    return Path(path).with_suffix(".json")


def save_index(index, params: IndexParams, path: str | Path, extra: dict | None = None) -> Path | str:
    import faiss

    from ..io import storage

    path = str(path) if storage.is_remote(path) else Path(path)
    with atomic_path(path, suffix=".faiss") as tmp:
        faiss.write_index(index, str(tmp))
    write_json(index_meta_path(path), {**params.to_dict(), **(extra or {}), "ntotal": int(index.ntotal)})
    return path


def load_index(path: str | Path):
    """The index and its JSON; a remote index is read from a local copy (storage.local_copy)."""
    import faiss

    from ..io import storage

    index = faiss.read_index(str(storage.local_copy(path)))
    meta = json.loads(storage.read_text(index_meta_path(path)))
    if meta.get("nprobe") and hasattr(index, "nprobe"):
        index.nprobe = meta["nprobe"]
    return index, meta


def searcher(index):
    """A knn(queries, k) -> (similarities, rows) function, on the GPU when FAISS can use one."""
    import faiss

    if gpu_count() > 0 and not isinstance(index, faiss.IndexHNSWFlat):
        index = faiss.index_cpu_to_all_gpus(index)

    def knn(queries: np.ndarray, k: int):
        sims, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), int(k))
        return sims, rows

    return knn

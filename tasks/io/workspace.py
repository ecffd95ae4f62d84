"""Where intermediate results live: a cache folder addressed by content and configuration hashes.

  <cache>/corpus/<key>/      prepared.parquet, excluded.parquet, corpus.json
  <cache>/store/<key>/       the embedding store (see embedding/store.py)
  <cache>/matrix/<key>.npy   the (N, D) embedding matrix of one prepared corpus under one encoder
  <cache>/index/<key>.faiss  a FAISS index over one matrix, with <key>.json beside it
  <cache>/selection/<key>/   one sampler run: selection.npz, selection.json
An entry's key is the hash of everything it depends on, so a changed input or option gets a new
entry, and re-running with the same ones reuses what is there.
"""

import os
from pathlib import Path


def default_cache_dir() -> Path:
    env = os.environ.get("SELECTFLOW_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "selectflow"


class Workspace:
    def __init__(self, cache_dir: str | Path | None = None):
        self.root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.root.mkdir(parents=True, exist_ok=True)

    def corpus_dir(self, key: str) -> Path:
        return self.root / "corpus" / key

    @property
    def store_root(self) -> Path:
        return self.root / "store"

    def matrix_path(self, key: str) -> Path:
        return self.root / "matrix" / f"{key}.npy"

    def index_path(self, key: str) -> Path:
        return self.root / "index" / f"{key}.faiss"

    def selection_dir(self, key: str) -> Path:
        return self.root / "selection" / key

"""Where intermediate results live: a cache folder addressed by content and configuration hashes.

  <cache>/corpus/<key>/      prepared.parquet, excluded.parquet, corpus.json
  <cache>/store/<key>/       the embedding store (see embedding/store.py)
  <cache>/matrix/<key>.npy   the (N, D) embedding matrix of one prepared corpus under one encoder
  <cache>/index/<key>.faiss  a FAISS index over one matrix, with <key>.json beside it
  <cache>/selection/<key>/   one sampler run: selection.npz, selection.json
An entry's key is the hash of everything it depends on, so a changed input or option gets a new
entry, and re-running with the same ones reuses what is there.

The cache may be an object-store URL (s3://bucket/prefix, gs://...): `root` and every path below are then
URL strings (storage.join), written through storage.atomic_write and read through storage.local_copy, so
workers on other machines share it. A bare path or file:// URL is the local folder, as a Path.
"""

import os
from pathlib import Path

from . import storage


def default_cache_dir() -> Path:
    env = os.environ.get("SELECTFLOW_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "selectflow"


class Workspace:
    def __init__(self, cache_dir: str | Path | None = None):
        if not cache_dir and storage.is_remote(os.environ.get("SELECTFLOW_CACHE", "")):
            cache_dir = os.environ["SELECTFLOW_CACHE"]  # $SELECTFLOW_CACHE may name a remote cache too
        self.remote = bool(cache_dir) and storage.is_remote(cache_dir)
        if self.remote:
            self.root = str(cache_dir).rstrip("/")  # a URL: the paths below are URL strings
            storage.makedirs(self.root)  # checks the URL and its backend before any work
        else:
            self.root = storage.local_path(cache_dir) if cache_dir else default_cache_dir()
            self.root.mkdir(parents=True, exist_ok=True)

    def path(self, *parts: str) -> Path | str:
        """A path under the cache: a Path for a local cache, a URL string for a remote one."""
        return storage.join(self.root, *parts) if self.remote else self.root.joinpath(*parts)

    @property
    def local_root(self) -> Path:
        """A local folder for what stays on this machine (ONNX exports): the cache itself, or for a remote
        cache a folder in the scratch space (storage.default_scratch)."""
        if not self.remote:
            return self.root
        import hashlib

        return storage.default_scratch() / "cache" / hashlib.sha256(self.root.encode()).hexdigest()[:16]

    def corpus_dir(self, key: str) -> Path | str:
        return self.path("corpus", key)

    @property
    def store_root(self) -> Path | str:
        return self.path("store")

    def matrix_path(self, key: str) -> Path | str:
        return self.path("matrix", f"{key}.npy")

    def index_path(self, key: str) -> Path | str:
        return self.path("index", f"{key}.faiss")

    def selection_dir(self, key: str) -> Path | str:
        return self.path("selection", key)

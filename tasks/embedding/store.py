"""The embedding store: embeddings on disk, keyed by text hash, model identity and encoding settings.

Layout under the store root:
  <key>/meta.json                   the encoder and settings this key stands for
  <key>/shard-<name>.hashes.npy      (m,) 16-byte text digests
  <key>/shard-<name>.emb.npy         (m, D) float32 unit-norm embeddings
  <key>/shard-<name>.tokens.npy      (m,) int32 token counts after truncation (max_seq_length: truncated)
A shard is named by the hash of its digests, so workers on several machines can add shards to one
store without coordinating. Its three files are each written atomically, the hashes file last, so a
shard counts only once it is complete: a run killed mid-way resumes from the shards already on disk
and re-encodes only what is missing. Identical texts are encoded once.

The root may be an object-store URL (a remote cache, io/workspace.py): shards are then published with
storage.atomic_write (the hashes file last, as on disk) and read from local copies (storage.local_copy),
so workers on several machines add to, and read from, one store.
"""

import hashlib
import re
from pathlib import Path
import numpy as np

from ..io import storage
from ..io.atomic import write_json, write_npy
from ..io.hashing import config_hash

_SHARD = re.compile(r"shard-([0-9a-f]+)\.hashes\.npy$")


def store_key(weights_hash: str, settings: dict) -> str:
    return config_hash({"weights": weights_hash, **settings})


class EmbeddingStore:
    def __init__(self, root: str | Path, key: str, dim: int, meta: dict | None = None):
        self.remote = storage.is_remote(root)
        self.dir = storage.join(root, key) if self.remote else Path(root) / key
        if not self.remote:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        meta_path = self.file("meta.json")
        if meta is not None and not storage.exists(meta_path):
            write_json(meta_path, {**meta, "dim": dim})
        self._index: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def key(self) -> str:
        return storage.name(self.dir)

    def file(self, name: str) -> Path | str:
        """A file of the store: a Path, or a URL string for a remote store."""
        return storage.join(self.dir, name) if self.remote else self.dir / name

    def _load(self, path, **kwargs) -> np.ndarray:
        return np.load(storage.local_copy(path) if self.remote else path, allow_pickle=False, **kwargs)

    def shards(self) -> list[str]:
        if self.remote:
            names = set(storage.listdir(self.dir))
            return sorted(m.group(1) for m in map(_SHARD.search, names)
                          if m and f"shard-{m.group(1)}.emb.npy" in names)
        found = []
        for p in self.dir.iterdir():
            m = _SHARD.search(p.name)
            if m and (self.dir / f"shard-{m.group(1)}.emb.npy").exists():
                found.append(m.group(1))
        return sorted(found)

    def _path(self, shard: str, kind: str) -> Path | str:
        return self.file(f"shard-{shard}.{kind}.npy")

    def _load_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sorted digests of everything stored, with the shard and offset of each."""
        if self._index is None:
            hashes, shard_ids, offsets = [], [], []
            self._names = self.shards()
            for i, s in enumerate(self._names):
                h = self._load(self._path(s, "hashes"))
                hashes.append(h)
                shard_ids.append(np.full(len(h), i, dtype=np.int64))
                offsets.append(np.arange(len(h), dtype=np.int64))
            if hashes:
                h, sid, off = np.concatenate(hashes), np.concatenate(shard_ids), np.concatenate(offsets)
            else:
                h, sid, off = np.empty(0, "S16"), np.empty(0, np.int64), np.empty(0, np.int64)
            order = np.argsort(h, kind="stable")
            self._index = (h[order], sid[order], off[order])
        return self._index

    def locate(self, digests: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each digest: found?, shard, offset."""
        h, sid, off = self._load_index()
        if len(h) == 0:
            z = np.zeros(len(digests), dtype=np.int64)
            return np.zeros(len(digests), dtype=bool), z, z
        pos = np.searchsorted(h, digests)
        pos_c = np.minimum(pos, len(h) - 1)
        found = h[pos_c] == digests
        return found, sid[pos_c], off[pos_c]

    def missing(self, digests: np.ndarray) -> np.ndarray:
        """Positions of the digests that have no stored embedding."""
        found, _, _ = self.locate(digests)
        return np.flatnonzero(~found)

    def add_shard(self, digests: np.ndarray, embeddings: np.ndarray, token_counts: np.ndarray) -> str:
        digests = np.asarray(digests, dtype="S16")
        shard = hashlib.blake2b(digests.tobytes(), digest_size=10).hexdigest()
        write_npy(self._path(shard, "emb"), np.ascontiguousarray(embeddings, dtype=np.float32))
        write_npy(self._path(shard, "tokens"), np.asarray(token_counts, dtype=np.int32))
        write_npy(self._path(shard, "hashes"), np.asarray(digests, dtype="S16"))  # last: marks the shard complete
        self._index = None
        return shard

    def gather(self, digests: np.ndarray, out: np.ndarray, tokens_out: np.ndarray | None = None) -> None:
        """Fill out[i] with the stored embedding of digests[i] (all must be stored)."""
        found, sid, off = self.locate(digests)
        if not found.all():
            raise KeyError(f"{int((~found).sum())} texts have no stored embedding")
        for s in np.unique(sid):
            rows = np.flatnonzero(sid == s)
            name = self._names[int(s)]
            emb = self._load(self._path(name, "emb"), mmap_mode="r")
            out[rows] = emb[off[rows]]
            if tokens_out is not None:
                tok = self._load(self._path(name, "tokens"))
                tokens_out[rows] = tok[off[rows]]

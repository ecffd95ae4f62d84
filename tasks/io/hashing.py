"""Content hashes: the identity of inputs, models and intermediate results."""

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

CHUNK = 1 << 20


def file_hash(path: str | Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def files_hash(paths: Iterable[str | Path]) -> str:
    """Hash of several files' contents and names (order-independent over the sorted names)."""
    h = hashlib.blake2b(digest_size=16)
    for p in sorted(Path(p) for p in paths):
        h.update(p.name.encode())
        h.update(file_hash(p).encode())
    return h.hexdigest()


def config_hash(obj: Any) -> str:
    """Hash of a JSON-serialisable configuration (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def text_digest(text: str) -> bytes:
    """16-byte digest of a text: the key of its embedding in the store."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()

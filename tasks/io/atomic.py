"""Atomic writes: a file appears at its final path complete, or not at all.

Every output is written to a temporary name in the same folder and renamed into place
(os.replace is atomic on POSIX), so a crash or `kill -9` never leaves a half-written file
where a user or a later stage would read it.
"""

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(final: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success it is fsynced and renamed to `final`.

    `final` may be an object-store URL (s3://, gs://): the temporary is then a local file, published
    atomically by storage.atomic_write (temporary key, copy, delete) when the block succeeds.
    """
    from . import storage

    if storage.is_remote(final):
        with storage.atomic_write(final, suffix=suffix) as tmp:
            yield tmp
        return
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def written(final: str | Path) -> Path | str:
    """What the writers return: the Path of a local file, the URL itself (a str) of a remote object."""
    from .storage import is_remote

    return str(final) if is_remote(final) else Path(final)


def write_bytes(final: str | Path, data: bytes) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return written(final)


def write_text(final: str | Path, text: str) -> Path:
    return write_bytes(final, text.encode("utf-8"))


def write_json(final: str | Path, obj: Any) -> Path:
    return write_text(final, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_npy(final: str | Path, array) -> Path:
    import numpy as np

    with atomic_path(final, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
    return written(final)

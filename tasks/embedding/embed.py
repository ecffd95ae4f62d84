"""Embedding a prepared corpus through the store: encode only what is new, then assemble the matrix."""

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.parquet as pq

from ..errors import InputError
from ..io.atomic import atomic_path
from .encoder import EncoderInfo
from .store import EmbeddingStore, store_key

WINDOW_ROWS = 50_000  # texts held in memory at once while encoding (sorted by length inside a window)

Progress = Callable[[int, int], None]


@dataclass
class EmbeddingResult:
    matrix_path: str
    n_rows: int
    dim: int
    store_dir: str
    store_key: str
    encoded: int  # texts encoded in this run
    reused: int  # rows whose embedding came from the store
    truncated: int  # rows longer than the encoder's max_seq_length
    max_seq_length: int
    encode_seconds: float
    texts_per_second: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def encoding_settings(info: EncoderInfo, precision: str = "float32") -> dict:
    # Batch size and device do not change the vectors (beyond float noise), so they are not part of the key.
    return {"max_seq_length": info.max_seq_length, "normalize": True, "precision": precision}


def read_digests(prepared_path: str | Path) -> np.ndarray:
    col = pq.read_table(prepared_path, columns=["text_hash"]).column("text_hash")
    return np.array(col.to_pylist(), dtype="S16")


def embed_prepared(
    prepared_path: str | Path,
    model,
    info: EncoderInfo,
    store_root: str | Path,
    matrix_path: str | Path,
    batch_size: int = 64,
    shard_rows: int = 2048,
    progress: Progress | None = None,
) -> EmbeddingResult:
    """Make sure every text of the prepared corpus has a stored embedding, then write the (N, D) matrix."""
    settings = encoding_settings(info)
    key = store_key(info.weights_hash, settings)
    store = EmbeddingStore(store_root, key, info.dim, meta={"encoder": info.to_dict(), "settings": settings})
    digests = read_digests(prepared_path)
    n = len(digests)
    unique = np.unique(digests)
    todo_digests = unique[store.missing(unique)]
    todo = set(todo_digests.tolist())
    total = len(todo)
    done = 0
    if progress:
        progress(0, total)
    t0 = time.perf_counter()
    if todo:
        tokenizer = model.tokenizer
        _quiet_transformers()
        window_texts: list[str] = []
        window_digests: list[bytes] = []
        pending = set(todo)

        def flush():
            nonlocal done
            if not window_texts:
                return
            lengths = np.array([len(ids) for ids in tokenizer(window_texts, add_special_tokens=True, truncation=False,
                                                              return_attention_mask=False,
                                                              return_token_type_ids=False)["input_ids"]], dtype=np.int32)
            order = np.argsort(-lengths, kind="stable")  # long first: similar lengths share batches, less padding
            for start in range(0, len(order), shard_rows):
                part = order[start : start + shard_rows]
                emb = model.encode([window_texts[i] for i in part], batch_size=batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=False)
                emb = np.asarray(emb, dtype=np.float32)
                bad = ~np.isfinite(emb).all(axis=1)
                if bad.any():
                    raise InputError(
                        f"The encoder {info.path} produced NaN or infinite embeddings for {int(bad.sum())} texts; "
                        "check the model folder (a broken or fp16-overflowing model)."
                    )
                store.add_shard(np.array([window_digests[i] for i in part], dtype="S16"), emb, lengths[part])
                done += len(part)
                if progress:
                    progress(done, total)
            window_texts.clear()
            window_digests.clear()

        pf = pq.ParquetFile(prepared_path)
        for batch in pf.iter_batches(batch_size=8192, columns=["text_hash", "text"]):
            # Through numpy's S16, as the todo set was built (it drops trailing NUL bytes of a digest).
            batch_digests = np.array(batch.column("text_hash").to_pylist(), dtype="S16").tolist()
            for d, text in zip(batch_digests, batch.column("text").to_pylist()):
                if d in pending:
                    pending.discard(d)
                    window_digests.append(d)
                    window_texts.append(text)
            if len(window_texts) >= WINDOW_ROWS:
                flush()
        flush()
    encode_seconds = time.perf_counter() - t0

    matrix_path = Path(matrix_path)
    tokens = np.empty(n, dtype=np.int32)
    with atomic_path(matrix_path, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, info.dim))
        store.gather(digests, out, tokens)
        out.flush()
        del out
    return EmbeddingResult(
        matrix_path=str(matrix_path), n_rows=n, dim=info.dim, store_dir=str(store.dir), store_key=key,
        encoded=total, reused=n - int(np.isin(digests, todo_digests).sum()),
        truncated=int((tokens > info.max_seq_length).sum()), max_seq_length=info.max_seq_length,
        encode_seconds=encode_seconds, texts_per_second=(total / encode_seconds) if total and encode_seconds > 0 else None,
    )


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except Exception:  # pragma: no cover - logging tweaks are best-effort
        pass

"""Embedding a prepared corpus through the store: encode only what is new, then assemble the matrix."""

import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from ..errors import InputError
from ..io import storage
from ..io.atomic import atomic_path
from ..io.results import Embeddings
from .encoder import EncoderInfo
from .store import EmbeddingStore, store_key

WINDOW_ROWS = 50_000  # texts held in memory at once while encoding (sorted by length inside a window)

Progress = Callable[[int, int], None]


class EmbeddingPlan(BaseModel):
    """The units of work of one embedding pass: files of corpus positions to encode, one device each."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str  # the matrix's cache key
    units: list[str]  # .npy files of positions
    offsets: list[int]  # texts to encode before each unit (for the progress)
    total: int  # texts to encode in all
    devices: list[str]
    artifact_id: str  # the Prefect progress artifact
    encoder: dict  # EncoderInfo.to_dict()


def embeddings_result(*, matrix_path: str | Path, n_rows: int, info: EncoderInfo, store: EmbeddingStore, encoded: int,
                      reused: int, truncated: int, encode_seconds: float) -> Embeddings:
    """The Embeddings of a matrix assembled from the store (its key is the matrix file's name, as in the cache)."""
    return Embeddings(
        matrix_path=str(matrix_path), n_rows=n_rows, dim=info.dim, store_dir=str(store.dir), store_key=store.key,
        key=storage.name(matrix_path).rsplit(".", 1)[0], encoded=encoded, reused=reused, truncated=truncated,
        max_seq_length=info.max_seq_length, encode_seconds=encode_seconds,
        texts_per_second=(encoded / encode_seconds) if encoded and encode_seconds > 0 else None, encoder=info.to_dict(),
    )


def encoding_settings(info: EncoderInfo, precision: str = "float32") -> dict:
    # Batch size and device do not change the vectors (beyond float noise), so they are not part of the key.
    # The backend and its export do: stored vectors of torch, ONNX and int8 runs never mix.
    return {"max_seq_length": info.max_seq_length, "normalize": True, "precision": precision,
            "backend": info.backend, "backend_hash": info.backend_hash}


def read_digests(prepared_path: str | Path) -> np.ndarray:
    col = pq.read_table(storage.local_copy(prepared_path), columns=["text_hash"]).column("text_hash")
    return np.array(col.to_pylist(), dtype="S16")


def open_store(store_root: str | Path, info: EncoderInfo) -> EmbeddingStore:
    settings = encoding_settings(info)
    return EmbeddingStore(store_root, store_key(info.weights_hash, settings), info.dim,
                          meta={"encoder": info.to_dict(), "settings": settings})


def plan_units(prepared_path: str | Path, store: EmbeddingStore, unit_rows: int = 50_000) -> list[np.ndarray]:
    """Positions of the texts to encode, split into units of work (one task each).

    Each missing text is assigned once, at its first position, so duplicate texts are encoded once and
    the units (hence the encoded vectors) do not depend on which runner executes them.
    """
    digests = read_digests(prepared_path)
    unique, first = np.unique(digests, return_index=True)
    positions = np.sort(first[store.missing(unique)])
    return [positions[i : i + unit_rows] for i in range(0, len(positions), unit_rows)]


CPU_BATCH_TOKENS = 1024  # padded tokens per batch on the CPU (bench/results/onnx.md: best between 512 and 2048)


def default_batch_tokens(device: str) -> int | None:
    """Token budget per batch: bounded on the CPU, where smaller batches keep attention in cache; none on a GPU."""
    return None if str(device).startswith("cuda") else CPU_BATCH_TOKENS


def token_batches(lengths: np.ndarray, batch_size: int, batch_tokens: int | None) -> list[np.ndarray]:
    """Split rows into batches of similar token length: at most `batch_size` rows and, when given, at most
    `batch_tokens` padded tokens (rows x longest row) per batch; a row longer than the budget goes alone.

    Rows are taken longest first (stable), so padding is what the sort by exact token count leaves:
    about 4% on the bundled corpus, against about a third when batches of 64 follow character length.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)  # the first row of a batch is its longest
        rows = batch_size if batch_tokens is None else max(1, min(batch_size, batch_tokens // longest))
        batches.append(order[start : start + rows])
        start += rows
    return batches


def encode_texts(model, texts: list[str], batch_size: int,
                 batch_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm embeddings and token counts (after truncation) of `texts`, in the order given.

    The same computation as SentenceTransformer.encode (tokenize, forward, pool, normalise), but the
    texts are tokenized once, all together, and batched by their exact token counts (`token_batches`),
    each batch cut to its own longest row: the model sees almost no padding. A GPU out-of-memory error
    halves the batch size (and token budget) and retries instead of failing the run.
    """
    import torch

    dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else model.get_sentence_embedding_dimension()
    out = np.empty((len(texts), dim), dtype=np.float32)
    if not texts:
        return out, np.empty(0, dtype=np.int32)
    # sentence-transformers >= 5 calls tokenization `preprocess` (and deprecates `tokenize`).
    tokenize = getattr(model, "preprocess", None) or model.tokenize
    features = tokenize(texts)
    lengths = features["attention_mask"].sum(dim=1).numpy().astype(np.int32)
    left_padded = getattr(model.tokenizer, "padding_side", "right") == "left"
    pending = token_batches(lengths, batch_size, batch_tokens)
    with torch.inference_mode():
        while pending:
            rows = pending[0]
            width = int(lengths[rows].max())
            cols = slice(features["attention_mask"].shape[1] - width, None) if left_padded else slice(0, width)
            index = torch.from_numpy(rows)
            batch = {}
            for key, value in features.items():
                if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == len(texts):
                    value = value[index][:, cols] if value.dim() == 2 else value[index]
                    value = value.to(model.device)
                batch[key] = value
            try:
                emb = torch.nn.functional.normalize(model.forward(batch)["sentence_embedding"].float(), p=2, dim=1)
            except Exception as exc:  # torch.cuda.OutOfMemoryError
                if type(exc).__name__ != "OutOfMemoryError" or len(rows) == 1:
                    raise
                torch.cuda.empty_cache()
                batch_size = max(1, len(rows) // 2)
                batch_tokens = None if batch_tokens is None else max(1, batch_tokens // 2)
                rest = np.concatenate(pending)  # the rows not encoded yet, in smaller batches
                pending = [rest[b] for b in token_batches(lengths[rest], batch_size, batch_tokens)]
                continue
            out[rows] = emb.cpu().numpy()
            pending.pop(0)
    return out, lengths


def encode_positions(
    prepared_path: str | Path,
    positions: np.ndarray,
    model,
    info: EncoderInfo,
    *,
    store: EmbeddingStore,
    batch_size: int = 64,
    shard_rows: int = 2048,
    progress: Progress | None = None,
    batch_tokens: int | None = None,
) -> int:
    """Encode the texts at `positions` of the prepared corpus into store shards; returns how many were encoded.

    Texts are read in windows (never the whole column), sorted by length inside a window so that batches
    hold similar lengths (less padding), and written in shards of `shard_rows`: a killed run keeps every
    shard it finished. Positions whose text reached the store meanwhile (another worker, an earlier try)
    are skipped.
    """
    wanted = np.asarray(positions, dtype=np.int64)
    if len(wanted) == 0:
        return 0
    if batch_tokens is None:
        batch_tokens = default_batch_tokens(info.device)
    _quiet_transformers()
    done = 0
    window_texts: list[str] = []
    window_digests: list[bytes] = []

    def flush():
        nonlocal done
        if not window_texts:
            return
        digests = np.array(window_digests, dtype="S16")
        keep = store.missing(digests)  # resume: skip what a finished shard already holds
        texts = [window_texts[i] for i in keep]
        digests = digests[keep]
        if texts:
            chars = np.array([len(t) for t in texts], dtype=np.int64)
            order = np.argsort(-chars, kind="stable")  # long first: similar lengths share batches, less padding
            for start in range(0, len(order), shard_rows):
                part = order[start : start + shard_rows]
                emb, lengths = encode_texts(model, [texts[i] for i in part], batch_size, batch_tokens)
                bad = ~np.isfinite(emb).all(axis=1)
                if bad.any():
                    raise InputError(
                        f"The encoder {info.path} produced NaN or infinite embeddings for {int(bad.sum())} texts; "
                        "check the model folder (a broken or fp16-overflowing model)."
                    )
                store.add_shard(digests[part], emb, lengths)
                done += len(part)
                if progress:
                    progress(done, len(wanted))
        window_texts.clear()
        window_digests.clear()

    pf = pq.ParquetFile(storage.local_copy(prepared_path))
    offset = 0
    for batch in pf.iter_batches(batch_size=8192, columns=["text_hash", "text"]):
        lo, hi = np.searchsorted(wanted, [offset, offset + batch.num_rows])
        if hi > lo:
            local = (wanted[lo:hi] - offset).tolist()
            hashes = batch.column("text_hash").take(local).to_pylist()
            texts = batch.column("text").take(local).to_pylist()
            window_digests.extend(hashes)
            window_texts.extend(texts)
        offset += batch.num_rows
        if len(window_texts) >= WINDOW_ROWS:
            flush()
    flush()
    return done


def assemble_matrix(prepared_path: str | Path, store: EmbeddingStore, matrix_path: str | Path) -> tuple[int, int]:
    """Write the (N, D) float32 matrix in corpus order from the store; returns (rows, truncated texts)."""
    digests = read_digests(prepared_path)
    tokens = np.empty(len(digests), dtype=np.int32)
    with atomic_path(matrix_path, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(digests), store.dim))
        store.gather(digests, out, tokens)
        out.flush()
        del out
    max_len = None
    meta = store.file("meta.json")
    if storage.exists(meta):
        import json

        max_len = json.loads(storage.read_text(meta))["settings"]["max_seq_length"]
    # Token counts are taken after truncation: a text that fills the whole window was cut (or fits exactly).
    return len(digests), int((tokens >= max_len).sum()) if max_len else 0


def embed_prepared(
    prepared_path: str | Path,
    model,
    info: EncoderInfo,
    *,
    store_root: str | Path,
    matrix_path: str | Path,
    batch_size: int = 64,
    shard_rows: int = 2048,
    progress: Progress | None = None,
    batch_tokens: int | None = None,
) -> Embeddings:
    """Plan, encode and assemble in this process: every text gets a stored embedding, then the matrix is written."""
    store = open_store(store_root, info)
    units = plan_units(prepared_path, store)
    total = int(sum(len(u) for u in units))
    if progress:
        progress(0, total)
    t0 = time.perf_counter()
    encoded = 0
    for unit in units:
        base = encoded
        encoded += encode_positions(prepared_path, unit, model, info, store=store, batch_size=batch_size, shard_rows=shard_rows,
                                    progress=(lambda d, _t, b=base: progress(b + d, total)) if progress else None,
                                    batch_tokens=batch_tokens)
    encode_seconds = time.perf_counter() - t0
    n, truncated = assemble_matrix(prepared_path, store, matrix_path)
    return embeddings_result(matrix_path=matrix_path, n_rows=n, info=info, store=store, encoded=encoded,
                             reused=n - _rows_with_digests_of(prepared_path, units), truncated=truncated,
                             encode_seconds=encode_seconds)


def _rows_with_digests_of(prepared_path: str | Path, units: list[np.ndarray]) -> int:
    """Rows whose text was encoded in this run (duplicates of an encoded text included)."""
    if not units:
        return 0
    digests = read_digests(prepared_path)
    encoded = digests[np.concatenate(units)]
    return int(np.isin(digests, encoded).sum())


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except Exception:  # pragma: no cover - logging tweaks are best-effort
        pass


def export_embeddings(prepared_path: str | Path, matrix_path: str | Path, out_path: str | Path, *,
                      id_column: str = "id", metadata: dict | None = None, chunk: int = 65_536) -> int:
    """Write the ids of the prepared rows beside their embeddings as Parquet (atomically); returns the row count.

    The `embedding` column is a fixed-size list of float32, the type polars reads as Array(Float32, D)
    and `--embeddings COL` accepts; rows stay in corpus order. `metadata` goes into the file's schema.
    """
    import json

    import pyarrow as pa

    out_path = Path(out_path)
    if out_path.suffix.lower() != ".parquet":
        raise InputError(f"--export {out_path}: the embeddings file must end in .parquet.")
    matrix = np.load(matrix_path, mmap_mode="r", allow_pickle=False)
    ids = pq.read_table(prepared_path, columns=["id"]).column("id")
    if len(ids) != matrix.shape[0]:
        raise InputError(f"{matrix_path}: has {matrix.shape[0]} rows but the prepared corpus has {len(ids)}; run embed again.")
    dim = int(matrix.shape[1])
    schema = pa.schema([(id_column, pa.string()), ("embedding", pa.list_(pa.float32(), dim))],
                       metadata={"selectflow": json.dumps(metadata or {}, sort_keys=True, default=str)})
    with atomic_path(out_path, suffix=".parquet") as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for start in range(0, len(ids), chunk):
                block = np.ascontiguousarray(matrix[start : start + chunk], dtype=np.float32)
                vectors = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), dim)
                writer.write_table(pa.Table.from_arrays([ids.slice(start, len(block)).cast(pa.string()), vectors], schema=schema))
    return len(ids)

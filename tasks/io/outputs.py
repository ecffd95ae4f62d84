"""Output-folder primitives: the guard against mixing runs, the run marker, atomic Parquet/JSONL/HF writers and the
provenance columns. What a select run writes, in which order, is reporting/run_folder.py."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ..errors import ConfigError
from .atomic import atomic_path


@dataclass(frozen=True)
class OutputKind:
    """What an output folder holds, for check_output_dir: the JSON file that records the key of the outputs in
    it (written last), the field holding that key, and the noun naming such outputs in the refusal."""

    noun: str
    record: str
    key_field: str
    files: tuple[str, ...] | None = None  # when given, a folder holding any other file is refused
    marker: str | None = None  # a file naming the key of an interrupted write, read when `record` is missing


RUN_MARKER = ".selectflow-run"
RUN_OUTPUT = OutputKind(noun="run", record="manifest.json", key_field="run_key", marker=RUN_MARKER)


def _recorded_key(out: Path, kind: OutputKind) -> str | None:
    """The key of the outputs the folder holds, or None when nothing readable records one."""
    record = out / kind.record
    if record.exists():
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            return None
        return data.get(kind.key_field) if isinstance(data, dict) else None
    if kind.marker and (out / kind.marker).exists():
        return (out / kind.marker).read_text().strip()  # outputs of this configuration that were interrupted
    return None


def check_output_dir(out_dir: str | Path, key: str, overwrite: bool, kind: OutputKind = RUN_OUTPUT) -> Path:
    """Refuse to mix outputs: a folder holding other files, or the outputs of another key (another run,
    evaluation or comparison, as `kind` says), is only replaced with overwrite=True.

    A folder holding the outputs of the same configuration (same key) is refreshed in place. Returns the
    folder (created when missing); an object-store URL (s3://...) is checked through storage and returned as it is.
    """
    from . import storage

    if storage.is_remote(out_dir):
        return _check_remote_output(str(out_dir).rstrip("/"), key, overwrite, kind)
    out = storage.local_path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"Output path {out} is a file; pass a folder with --out.")
    if out.exists() and not overwrite and any(out.iterdir()):
        previous = _recorded_key(out, kind)
        foreign = kind.files is not None and any(p.name not in kind.files for p in out.iterdir())
        if foreign or previous != key:
            raise ConfigError(
                f"Output folder {out} already holds {f'another {kind.noun}' if previous else 'other files'}; "
                "pass --overwrite to replace it, or choose another --out."
            )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _check_remote_output(out: str, key: str, overwrite: bool, kind: OutputKind) -> str:
    """check_output_dir for a prefix on an object store (outputs are staged locally, then published manifest last)."""
    import json

    from . import storage

    names = storage.listdir(out)
    if names and not overwrite:
        previous = None
        if kind.record in names:
            try:
                data = json.loads(storage.read_text(storage.join(out, kind.record)))
                previous = data.get(kind.key_field) if isinstance(data, dict) else None
            except (OSError, ValueError):
                previous = None
        elif kind.marker and kind.marker in names:
            previous = storage.read_text(storage.join(out, kind.marker)).strip()
        foreign = kind.files is not None and any(n not in kind.files for n in names)
        if foreign or previous != key:
            raise ConfigError(
                f"Output folder {out} already holds {f'another {kind.noun}' if previous else 'other files'}; "
                "pass --overwrite to replace it, or choose another --out."
            )
    return out


def begin_outputs(out_dir: str | Path, run_key: str) -> None:
    """Mark the folder as being written by `run_key` and retire the old manifest before any output is replaced.

    A folder whose manifest.json is missing is an incomplete run: a crash half-way through never leaves the
    old manifest describing a mix of old and new files. The marker lets a re-run of the same configuration
    resume in place instead of being refused.
    """
    from .atomic import write_text

    out = Path(out_dir)
    write_text(out / RUN_MARKER, run_key)
    (out / "manifest.json").unlink(missing_ok=True)
    for stale in out.glob(".*.tmp*"):  # temporary files of an interrupted run (atomic_path's names)
        if stale.is_file():
            stale.unlink()


def write_parquet(df: pl.DataFrame, final: str | Path) -> Path:
    with atomic_path(final, suffix=".parquet") as tmp:
        df.write_parquet(tmp, compression="zstd")
    return Path(final)


def write_jsonl(df: pl.DataFrame, final: str | Path) -> Path:
    with atomic_path(final, suffix=".jsonl") as tmp:
        df.write_ndjson(tmp)
    return Path(final)


def write_hf_dataset(df: pl.DataFrame, folder: str | Path) -> Path:
    """A folder that `datasets.load_from_disk` opens: one Arrow stream file plus its JSON metadata.

    Written without the `datasets` library (its on-disk format is an Arrow IPC stream, `state.json`
    naming the files, and `dataset_info.json`); built in a temporary folder and renamed into place.
    """
    import hashlib
    import json
    import shutil
    import tempfile

    import pyarrow as pa

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        table = df.to_arrow()
        name = "data-00000-of-00001.arrow"
        with pa.OSFile(str(tmp / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        fingerprint = hashlib.blake2b((tmp / name).read_bytes(), digest_size=8).hexdigest()
        (tmp / "state.json").write_text(json.dumps({
            "_data_files": [{"filename": name}], "_fingerprint": fingerprint, "_format_columns": None,
            "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False, "_split": None}, indent=2))
        (tmp / "dataset_info.json").write_text(json.dumps({
            "description": "Rows selected by selectflow, with provenance columns (sf_*).", "citation": "",
            "homepage": "", "license": "", "features": None}, indent=2))
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def provenance_frame(
    *, ids: list[str], rows: np.ndarray, sampler: str, scores: np.ndarray, weights: np.ndarray,
    clusters: np.ndarray, nearest_pos: np.ndarray, nearest_sim: np.ndarray,
) -> pl.DataFrame:
    """Provenance columns, one row per selected row, in rank order."""
    nearest_ids = [ids[int(rows[p])] if p >= 0 else None for p in nearest_pos]
    return pl.DataFrame({
        "sf_id": pl.Series([ids[int(r)] for r in rows], dtype=pl.String),
        "sf_sampler": [sampler] * len(rows),
        "sf_rank": np.arange(len(rows), dtype=np.int64),
        "sf_score": np.asarray(scores, dtype=np.float64),
        "sf_weight": np.asarray(weights, dtype=np.float64),
        "sf_cluster": np.asarray(clusters, dtype=np.int64),
        "sf_nearest_selected_id": pl.Series(nearest_ids, dtype=pl.String),
        "sf_nearest_selected_similarity": np.asarray(nearest_sim, dtype=np.float64),
    })

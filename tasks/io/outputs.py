"""The output folder: selected.parquet, manifest.json, report.json, report.html, each written atomically."""

import json
from pathlib import Path

import numpy as np
import polars as pl

from ..errors import ConfigError
from .atomic import atomic_path



def check_output_dir(out_dir: str | Path, run_key: str, overwrite: bool) -> Path:
    """Refuse to mix runs: a folder holding another run's outputs is only replaced with overwrite=True.

    A folder holding the outputs of the same configuration (same run key) is refreshed in place.
    """
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"Output path {out} is a file; pass a folder with --out.")
    manifest = out / "manifest.json"
    if out.exists() and any(out.iterdir()) and not overwrite:
        previous = None
        if manifest.exists():
            try:
                previous = json.loads(manifest.read_text()).get("run_key")
            except ValueError:
                previous = None
        elif (out / RUN_MARKER).exists():
            previous = (out / RUN_MARKER).read_text().strip()  # a run of this configuration that was interrupted
        if previous != run_key:
            raise ConfigError(
                f"Output folder {out} already holds {'another run' if previous else 'other files'}; "
                "pass --overwrite to replace it, or choose another --out."
            )
    out.mkdir(parents=True, exist_ok=True)
    return out


RUN_MARKER = ".selectflow-run"


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

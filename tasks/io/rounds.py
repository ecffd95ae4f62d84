"""Inputs that tie a selection to other runs: earlier rounds' selections and per-row training feedback.

Both are matched to the corpus by the pipeline's row id (`sf_id` in selected.parquet: the id column's
value, or the id derived from the content), so they work with or without an id column.
"""

from pathlib import Path

import numpy as np
import polars as pl

from ..errors import InputError


def _selected_file(path: str) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "selected.parquet"
    if not p.exists():
        raise InputError(f"{p}: no earlier selection here; pass a run folder or its selected.parquet.")
    return p


def previous_rows(paths: list[str], ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Positions of rows selected in earlier rounds, and how many of their ids are no longer in the corpus."""
    position = {str(i): k for k, i in enumerate(ids)}
    rows, missing = set(), 0
    for path in paths:
        f = _selected_file(path)
        frame = pl.read_parquet(f)
        if "sf_id" not in frame.columns:
            raise InputError(f"{f}: has no sf_id column; pass a selected.parquet written by selectflow.")
        for i in frame["sf_id"].cast(pl.String).to_list():
            if i in position:
                rows.add(position[i])
            else:
                missing += 1
    return np.array(sorted(rows), dtype=np.int64), missing


def feedback_scores(path: str, ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-row feedback aligned with the corpus (NaN where none), and how many feedback ids were not found.

    The Parquet needs an id column (`sf_id` or `id`) and a numeric `feedback` column.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{p}: feedback file not found.")
    try:
        frame = pl.read_parquet(p)
    except Exception as exc:
        raise InputError(f"{p}: cannot be read as Parquet ({str(exc).splitlines()[0][:160]}).") from None
    id_col = "sf_id" if "sf_id" in frame.columns else "id" if "id" in frame.columns else None
    if id_col is None or "feedback" not in frame.columns:
        raise InputError(
            f"{p}: feedback needs an id column (sf_id or id) and a numeric 'feedback' column; columns are: {', '.join(frame.columns)}."
        )
    if not frame.schema["feedback"].is_numeric():
        raise InputError(f"{p}: column 'feedback' holds {frame.schema['feedback']}, not numbers.")
    values = frame["feedback"].cast(pl.Float64).to_numpy()
    if not np.all(np.isfinite(values)):
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise InputError(f"{p}: row {bad} has feedback {values[bad]!r}; feedback must be finite.")
    position = {str(i): k for k, i in enumerate(ids)}
    out = np.full(len(ids), np.nan)
    missing = 0
    for i, v in zip(frame[id_col].cast(pl.String).to_list(), values):
        k = position.get(i)
        if k is None:
            missing += 1
        else:
            out[k] = v
    return out, missing

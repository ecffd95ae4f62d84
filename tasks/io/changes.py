"""What changed between a run and the previous run written to the same output folder."""

from pathlib import Path

import polars as pl

from . import storage
from .results import Manifest

EXAMPLES = 20


def changes_since_previous(out_dir: str | Path, selected_ids: list[str], corpus_ids: set[str]) -> dict | None:
    """Rows added to and dropped from the selection since the run already in `out_dir` (a folder, or an
    object-store prefix), and why.

    Returns None when the folder holds no previous run. Reasons: a dropped row either left the input or
    is still there but lost its place; an added row is either new in the input or was there before.
    """
    manifest_path, parquet_path = storage.join(out_dir, "manifest.json"), storage.join(out_dir, "selected.parquet")
    if not (storage.exists(manifest_path) and storage.exists(parquet_path)):
        return None
    previous = Manifest.read(manifest_path)
    id_column = (previous.config.get("corpus") or {}).get("id_column")
    cache_files = previous.cache_files
    prev_frame = pl.read_parquet(storage.local_copy(parquet_path))
    # The previous run's ids: its id column, or the ids its prepared corpus derived (kept in the cache).
    prev_ids: list[str] | None = None
    prev_corpus_ids: set[str] | None = None
    prepared = cache_files.prepared_corpus if cache_files else None
    if prepared and storage.exists(prepared):
        prepared = storage.local_copy(prepared)
        prev_corpus = pl.read_parquet(prepared, columns=["id", "row"])
        prev_corpus_ids = set(prev_corpus["id"].to_list())
    if id_column and id_column in prev_frame.columns:
        prev_ids = prev_frame[id_column].cast(pl.String).to_list()
    elif "sf_nearest_selected_id" in prev_frame.columns and prev_corpus_ids is not None and prepared:
        selection = cache_files.selection_arrays
        if selection and storage.exists(selection):
            import numpy as np

            with np.load(storage.local_copy(selection), allow_pickle=False) as z:
                rows = z["rows"]
            ids = pl.read_parquet(prepared, columns=["id"])["id"].to_list()
            prev_ids = [ids[int(r)] for r in rows]
    if prev_ids is None:
        return {"previous_run": previous.run_key, "comparable": False,
                "note": "the previous run's ids could not be recovered (no id column, cache cleared)"}
    before, after = set(prev_ids), set(selected_ids)
    added = [i for i in selected_ids if i not in before]
    dropped = [i for i in prev_ids if i not in after]
    added_new = [i for i in added if prev_corpus_ids is not None and i not in prev_corpus_ids]
    dropped_gone = [i for i in dropped if i not in corpus_ids]
    return {
        "comparable": True,
        "previous_input_hash": previous.input.content_hash,
        "previous_selected": len(prev_ids),
        "kept": len(before & after),
        "added": len(added),
        "dropped": len(dropped),
        "added_new_in_input": len(added_new) if prev_corpus_ids is not None else None,
        "added_already_in_input": len(added) - len(added_new) if prev_corpus_ids is not None else None,
        "dropped_left_input": len(dropped_gone),
        "dropped_outcompeted": len(dropped) - len(dropped_gone),
        "examples": {
            "added": [{"id": i, "why": "new in the input" if i in added_new else "was in the input before, selected now"}
                      for i in added[:EXAMPLES]],
            "dropped": [{"id": i, "why": "no longer in the input" if i in dropped_gone else
                         "still in the input, not selected this time"} for i in dropped[:EXAMPLES]],
        },
    }

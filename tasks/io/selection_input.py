"""What a sampler reads and what it leaves: the SelectionInput assembled from the cache, and selection.npz.

load_selection_input  the prepared corpus's columns, the embeddings, the index and the rounds' inputs as one SelectionInput
load_arrays           a selection's arrays (rows, scores, weights, clusters; dedup's arrays when it ran)
save_arrays           write them atomically
"""

from pathlib import Path

import numpy as np
import polars as pl

from ..embedding.faiss_index import load_index, searcher
from ..samplers import SelectionInput
from .atomic import atomic_path, written
from .results import Embeddings, IndexRef, PreparedCorpus, Selection
from .rounds import feedback_scores, previous_rows
from .storage import local_copy


def load_selection_input(prepared: PreparedCorpus, embeddings: Embeddings, index: IndexRef | None, *,
                         target: Embeddings | None = None, feedback: str | None = None,
                         previous: list[str] | None = None, mmap: bool = False) -> tuple[SelectionInput, dict]:
    """The sampler's input, plus facts for the diagnostics (ids of earlier rounds or feedback not found)."""
    frame = pl.read_parquet(local_copy(prepared.prepared_path), columns=["id", "quality", "labels", "group"])
    knn = searcher(load_index(index.path)[0]) if index is not None else None
    ids = frame["id"].to_numpy()
    facts: dict = {}
    prev = None
    if previous:
        prev, facts["previous_ids_not_in_corpus"] = previous_rows(previous, ids)
        facts["previous_rows"] = int(len(prev))
    fb = None
    if feedback:
        fb, facts["feedback_ids_not_in_corpus"] = feedback_scores(feedback, ids)
        facts["feedback_rows"] = int(np.isfinite(fb).sum())
    data = SelectionInput(
        embeddings=np.load(local_copy(embeddings.matrix_path), allow_pickle=False, mmap_mode="r" if mmap else None),
        quality=frame["quality"].to_numpy() if prepared.has_quality else None,
        labels=[tuple(x) for x in frame["labels"].to_list()] if prepared.has_labels else None,
        groups=frame["group"].to_numpy() if prepared.has_groups else None,
        ids=ids,
        knn=knn,
        target_embeddings=np.load(local_copy(target.matrix_path), allow_pickle=False) if target else None,
        feedback=fb,
        previous_rows=prev,
    )
    return data, facts


def load_arrays(selection: Selection) -> dict[str, np.ndarray]:
    with np.load(local_copy(selection.arrays), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return written(path)

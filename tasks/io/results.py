"""The typed results that travel between the stages: tasks return them, flows pass them on.

PreparedCorpus  the normalised corpus in the cache (paths, row counts, which optional columns it has)
Embeddings      the (N, D) matrix of one prepared corpus under one encoder (or the user's own vectors)
IndexRef        a FAISS index over one matrix
Selection       one sampler run: its arrays file (rows, scores, weights, clusters) and what it did
Manifest        manifest.json of an output folder, written and read through this one model

Plain code: no Prefect, importable from every layer. Every model is frozen; the JSON files they come
from (corpus.json, selection.json, manifest.json) keep their keys.
"""

from pathlib import Path
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict

Number = Union[int, float]  # a budget as asked: a row count or a fraction (an int stays an int)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PreparedCorpus(_Frozen):
    """The corpus read, validated and written once to the cache (corpus.json), under its cache key."""

    input_path: str
    input_hash: str
    format: str
    columns: list[str]
    text_columns: list[str]
    prepared_path: str
    excluded_path: str
    n_read: int
    n_usable: int
    excluded: dict[str, int] = {}
    has_quality: bool = False
    has_labels: bool = False
    has_groups: bool = False
    empty_label_rows: int = 0
    key: str
    reused: bool

    @property
    def n_excluded(self) -> int:
        return self.n_read - self.n_usable


class Embeddings(_Frozen):
    """The embedding matrix of a prepared corpus (<cache>/matrix/<key>.npy) and how it was made."""

    matrix_path: str
    n_rows: int
    dim: int
    store_dir: Optional[str]  # None for the user's own embeddings
    store_key: Optional[str]
    key: str
    encoded: int  # texts encoded in this run
    reused: int  # rows whose embedding came from the store (or the user)
    truncated: int  # rows longer than the encoder's max_seq_length
    max_seq_length: Optional[int]
    encode_seconds: float
    texts_per_second: Optional[float]
    encoder: dict[str, Any]  # EncoderInfo.to_dict(), or the description of the user's embeddings

    @property
    def encoder_name(self) -> str:
        return self.encoder["name"]


class IndexRef(_Frozen):
    """A FAISS index saved in the cache, with the parameters it was built with."""

    path: str
    params: dict[str, Any]  # IndexParams.to_dict()
    key: str
    reused: bool
    gpu: bool
    build_seconds: float

    @property
    def kind(self) -> str:
        return self.params["kind"]


class DedupSummary(_Frozen):
    threshold: float
    rows_dropped: int


class Selection(_Frozen):
    """One sampler run (or the merge of per-group runs): selection.json beside the arrays in selection.npz."""

    key: str
    sampler: str
    options: dict[str, Any]
    budget: int  # rows selected
    budget_requested: Number
    seed: int
    arrays: str
    has_clusters: bool
    diagnostics: dict[str, Any]
    seconds: float
    dedup: Optional[DedupSummary] = None
    reused: bool = False

    def record(self) -> dict:
        """What selection.json holds: everything but `reused`."""
        return self.model_dump(exclude={"reused"})

    @classmethod
    def read(cls, path: str | Path) -> "Selection":
        """A cached selection.json, marked as reused."""
        import json

        return cls(**json.loads(Path(path).read_text()), reused=True)

"""The typed results that travel between the stages: tasks return them, flows pass them on.

PreparedFiles   what prepare_corpus wrote (corpus.json): paths, row counts, which optional columns it has
PreparedCorpus  the same under its cache key: the normalised corpus in the cache
Embeddings      the (N, D) matrix of one prepared corpus under one encoder (or the user's own vectors)
IndexRef        a FAISS index over one matrix
Selection       one sampler run: its arrays file (rows, scores, weights, clusters) and what it did
EmbeddedCorpus  what embed_corpus returns: the three above, the stage timings and the cache folder
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


class PreparedFiles(BaseModel):
    """Where prepare_corpus wrote the normalised corpus and what happened to its rows (corpus.json).

    The one declaration of these fields: PreparedCorpus adds the cache key and `reused`. Mutable (the cache
    step sets its paths after reading or writing corpus.json); unknown keys are refused.
    """

    model_config = ConfigDict(extra="forbid")

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

    def to_dict(self) -> dict:
        return self.model_dump()

    @classmethod
    def from_dict(cls, d: dict) -> "PreparedFiles":
        return cls(**d)


class PreparedCorpus(PreparedFiles):
    """The corpus read, validated and written once to the cache (corpus.json), under its cache key."""

    model_config = _Frozen.model_config

    key: str
    reused: bool

    @property
    def n_excluded(self) -> int:
        return self.n_read - self.n_usable


class Embeddings(_Frozen):
    """The embedding matrix of a prepared corpus (<cache>/matrix/<key>.npy) and how it was made."""

    matrix_path: str  # with `shards`: the shard list (<cache>/matrix/<key>.shards.json), no matrix
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
    shards: Optional[list[str]] = None  # partitioned selection: .npy shards whose rows, concatenated, are the corpus rows

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


class EmbeddedCorpus(_Frozen):
    """The result of the embed-corpus flow: the prepared corpus, its embeddings and their index."""

    prepared: PreparedCorpus
    embeddings: Embeddings
    index: Optional[IndexRef]  # None in partitioned selection (no index over all rows)
    timings: dict[str, float]
    cache_dir: str


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

        from .storage import read_text

        return cls(**json.loads(read_text(path)), reused=True)


class _Record(_Frozen):
    """A part of manifest.json: written with exclude_unset, so a key is in the file exactly when it was given."""


class ManifestInput(_Record):
    path: str
    content_hash: str
    format: str
    text_columns: list[str]

    @classmethod
    def of(cls, prepared: PreparedCorpus) -> "ManifestInput":
        return cls(path=prepared.input_path, content_hash=prepared.input_hash, format=prepared.format,
                   text_columns=list(prepared.text_columns))


class ManifestRows(_Record):
    read: int
    usable: int
    excluded: int
    excluded_by_reason: dict[str, int]
    selected: Optional[int] = None  # a select run
    kept: Optional[int] = None  # a dedup run
    dropped_by_dedup: Optional[int] = None

    @classmethod
    def of(cls, prepared: PreparedCorpus, **counts: int) -> "ManifestRows":
        """The prepared corpus's counts, plus what the run kept (selected=, kept=, dropped_by_dedup=)."""
        return cls(read=prepared.n_read, usable=prepared.n_usable, excluded=prepared.n_excluded,
                   excluded_by_reason=prepared.excluded, **counts)


class ManifestBudget(_Record):
    requested: Number
    rows: int


class ManifestEncoder(_Record):
    name: str
    weights_hash: str
    path: Optional[str] = None
    max_seq_length: Optional[int] = None
    device: Optional[str] = None


class ManifestEmbeddings(_Record):
    store_key: Optional[str]
    encoded_this_run: int
    reused_from_store: int
    truncated: int


class CacheFiles(_Record):
    """Cache files behind a run, so `selectflow compare` can measure several runs in one embedding space."""

    prepared_corpus: str
    embedding_matrix: str
    selection_arrays: str


class Manifest(_Record):
    """manifest.json: what a run read, with which configuration, what it wrote. Written last in its folder.

    A select run has seed, budget, embeddings, index, changes_since_previous and cache_files; a dedup run has
    dedup instead. `write` and `read` round-trip the file: a key is written exactly when it was set.
    """

    run_key: str
    input: ManifestInput
    rows: ManifestRows
    config: dict[str, Any]
    seed: Optional[int] = None
    budget: Optional[ManifestBudget] = None
    encoder: ManifestEncoder
    embeddings: Optional[ManifestEmbeddings] = None
    index: Optional[dict[str, Any]] = None
    changes_since_previous: Optional[dict[str, Any]] = None
    cache_files: Optional[CacheFiles] = None
    dedup: Optional[dict[str, Any]] = None
    library_versions: dict[str, str]
    timings_seconds: dict[str, Number]
    outputs: list[str]

    def to_json(self) -> dict:
        """The file's content: every key that was set (None included), none that was not."""
        return self.model_dump(exclude_unset=True)

    def write(self, folder: str | Path) -> Path:
        from .atomic import write_json

        return write_json(Path(folder) / "manifest.json", self.to_json())

    @classmethod
    def read(cls, folder_or_file: str | Path) -> "Manifest":
        import json

        from . import storage

        path = str(folder_or_file)
        if not path.endswith(".json"):  # a run folder (local or an object-store prefix)
            path = storage.join(path, "manifest.json")
        return cls.model_validate(json.loads(storage.read_text(path)))

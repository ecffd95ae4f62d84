"""One sampler run: what it is (SamplerRun, Rounds) and how it runs over a corpus or one group of it.

SamplerRun   the sampler, its options, the budget asked for and the seed
Rounds       what ties the run to other corpora and runs: a target set, per-row feedback, earlier selections
run_sampler  dedup first (optional), then the sampler, then the coverage floors; rows mapped back to the corpus
selection_key the cache key of a run: everything that decides its rows
Plain code: the select task reads the inputs, calls these and writes the arrays.
"""

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..errors import ConfigError
from ..io.hashing import config_hash, file_hash
from ..io.results import Embeddings, IndexRef
from ..samplers import Sampler, Selection, SelectionInput
from ..samplers.base import subset_input
from ..samplers.floors import apply_floors
from ..samplers.semantic_dedup import VERSION as DEDUP_VERSION
from ..samplers.semantic_dedup import DedupResult, semantic_dedup

DEDUP_ARRAYS = ("dedup_dropped", "dedup_kept_for", "dedup_similarity")


class SamplerRun(BaseModel):
    """Which sampler, with which options, how many rows (a count or a fraction), and the seed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sampler: str
    options: dict[str, Any] = {}
    budget: Union[int, float]
    seed: int = 0


class Rounds(BaseModel):
    """Inputs from outside this corpus: the target set's embeddings, a feedback file, earlier runs' selections."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: Optional[Embeddings] = None
    feedback: Optional[str] = None
    previous: list[str] = []

    def key(self) -> dict:
        """What of the rounds decides a selection: the target matrix and the content of the files."""
        return {"target": self.target.key if self.target else None,
                "feedback": file_hash(self.feedback) if self.feedback else None,
                "previous": [file_hash(p if not Path(p).is_dir() else Path(p) / "selected.parquet") for p in self.previous]}


def selection_key(*, embeddings: Embeddings, index: IndexRef | None, run: SamplerRun, options: dict, n_budget: int,
                  rounds: Rounds, group: str | None = None, dedup: float | None = None, min_per_group: int | None = None,
                  min_per_label: int | None = None) -> str:
    """The cache key of one selection (`options` as validated by the sampler, `n_budget` in rows)."""
    return config_hash({"matrix": embeddings.key, "sampler": run.sampler, "options": options,
                        "budget": n_budget, "seed": run.seed, "index": index.key if index else None, "rounds": rounds.key(),
                        "group": group, **({"dedup": {"threshold": dedup, "version": DEDUP_VERSION}} if dedup is not None else {}),
                        **({"min_per_group": min_per_group} if min_per_group else {}),
                        **({"min_per_label": min_per_label} if min_per_label else {})})


def run_sampler(sampler: Sampler, data: SelectionInput, n_budget: int, seed: int, *, group: str | None = None,
                dedup: float | None = None, min_per_group: int | None = None,
                min_per_label: int | None = None) -> tuple[Selection, dict[str, np.ndarray]]:
    """The sampler's selection over the whole input, or, with `group`, over that group's rows only; rows are
    positions of the whole input. The second value holds dedup's arrays (dropped rows, the kept row each was
    dropped for, their similarity), empty without `dedup`.
    """
    members = None
    if group is not None:
        # One partition of a per-group selection: the sampler sees only this group's rows, renumbered.
        members = np.flatnonzero(data.groups == group)
        data = restrict(data, members)
    deduped = None
    if dedup is not None:
        deduped, data = dedup_input(data, dedup, n_budget, seed)
    # Sampler.select refuses a budget above the rows left by earlier rounds and never returns one of them.
    selection = sampler.select(data, n_budget, seed)
    # Coverage floors (a per-group run gets its group floor from the plan's quotas instead).
    if min_per_group and group is None:
        selection = apply_floors(sampler, data, selection, n_budget, seed, floor=min_per_group, by="group")
    if min_per_label:
        selection = apply_floors(sampler, data, selection, n_budget, seed, floor=min_per_label, by="labels")
    extra: dict[str, np.ndarray] = {}
    if deduped is not None:
        selection.rows = deduped.kept[selection.rows]
        selection.diagnostics["dedup"] = deduped.diagnostics
        extra = dict(zip(DEDUP_ARRAYS, (deduped.dropped, deduped.kept_for, deduped.similarity)))
    if members is not None:
        selection.rows = members[selection.rows]
        extra = {k: (members[v] if k != "dedup_similarity" else v) for k, v in extra.items()}
    return selection, extra


def selection_arrays(selection: Selection, extra: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What selection.npz holds: rows, scores, weights, clusters (-1 without clusters), and dedup's arrays."""
    clusters = selection.clusters if selection.clusters is not None else np.full(len(selection.rows), -1)
    return {"rows": selection.rows, "scores": selection.scores, "weights": selection.weights, "clusters": clusters, **extra}


def restrict(data: SelectionInput, rows: np.ndarray) -> SelectionInput:
    """The input restricted to `rows`, earlier rounds' rows renumbered with them."""
    local_previous = None
    if data.previous_rows is not None:
        local_previous = np.flatnonzero(np.isin(rows, data.previous_rows))
    return replace(subset_input(data, rows), previous_rows=local_previous)


def dedup_input(data: SelectionInput, threshold: float, n_budget: int, seed: int) -> tuple[DedupResult, SelectionInput]:
    """Semantic dedup of the sampler's input: (the dedup result, the input restricted to the kept rows)."""
    deduped = semantic_dedup(data.embeddings, threshold, quality=data.quality, ids=data.ids, seed=seed)
    kept = deduped.kept
    if n_budget > len(kept):
        raise ConfigError(f"Budget of {n_budget} rows is more than the {len(kept)} rows left after --dedup {threshold:g} "
                          f"dropped {len(deduped.dropped)} near-duplicates; lower --budget or raise the --dedup threshold.")
    return deduped, restrict(data, kept)

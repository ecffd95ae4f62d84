"""The sampler contract: every selection method is a `Sampler` with validated options.

A sampler is a plain function of arrays: it receives a `SelectionInput` (unit-norm embeddings and,
where the corpus has them, quality scores, labels, groups and a nearest-neighbour index), a budget
as a row count and an integer seed, and returns a `Selection`. It never reads files, never touches
global random state and never imports Prefect, so it can be tested and reused on its own.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..errors import ConfigError, InputError


class SamplerOptions(BaseModel):
    """Base for a sampler's own options; each sampler subclasses it with described, bounded fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class SelectionInput:
    """What a sampler may look at. Rows are positions 0..N-1 of the usable corpus.

    embeddings: (N, D) float32, L2-normalised.
    quality:    (N,) float64 or None; finite and >= 0 when present (validated by the loader).
    labels:     list of N tuples of label strings, or None.
    groups:     (N,) array of group values (strings), or None.
    knn:        a function (queries (Q, D) float32, k) -> (similarities (Q, k), rows (Q, k)) over the
                whole corpus, backed by the FAISS index; None when no index was built.
    ids:        (N,) array of row ids (strings), for diagnostics that name rows.
    target_embeddings: (T, D) float32 unit-norm embeddings of a target set (influence toward it), or None.
    feedback:   (N,) float64 per-row feedback from training on an earlier round (NaN where none), or None.
    previous_rows: int64 rows selected in earlier rounds; a sampler that supports rounds never selects them again.
    """

    embeddings: np.ndarray
    quality: np.ndarray | None = None
    labels: list[tuple[str, ...]] | None = None
    groups: np.ndarray | None = None
    knn: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None
    ids: np.ndarray | None = None
    target_embeddings: np.ndarray | None = None
    feedback: np.ndarray | None = None
    previous_rows: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return int(self.embeddings.shape[0])


@dataclass
class Selection:
    """A sampler's answer.

    rows:        (B,) int64 positions, in selection order (rank 0 first), no duplicates.
    scores:      (B,) float64: the score or marginal gain that made each row selected.
    weights:     (B,) float64 importance weights (1.0 for samplers without a weighting).
    clusters:    (B,) int64 cluster of each selected row, or None when the sampler has no clusters.
    diagnostics: JSON-serialisable facts for the audit report (curves, quotas, settings found).
    """

    rows: np.ndarray
    scores: np.ndarray
    weights: np.ndarray
    clusters: np.ndarray | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rows = np.asarray(self.rows, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float64)
        self.weights = np.asarray(self.weights, dtype=np.float64)
        if self.clusters is not None:
            self.clusters = np.asarray(self.clusters, dtype=np.int64)
        n = len(self.rows)
        for name in ("scores", "weights", "clusters"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise AssertionError(f"Selection.{name} has {len(value)} entries for {n} rows")


class Sampler(ABC):
    """Base class. Subclasses set `name`, `Options`, `description` and implement `_select`.

    Like scikit-learn estimators, the constructor only stores validated options; the work, and the
    random generator built from the integer seed, live in `select`, so two calls with the same
    input and seed give the same selection.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[SamplerOptions]] = SamplerOptions
    # Whether the sampler needs strictly positive quality scores when a quality column is given.
    requires_positive_quality: ClassVar[bool] = False
    # Samplers that condition on earlier rounds themselves (e.g. greedy methods continuing from them) set
    # this; for the others, select() runs them on the rows not selected before.
    handles_previous_rows: ClassVar[bool] = False

    def __init__(self, options: SamplerOptions | dict | None = None):
        if options is None:
            options = self.Options()
        elif isinstance(options, dict):
            options = self.Options(**options)
        elif not isinstance(options, self.Options):
            raise ConfigError(
                f"Options for sampler {self.name!r} must be {self.Options.__name__}; got {type(options).__name__}."
            )
        self.options = options

    def select(self, data: SelectionInput, budget: int, seed: int) -> Selection:
        """Select exactly `budget` distinct rows of `data` (deterministic for `seed`)."""
        n = data.n_rows
        if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool):
            raise ConfigError(f"Sampler budget must be a whole number of rows; got {budget!r}.")
        if not 1 <= budget <= n:
            raise ConfigError(f"Budget of {budget} rows is outside 1..{n} (the number of usable rows).")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"Seed must be a non-negative integer; got {seed!r}.")
        _check_embeddings(data.embeddings)
        requirement = self.quality_requirement()
        if requirement and data.quality is not None:
            ok = data.quality > 0 if requirement == "> 0" else data.quality >= 0
            ok &= np.isfinite(data.quality)
            if not np.all(ok):
                bad = int(np.flatnonzero(~ok)[0])
                where = f"row {bad}" + (f" (id {data.ids[bad]})" if data.ids is not None else "")
                raise InputError(
                    f"Sampler {self.name!r} needs quality scores {requirement}; {where} has {float(data.quality[bad])!r}. "
                    "Rescale the quality column, drop those rows, or run without --quality."
                )
        previous = data.previous_rows
        if previous is not None and len(previous):
            remaining = n - len(np.unique(previous))
            if budget > remaining:
                raise ConfigError(f"Budget of {budget} rows is more than the {remaining} rows not selected in earlier rounds.")
        order = canonical_order(data)
        if order is not None:
            # Samplers draw random numbers and break ties by position; running them on the rows sorted by id
            # makes the selection a function of the rows' content and ids, not of the file's row order.
            selection = self._select_in_place(permute_input(data, order), int(budget), int(seed))
            selection.rows = order[selection.rows]
            return selection
        return self._select_in_place(data, int(budget), int(seed))

    def _select_in_place(self, data: SelectionInput, budget: int, seed: int) -> Selection:
        n = data.n_rows
        previous = data.previous_rows
        if previous is not None and len(previous) and not self.handles_previous_rows:
            keep = np.setdiff1d(np.arange(n), np.asarray(previous, dtype=np.int64))
            selection = self._select(subset_input(data, keep), int(budget), int(seed))
            _check_selection(self.name, selection, int(budget), len(keep))
            selection.rows = keep[selection.rows]
        else:
            selection = self._select(data, int(budget), int(seed))
            _check_selection(self.name, selection, int(budget), n)
        if previous is not None and len(previous) and np.isin(selection.rows, previous).any():
            raise AssertionError(f"sampler {self.name!r} selected a row of an earlier round")
        return selection

    def quality_requirement(self) -> str | None:
        """'> 0', '>= 0' or None: what this sampler, with its options, needs of quality scores."""
        return "> 0" if self.requires_positive_quality else None

    @abstractmethod
    def _select(self, data: SelectionInput, budget: int, seed: int) -> Selection:
        """Implementations: the algorithm itself; inputs are already validated."""


def canonical_order(data: SelectionInput) -> np.ndarray | None:
    """Positions that sort the rows by id (stable), or None when there are no ids or they are already sorted."""
    if data.ids is None or data.n_rows < 2:
        return None
    ids = np.asarray(data.ids)
    order = np.argsort(ids.astype(str) if ids.dtype == object else ids, kind="stable")
    if np.array_equal(order, np.arange(len(order))):
        return None
    return order.astype(np.int64)


def permute_input(data: SelectionInput, order: np.ndarray) -> SelectionInput:
    """The input with its rows in `order` (new row i is old row order[i]); the index and earlier rounds follow."""
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    knn = None
    if data.knn is not None:
        search = data.knn

        def knn(queries: np.ndarray, k: int):
            sims, rows = search(queries, k)
            return sims, np.where(rows >= 0, position[np.maximum(rows, 0)], rows)

    previous = None if data.previous_rows is None else np.sort(position[np.asarray(data.previous_rows, dtype=np.int64)])
    return replace(subset_input(data, order), knn=knn, previous_rows=previous)


def subset_input(data: SelectionInput, rows: np.ndarray) -> SelectionInput:
    """The input restricted to `rows` (positions renumbered 0..len(rows)-1; no index, no earlier rounds)."""
    take = lambda a: None if a is None else np.asarray(a)[rows]
    return SelectionInput(
        embeddings=np.ascontiguousarray(data.embeddings[rows]),
        quality=take(data.quality),
        labels=None if data.labels is None else [data.labels[i] for i in rows],
        groups=take(data.groups),
        knn=None,
        ids=take(data.ids),
        target_embeddings=data.target_embeddings,
        feedback=take(data.feedback),
        previous_rows=None,
    )


def _check_embeddings(embeddings: np.ndarray) -> None:
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise InputError(f"Embeddings must be a non-empty (rows, dim) matrix; got shape {embeddings.shape}.")
    if embeddings.dtype != np.float32:
        raise InputError(f"Embeddings must be float32; got {embeddings.dtype}.")


def _check_selection(name: str, selection: Selection, budget: int, n: int) -> None:
    rows = selection.rows
    # A sampler returning fewer rows than asked for must fail loudly, never silently.
    if len(rows) != budget:
        raise AssertionError(f"sampler {name!r} returned {len(rows)} rows for a budget of {budget}")
    if len(np.unique(rows)) != len(rows):
        raise AssertionError(f"sampler {name!r} returned duplicate rows")
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        raise AssertionError(f"sampler {name!r} returned rows outside 0..{n - 1}")
    if not np.all(np.isfinite(selection.weights)) or np.any(selection.weights <= 0):
        raise AssertionError(f"sampler {name!r} returned non-positive or non-finite weights")

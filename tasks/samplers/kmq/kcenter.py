"""k-center greedy (Gonzalez 1985): repeatedly add the row farthest from the selected set."""

import math
from typing import Literal

import numpy as np

from ...errors import ConfigError
from ..clustering import assign


def kcenter_greedy(
    embeddings: np.ndarray,
    budget: int,
    seed: int,
    *, start: Literal["random", "mean"] = "random",
    previous_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Farthest-point k-center greedy (Gonzalez 1985): a 2-approximation of the minimax covering radius.

    Returns (rows in pick order, L2 distance of each pick to the set before it, final covering
    radius: the largest distance of an unselected row to the selected and previous rows). The first
    pick (when there are no previous rows) has no set to be far from; its score is its own farthest
    distance, so the scores are non-increasing. Ties go to the lower row index.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = x.shape[0]
    sq_norms = np.einsum("ij,ij->i", x, x)
    previous = np.asarray(previous_rows if previous_rows is not None else [], dtype=np.int64)
    if budget > n - len(previous):
        raise ConfigError(f"k-center budget {budget} exceeds the {n - len(previous)} rows not selected before.")
    buffer = np.empty(n, dtype=np.float32)

    def distances_to(row: int) -> np.ndarray:
        # ||x - c||^2 = |x|^2 + |c|^2 - 2 x.c, one matrix-vector product over the corpus.
        np.dot(x, x[row], out=buffer)
        np.multiply(buffer, -2.0, out=buffer)
        np.add(buffer, sq_norms, out=buffer)
        np.add(buffer, sq_norms[row], out=buffer)
        return buffer

    rows = np.empty(budget, dtype=np.int64)
    scores = np.empty(budget, dtype=np.float64)
    if len(previous):
        min_sq, _ = assign(x, x[previous])
        min_sq = min_sq.astype(np.float32)
        min_sq[previous] = -1.0
        first = int(np.argmax(min_sq))
        first_score = math.sqrt(max(float(min_sq[first]), 0.0))
    else:
        if start == "mean":
            first = int(np.argmax(x @ x.mean(axis=0)))
        else:
            first = int(np.random.default_rng(seed).integers(n))
        min_sq = np.full(n, np.inf, dtype=np.float32)
        first_score = None
    rows[0] = first
    np.minimum(min_sq, distances_to(first), out=min_sq)
    min_sq[first] = -1.0  # selected rows are never picked again
    scores[0] = first_score if first_score is not None else math.sqrt(max(float(min_sq.max()), 0.0))
    for i in range(1, budget):
        pick = int(np.argmax(min_sq))
        rows[i] = pick
        scores[i] = math.sqrt(max(float(min_sq[pick]), 0.0))
        np.minimum(min_sq, distances_to(pick), out=min_sq)
        min_sq[pick] = -1.0
    radius = math.sqrt(max(float(min_sq.max()), 0.0)) if budget + len(previous) < n else 0.0
    return rows, scores, radius

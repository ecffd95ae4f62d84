"""Defaults of the influence sampler that depend on the data: mode, pseudo-label k, learning rate, batch size, and classes from labels."""

import math
from collections import Counter

import numpy as np


def resolved_mode(mode: str, score: str) -> str:
    """mode='auto': top for the target score (LESS keeps the top-scoring rows toward its target), else stratified."""
    if mode != "auto":
        return mode
    return "top" if score == "target" else "stratified"


# Rows of budget per pseudo-label class the default k aims at (the classes stratify the selection).
ROWS_PER_CLASS = 8


def default_pseudo_k(n_rows: int, budget: int | None = None) -> int:
    """round(sqrt(N/10)), raised to ceil(budget / ROWS_PER_CLASS) when a budget is given, clipped to 2..100 and N."""
    k = round(math.sqrt(n_rows / 10))
    if budget is not None:
        k = max(k, math.ceil(budget / ROWS_PER_CLASS))
    return int(min(n_rows, max(2, min(100, k))))


def default_lr(model: str) -> float:
    # Tuned on unit-norm clustered embeddings: the head reaches high accuracy within about 3 epochs,
    # so the early checkpoints are still informative; the MLP diverges at 10.
    return 10.0 if model == "linear" else 2.0


def default_batch_size(n_rows: int) -> int:
    return int(min(1024, max(32, n_rows // 50)))


def classes_from_labels(labels: list[tuple[str, ...]], rule: str) -> tuple[np.ndarray, list[str]]:
    """One class per row: its first label, or its label most frequent in the corpus (ties by name).

    A row without labels gets the class "(none)".
    """
    if rule == "most_frequent":
        freq = Counter(t for row in labels for t in row)
        chosen = [min(row, key=lambda t: (-freq[t], t)) if row else "(none)" for row in labels]
    else:
        chosen = [row[0] if row else "(none)" for row in labels]
    names = sorted(set(chosen))
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[c] for c in chosen], dtype=np.int64), names

"""Iterative kMQ (Eqs. 5-6): cluster weights of a refinement round from the training feedback of earlier rounds."""

from typing import Literal

import numpy as np


# Fraction of the observed feedback spread kept as the lowest shifted s_j (multiplicative rule).
FEEDBACK_SHIFT_FLOOR = 0.01


def cluster_feedback_means(
    assignments: np.ndarray, k: int, previous_rows: np.ndarray, feedback: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 5: mean finite feedback of each cluster's previously selected rows (NaN where none), and counts."""
    counts = np.zeros(k, dtype=np.int64)
    means = np.full(k, np.nan)
    if feedback is None or len(previous_rows) == 0:
        return means, counts
    values = feedback[previous_rows]
    finite = np.isfinite(values)
    clusters = assignments[previous_rows][finite]
    counts = np.bincount(clusters, minlength=k)
    sums = np.bincount(clusters, weights=values[finite], minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return means, counts


def refine_cluster_weights(
    prior: np.ndarray,
    cluster_feedback: np.ndarray,
    capacity: np.ndarray,
    *, weighting: Literal["multiplicative", "softmax"] = "multiplicative",
    temperature: float = 1.0,
) -> tuple[np.ndarray, dict]:
    """One round of iterative kMQ cluster weights (paper Eq. 6 or the reference code's softmax).

    prior: w^prev (non-negative); cluster_feedback: s_j, NaN for clusters without feedback;
    capacity: rows left per cluster (0 = exhausted, weight 0). Returns weights that are
    non-negative and sum to 1, and facts for the diagnostics.
    """
    prior = np.asarray(prior, dtype=np.float64)
    s = np.asarray(cluster_feedback, dtype=np.float64)
    capacity = np.asarray(capacity)
    observed = np.isfinite(s)
    info: dict = {"clusters_with_feedback": int(observed.sum()), "feedback_shift": 0.0}
    factor = np.ones(len(prior))
    if observed.any():
        if weighting == "multiplicative":
            lo, hi = float(s[observed].min()), float(s[observed].max())
            if lo <= 0:
                # Eq. 6 needs s_j > 0: shift so the worst cluster keeps a small weight, order kept.
                shift = -lo + (FEEDBACK_SHIFT_FLOOR * (hi - lo) if hi > lo else 1.0)
                s = s + shift
                info["feedback_shift"] = shift
            factor = np.where(observed, s, s[observed].mean())
            factor = factor / factor[observed].sum()
        else:
            z = np.where(observed, s / temperature, np.nan)
            z = np.where(observed, z, np.nanmean(z))
            factor = np.exp(z - z.max())
    weights = factor * prior
    weights[capacity <= 0] = 0.0
    info["weights_fallback"] = False
    if not weights.sum() > 0:
        # The prior gives no weight to any cluster that still has rows: fall back to their room.
        weights = np.where(capacity > 0, capacity, 0).astype(np.float64)
        info["weights_fallback"] = True
    return weights / weights.sum(), info

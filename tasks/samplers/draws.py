"""Random draws the samplers share; every function takes a numpy Generator built from an integer seed."""

import numpy as np


def weighted_order(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order of the items where each prefix is a weighted sample without replacement.

    Efraimidis-Spirakis: key_i = log(u_i) / w_i, sorted descending; the first m items are a draw of
    m items without replacement with probabilities proportional to w (successive sampling).
    Zero-weight items come last, in uniformly random order. Ties are broken by position, so the
    result depends only on the generator's state.
    """
    w = np.asarray(weights, dtype=np.float64)
    u = rng.random(len(w))
    keys = np.full(len(w), -np.inf)
    positive = w > 0
    with np.errstate(divide="ignore"):
        keys[positive] = np.log(u[positive]) / w[positive]
    # Zero-weight items after all positive ones, randomly ordered among themselves.
    secondary = np.where(positive, 0.0, u)
    return np.lexsort((np.arange(len(w)), -secondary, -keys))


def weighted_sample(weights: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """m distinct positions drawn without replacement with probability proportional to weights."""
    return weighted_order(weights, rng)[:m]

"""Difficulty scores from the proxy: EL2N, GraNd, self-influence, forgetting events and variance of gradients (VoG)."""

import numpy as np
import torch

from .gradients import _factor_chunks, _factor_norms
from .proxy import ProxyModel, _chunks, _row_chunk, proxy_logits


def _error_chunks(params, x: np.ndarray, y: np.ndarray):
    """(slice, x chunk, p − onehot(y)) over x in chunks, without gradients."""
    c = int(proxy_logits(params, torch.zeros(1, x.shape[1])).shape[1])
    for part in _chunks(len(x), _row_chunk(max(c, x.shape[1]))):
        xb = torch.from_numpy(np.ascontiguousarray(x[part], dtype=np.float32))
        with torch.no_grad():
            # float64 softmax: p − y cancels for confident rows, and EL2N must match GraNd's factors.
            p = torch.softmax(proxy_logits(params, xb).double(), dim=1)
        p[torch.arange(len(xb)), torch.from_numpy(np.asarray(y[part], dtype=np.int64))] -= 1.0
        yield part, xb, p


def _checkpoint_ids(proxy: ProxyModel, checkpoints) -> list[int]:
    if checkpoints is None:
        return list(range(len(proxy.checkpoints)))
    if isinstance(checkpoints, int):
        return list(range(min(checkpoints, len(proxy.checkpoints))))
    return list(checkpoints)


def el2n(proxy: ProxyModel, x: np.ndarray, y: np.ndarray, checkpoints=None) -> np.ndarray:
    """‖softmax(f(x)) − onehot(y)‖₂ averaged over checkpoints (an int = the first that many; None = all)."""
    ids = _checkpoint_ids(proxy, checkpoints)
    out = np.zeros(len(x))
    for t in ids:
        for part, _, err in _error_chunks(proxy.checkpoints[t], x, y):
            out[part] += torch.linalg.vector_norm(err, dim=1).numpy()
    return out / len(ids)


def _grad_norms(proxy: ProxyModel, t: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.empty(len(x))
    for part, factors in _factor_chunks(proxy.checkpoints[t], x, y):
        out[part] = _factor_norms(factors).numpy()
    return out


def grand(proxy: ProxyModel, x: np.ndarray, y: np.ndarray, checkpoints=None) -> np.ndarray:
    """‖∇_θ ℓ(x, y)‖₂ averaged over checkpoints; exactly EL2N·‖[h, 1]‖ for the linear head."""
    ids = _checkpoint_ids(proxy, checkpoints)
    return sum(_grad_norms(proxy, t, x, y) for t in ids) / len(ids)


def self_influence(proxy: ProxyModel, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """TracIn self-influence Σ_t η_t ‖∇ℓ_t(z)‖² over all checkpoints (≥ 0)."""
    return sum(eta * _grad_norms(proxy, t, x, y) ** 2 for t, eta in enumerate(proxy.checkpoint_lrs))


def forgetting(correct_history: np.ndarray) -> np.ndarray:
    """Forgetting scores from an (evaluations, N) boolean history of correct predictions.

    Counts correct → incorrect transitions between consecutive evaluations; rows never correct get
    (largest count among rows learned at some point) + 1, standing in for Toneva et al.'s ∞.
    """
    h = np.asarray(correct_history, dtype=bool)
    counts = (h[:-1] & ~h[1:]).sum(0) if len(h) > 1 else np.zeros(h.shape[1], dtype=np.int64)
    return forgetting_scores(counts, h.any(0))


def forgetting_scores(counts: np.ndarray, ever_correct: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64).copy()
    learned = np.asarray(ever_correct, dtype=bool)
    never_value = (counts[learned].max() if learned.any() else 0.0) + 1.0
    counts[~learned] = never_value
    return counts


def _normalize(values: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    if classes is None:
        sd = values.std()
        return (values - values.mean()) / sd if sd > 0 else np.zeros_like(values)
    out = np.zeros_like(values)
    for c in np.unique(classes):
        members = classes == c
        v = values[members]
        sd = v.std()
        out[members] = (v - v.mean()) / sd if sd > 0 else 0.0
    return out


def vog(
    proxy: ProxyModel,
    x: np.ndarray,
    y: np.ndarray,
    *, normalize: str = "class",
    output: str = "auto",
    checkpoints=None,
) -> np.ndarray:
    """Variance of gradients: mean over input dims of the std across checkpoints of ∂(true-class output)/∂x.

    output: "logit" (the paper's pre-softmax output), "log_softmax", or "auto" (log_softmax for the
    linear head, whose logit gradient W_y is the same for every row of a class; logit for the MLP).
    normalize: "class" (z-score within each class), "dataset" or "none".
    """
    if output == "auto":
        output = "log_softmax" if proxy.kind == "linear" else "logit"
    ids = _checkpoint_ids(proxy, checkpoints)
    n, d = x.shape
    raw = np.empty(n)
    y64 = np.asarray(y, dtype=np.int64)
    for part in _chunks(n, _row_chunk(2 * d * len(ids), lo=16, hi=32768)):
        xb = torch.from_numpy(np.ascontiguousarray(x[part], dtype=np.float32))
        yb = torch.from_numpy(y64[part])[:, None]
        grads = torch.empty(len(ids), len(xb), d, dtype=torch.float64)
        for j, t in enumerate(ids):
            xg = xb.clone().requires_grad_(True)
            out = proxy_logits(proxy.checkpoints[t], xg)
            if output == "log_softmax":
                out = torch.log_softmax(out, dim=1)
            (grads[j],) = torch.autograd.grad(out.gather(1, yb).sum(), xg)
        # Population std across checkpoints (the original VoG), then the mean over input dimensions;
        # two passes with in-place ops (torch.std over the leading axis is several times slower).
        mean = grads.sum(0).div_(len(ids))
        var = torch.zeros_like(mean)
        for j in range(len(ids)):
            dev = grads[j].sub_(mean)
            var.addcmul_(dev, dev)
        raw[part] = var.div_(len(ids)).sqrt_().mean(1).numpy()
    if normalize == "none":
        return raw
    return _normalize(raw, y64 if normalize == "class" else None)

"""Target influence (LESS-style): alignment of each row's gradient with the mean gradient of a target set."""

import numpy as np
import torch

from ...errors import ConfigError
from .gradients import _factor_chunks, _factor_norms, per_example_grads
from .proxy import ProxyModel, _chunks, _row_chunk


def target_influence(
    proxy: ProxyModel,
    x: np.ndarray,
    y: np.ndarray,
    *, targets: np.ndarray,
    target_y: np.ndarray,
    cosine: bool = False,
    method: str = "factored",
) -> np.ndarray:
    """TracIn-CP influence of every row toward the target set, against the mean target gradient.

    dot:    Σ_t η_t ⟨∇ℓ_t(z_i), mean_j ∇ℓ_t(z_j)⟩ = mean over targets of TracIn(z_i, z_j).
    cosine: Σ_t η̄_t mean_j cos(∇ℓ_t(z_i), ∇ℓ_t(z_j)), η̄ renormalised to sum 1 (LESS); in [−1, 1].
    method: "factored" (the linear head's closed form (p − y)ᵀ Ḡ h̃, O(C·D) per row; layer-wise
    factors for the MLP, see `layer_factors`) or "per_example" (torch.func per-example gradients,
    materialised in chunks: the slow reference).
    """
    if method not in ("factored", "per_example"):
        raise ConfigError(f"target_influence method must be 'factored' or 'per_example'; got {method!r}.")
    etas = np.asarray(proxy.checkpoint_lrs, dtype=np.float64)
    if cosine:
        etas = etas / etas.sum()
    align = _factored_alignment if method == "factored" else _per_example_alignment
    out = np.zeros(len(x))
    for t, eta in enumerate(etas):
        out += eta * align(proxy.checkpoints[t], x, y, targets=targets, target_y=target_y, cosine=cosine)
    return out


def _safe_divide(values: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    # Zero-gradient rows (a perfect prediction) have no direction; their cosine is defined as 0.
    return torch.where(norms > 0, values / torch.where(norms > 0, norms, torch.ones_like(norms)), torch.zeros_like(values))


def _factored_alignment(params, x, y, *, targets, target_y, cosine: bool) -> np.ndarray:
    # Mean target gradient per layer, as [G_W | G_b] (float64: it sums many rows).
    g_mean: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    for _, factors in _factor_chunks(params, targets, target_y):
        if cosine:
            scale = _safe_divide(torch.ones(len(factors[0][0]), dtype=torch.float64), _factor_norms(factors))
            factors = [(d * scale[:, None], a) for d, a in factors]
        parts = [(d.T @ a.double(), d.sum(0)) for d, a in factors]
        g_mean = parts if g_mean is None else [(gw + pw, gb + pb) for (gw, gb), (pw, pb) in zip(g_mean, parts)]
    g_mean = [(gw / len(targets), gb / len(targets)) for gw, gb in g_mean]
    g_float = [(gw.float(), gb.float()) for gw, gb in g_mean]
    out = np.empty(len(x))
    for part, factors in _factor_chunks(params, x, y):
        # G_W a in float32 (the big product); the row dot with δ in float64.
        s = sum((d * (a @ gw.T + gb).double()).sum(1) for (d, a), (gw, gb) in zip(factors, g_float))
        out[part] = (_safe_divide(s, _factor_norms(factors)) if cosine else s).numpy()
    return out


def _per_example_alignment(params, x, y, *, targets, target_y, cosine: bool) -> np.ndarray:
    n_params = sum(int(p.numel()) for p in params.values())
    size = _row_chunk(n_params, lo=8, hi=4096)

    def grads(rows_x, rows_y, part):
        g = per_example_grads(
            params,
            torch.from_numpy(np.ascontiguousarray(rows_x[part], dtype=np.float32)),
            torch.from_numpy(np.asarray(rows_y[part], dtype=np.int64)),
        ).double()
        if cosine:
            g = _safe_divide(g, torch.linalg.vector_norm(g, dim=1, keepdim=True))
        return g

    g_mean = torch.zeros(n_params, dtype=torch.float64)
    for part in _chunks(len(targets), size):
        g_mean += grads(targets, target_y, part).sum(0)
    g_mean /= len(targets)
    out = np.empty(len(x))
    for part in _chunks(len(x), size):
        out[part] = (grads(x, y, part) @ g_mean).numpy()
    return out

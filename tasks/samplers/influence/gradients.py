"""Per-example gradients of the proxy loss: exact, for the linear proxy, and as layer factors (input x output-error) for the norms."""

import numpy as np
import torch
import torch.nn.functional as F

from .proxy import _chunks, _row_chunk, proxy_logits


def per_example_grads(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example gradients of the cross-entropy w.r.t. all parameters, materialised with torch.func.

    Flattened in params order (linear head: W row-major, then b). The reference the factored forms
    are tested against, and the "per_example" method of `target_influence`.
    """
    from torch.func import grad, vmap

    def loss_one(p, xi, yi):
        return F.cross_entropy(proxy_logits(p, xi[None]), yi[None])

    grads = vmap(grad(loss_one), in_dims=(None, 0, 0))({k: v.detach() for k, v in params.items()}, x, y)
    return torch.cat([grads[name].reshape(len(x), -1) for name in params], dim=1)


def linear_per_example_grads(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Closed form for the softmax head: ∇_[W|b] ℓ = (p − y) h̃ᵀ, flattened like `per_example_grads`."""
    ((err, h),) = layer_factors(params, x, y)
    w_part = (err[:, :, None] * h.double()[:, None, :]).reshape(len(x), -1)
    return torch.cat([w_part, err], dim=1)


def layer_factors(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-example gradients of every linear layer as outer-product factors (δ float64, a float32).

    For a layer with input a and output z = Wa + b, ∇_W ℓ_i = δ_i a_iᵀ and ∇_b ℓ_i = δ_i with
    δ_i = ∂ℓ_i/∂z_i; with ã = [a, 1], ∇_[W|b] ℓ_i = δ_i ã_iᵀ. So ‖∇ℓ_i‖² = Σ_l ‖δ_l,i‖²(‖a_l,i‖² + 1)
    and ⟨∇ℓ_i, [G_W|G_b]⟩ = Σ_l δ_l,iᵀ(G_W a_l,i + G_b), without materialising an (N, params)
    matrix. Linear head: δ = p − onehot(y), a = h (closed form). MLP: δ of both layers from one
    backward pass of the summed loss (rows are independent, so the gradient w.r.t. each row's
    pre-activations is that row's own).
    """
    if "W" in params:
        with torch.no_grad():
            err = torch.softmax(proxy_logits(params, x).double(), 1)
            err[torch.arange(len(x)), y] -= 1.0
        return [(err, x)]
    with torch.enable_grad():
        w1, b1, w2, b2 = (params[k].detach() for k in ("W1", "b1", "W2", "b2"))
        z1 = (x @ w1.T + b1).requires_grad_(True)
        hidden = torch.relu(z1)
        z2 = (hidden @ w2.T + b2).requires_grad_(True)
        d1, d2 = torch.autograd.grad(F.cross_entropy(z2, y, reduction="sum"), [z1, z2])
    return [(d1.double(), x), (d2.double(), hidden.detach())]


def _factor_chunks(params, x: np.ndarray, y: np.ndarray):
    width = max(int(t.shape[0]) for t in params.values()) + x.shape[1]
    y64 = np.asarray(y, dtype=np.int64)
    for part in _chunks(len(x), _row_chunk(4 * width)):
        xb = torch.from_numpy(np.ascontiguousarray(x[part], dtype=np.float32))
        yield part, layer_factors(params, xb, torch.from_numpy(y64[part]))


def _factor_norms(factors) -> torch.Tensor:
    return torch.sqrt(sum((d**2).sum(1) * ((a.double() ** 2).sum(1) + 1.0) for d, a in factors))

"""The proxy model: a linear or one-hidden-layer classifier trained on the embeddings with seeded SGD, keeping checkpoints and correctness history."""

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


# Working memory the proxy may use on top of the embeddings (checkpoints, optimiser state, chunks).
PROXY_MEMORY_LIMIT = 3 * 2**30


# Elements per chunk of rows when streaming logits or gradients (about 64 MiB of float32).
CHUNK_ELEMENTS = 2**24


@dataclass
class ProxyModel:
    """A trained proxy and what the scores need from its training run.

    checkpoints: parameter dicts at `checkpoint_steps` (cloned tensors, in memory).
    checkpoint_lrs: η_t, the mean learning rate over the steps since the previous checkpoint.
    forgetting_counts / ever_correct: from the dense evaluations (None when they were off).
    """

    kind: str
    n_classes: int
    checkpoints: list[dict[str, torch.Tensor]]
    checkpoint_steps: list[int]
    checkpoint_lrs: list[float]
    total_steps: int
    loss_curve: list[float] = field(default_factory=list)
    accuracy_curve: list[float] = field(default_factory=list)
    forgetting_counts: np.ndarray | None = None
    ever_correct: np.ndarray | None = None
    n_forgetting_evals: int = 0

    @property
    def final(self) -> dict[str, torch.Tensor]:
        return self.checkpoints[-1]

    def n_params(self) -> int:
        return sum(int(p.numel()) for p in self.checkpoints[-1].values())


def proxy_logits(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits of the linear head (W, b) or the MLP (W1, b1, W2, b2) for rows x."""
    if "W" in params:
        return x @ params["W"].T + params["b"]
    hidden = torch.relu(x @ params["W1"].T + params["b1"])
    return hidden @ params["W2"].T + params["b2"]


def _init_params(kind: str, d: int, c: int, *, hidden: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    if kind == "linear":
        # Softmax regression is convex: a zero start is as good as any and needs no randomness.
        return {"W": torch.zeros(c, d), "b": torch.zeros(c)}
    bound1, bound2 = 1 / math.sqrt(d), 1 / math.sqrt(hidden)
    return {
        "W1": (torch.rand(hidden, d, generator=gen) * 2 - 1) * bound1,
        "b1": (torch.rand(hidden, generator=gen) * 2 - 1) * bound1,
        "W2": (torch.rand(c, hidden, generator=gen) * 2 - 1) * bound2,
        "b2": torch.zeros(c),
    }


def _n_params(kind: str, d: int, c: int, hidden: int) -> int:
    return c * (d + 1) if kind == "linear" else hidden * (d + 1) + c * (hidden + 1)


def _row_chunk(width: int, lo: int = 64, hi: int = 65536) -> int:
    return int(min(hi, max(lo, CHUNK_ELEMENTS // max(1, width))))


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def train_proxy(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    model: str = "linear",
    hidden: int = 128,
    epochs: int = 3,
    batch_size: int = 512,
    lr: float = 10.0,
    lr_schedule: str = "constant",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    n_checkpoints: int = 6,
    forgetting_every: int | None = None,
    seed: int = 0,
) -> ProxyModel:
    """Train the proxy with minibatch SGD (mean cross-entropy) and keep checkpoints in memory.

    Minibatches follow a seeded permutation per epoch; a batch of at least N rows is full-batch
    gradient descent (accumulated over chunks, so memory stays bounded). `forgetting_every` = k
    evaluates every row every k steps and at the last step; None or 0 turns it off.
    """
    n, d = x.shape
    y = np.asarray(y, dtype=np.int64)
    gen = torch.Generator().manual_seed(int(seed))
    params = _init_params(model, d, n_classes, hidden=hidden, gen=gen)
    for p in params.values():
        p.requires_grad_(True)
    velocity = {name: torch.zeros_like(p) for name, p in params.items()} if momentum > 0 else None
    bs = int(min(batch_size, n))
    steps_per_epoch = math.ceil(n / bs)
    total = epochs * steps_per_epoch
    k = min(n_checkpoints, total)
    ckpt_steps = sorted({max(1, round(total * (i + 1) / k)) for i in range(k)})
    y_all = torch.from_numpy(y)
    chunk = _row_chunk(max(d, n_classes, hidden))
    proxy = ProxyModel(model, n_classes, [], [], [], total)
    counts = ever = prev = None
    if forgetting_every:
        counts = np.zeros(n, dtype=np.int64)
        ever = np.zeros(n, dtype=bool)
    step, lr_sum, lr_steps = 0, 0.0, 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).numpy()
        for s in range(steps_per_epoch):
            # Sorted rows read the (possibly memory-mapped) embeddings in order; the mean gradient is unchanged.
            idx = np.sort(perm[s * bs : (s + 1) * bs]) if bs < n else None
            lr_now = lr * (1.0 - step / total) if lr_schedule == "linear" else lr
            for p in params.values():
                p.grad = None
            m = n if idx is None else len(idx)
            loss_sum, hits = 0.0, 0
            for part in _chunks(m, chunk):
                rows = np.arange(part.start, part.stop) if idx is None else idx[part]
                xb = torch.from_numpy(np.ascontiguousarray(x[rows], dtype=np.float32))
                yb = y_all[rows]
                logits = proxy_logits(params, xb)
                loss = F.cross_entropy(logits, yb, reduction="sum")
                (loss / m).backward()
                loss_sum += float(loss.detach())
                hits += int((logits.detach().argmax(1) == yb).sum())
            _sgd_step(params, velocity, lr_now, momentum=momentum, weight_decay=weight_decay)
            step += 1
            lr_sum += lr_now
            lr_steps += 1
            proxy.loss_curve.append(loss_sum / m)
            proxy.accuracy_curve.append(hits / m)
            if step in ckpt_steps:
                proxy.checkpoints.append({name: p.detach().clone() for name, p in params.items()})
                proxy.checkpoint_steps.append(step)
                proxy.checkpoint_lrs.append(lr_sum / lr_steps)
                lr_sum, lr_steps = 0.0, 0
            if forgetting_every and (step % forgetting_every == 0 or step == total):
                correct = predictions(params, x) == y
                if prev is not None:
                    counts += prev & ~correct
                ever |= correct
                prev = correct
                proxy.n_forgetting_evals += 1
    proxy.forgetting_counts = counts
    proxy.ever_correct = ever
    return proxy


@torch.no_grad()
def _sgd_step(params, velocity, lr: float, *, momentum: float, weight_decay: float) -> None:
    # Plain SGD written out (as torch.optim.SGD computes it) to skip torch.optim's heavy first-step imports.
    for name, p in params.items():
        g = p.grad if weight_decay == 0 else p.grad + weight_decay * p
        if velocity is not None:
            velocity[name].mul_(momentum).add_(g)
            g = velocity[name]
        p.sub_(lr * g)


@torch.no_grad()
def predictions(params: dict[str, torch.Tensor], x: np.ndarray) -> np.ndarray:
    """Arg-max class of every row (ties to the lowest class), streamed in chunks."""
    out = np.empty(len(x), dtype=np.int64)
    width = max(int(t.shape[0]) for t in params.values())
    for part in _chunks(len(x), _row_chunk(width)):
        out[part] = proxy_logits(params, torch.from_numpy(np.ascontiguousarray(x[part]))).argmax(1).numpy()
    return out

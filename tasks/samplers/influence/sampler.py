"""The influence sampler: train the proxy, score the rows, pick them by band or UCB."""

import math
import time
from contextlib import contextmanager

import numpy as np
import torch

from ...errors import ConfigError, InputError, ResourceError
from ..base import Sampler, Selection, SelectionInput
from ..clustering import kmeans
from .defaults import classes_from_labels, default_batch_size, default_lr, default_pseudo_k, resolved_mode
from .options import InfluenceOptions
from .proxy import CHUNK_ELEMENTS, PROXY_MEMORY_LIMIT, ProxyModel, _n_params, predictions, train_proxy
from .ranking import select_rows, ucb_select
from .scores import el2n, forgetting_scores, grand, self_influence, vog
from .target import target_influence


def _histogram(values: np.ndarray, edges: np.ndarray) -> dict:
    counts, _ = np.histogram(values, bins=edges)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def _subsample_curve(values: list[float], limit: int = 500) -> list[float]:
    if len(values) <= limit:
        return [float(v) for v in values]
    pos = np.linspace(0, len(values) - 1, limit).round().astype(int)
    return [float(values[i]) for i in pos]


@contextmanager
def _torch_threads(n_threads: int):
    """Run with `n_threads` torch threads and restore the process-wide setting afterwards."""
    previous = torch.get_num_threads()
    change = n_threads != previous
    if change:
        torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(previous)


class InfluenceSampler(Sampler):
    name = "influence"
    description = "Influence scores (EL2N, GraNd, forgetting, VoG, TracIn toward a target) from a proxy model on the embeddings; keep the top, bottom or middle, per class or UCB-balanced over clusters."
    Options = InfluenceOptions
    handles_previous_rows = True

    def _select(self, data: SelectionInput, budget: int, seed: int) -> Selection:
        with _torch_threads(self.options.threads):
            return self._select_inner(data, budget, seed)

    def _select_inner(self, data: SelectionInput, budget: int, seed: int) -> Selection:
        opts = self.options
        x = data.embeddings
        n, d = x.shape
        if opts.score == "target" and data.target_embeddings is None:
            raise ConfigError(
                "influence option score='target' needs a target set: pass target embeddings (a target corpus), "
                "or choose another score."
            )
        candidates = None
        if data.previous_rows is not None and len(data.previous_rows):
            keep = np.ones(n, dtype=bool)
            keep[np.asarray(data.previous_rows, dtype=np.int64)] = False
            candidates = np.flatnonzero(keep)
        clock = time.perf_counter()
        timings: dict[str, float] = {}
        y, class_names, clustering, label_note = self._classes(data, seed, budget)
        timings["classes"] = time.perf_counter() - clock
        n_classes = len(class_names)
        batch_size = opts.batch_size or default_batch_size(n)
        self._check_memory(n, d, n_classes, batch_size)
        steps_per_epoch = math.ceil(n / min(batch_size, n))
        forgetting_every = None
        if opts.score == "forgetting":
            forgetting_every = opts.forgetting_every or max(1, steps_per_epoch // 10)
        proxy = train_proxy(
            x,
            y,
            n_classes,
            model=opts.model,
            hidden=opts.hidden,
            epochs=opts.epochs,
            batch_size=batch_size,
            lr=opts.lr or default_lr(opts.model),
            lr_schedule=opts.lr_schedule,
            momentum=opts.momentum,
            weight_decay=opts.weight_decay,
            n_checkpoints=opts.checkpoints,
            forgetting_every=forgetting_every,
            seed=seed,
        )
        timings["train"] = time.perf_counter() - clock - sum(timings.values())
        scores, extra = self._scores(proxy, data, y, clustering=clustering, seed=seed)
        timings["score"] = time.perf_counter() - clock - sum(timings.values())
        mode = resolved_mode(opts.mode, opts.score)

        if opts.balance == "ucb":
            if clustering is None:
                k = opts.k or default_pseudo_k(n, budget)
                if k > n:
                    raise ConfigError(f"influence option k={k} is larger than the {n} usable rows; pass a smaller k.")
                clustering = kmeans(x, k, seed=seed, n_iter=opts.n_iter)
            rows, info = ucb_select(
                scores, clustering.assignments, budget, mode=mode, alpha=opts.ucb_alpha, batch=opts.ucb_batch,
                drop_easiest=opts.drop_easiest, drop_hardest=opts.drop_hardest, seed=seed, candidates=candidates,
            )
            sel_clusters = clustering.assignments[rows]
            curve = info.pop("ucb_pull_rewards")
            extra.setdefault("curves", {})["UCB: mean reward per pull"] = _subsample_curve(curve)
        else:
            rows, info = select_rows(
                scores, budget, mode=mode, drop_easiest=opts.drop_easiest, drop_hardest=opts.drop_hardest,
                classes=y if opts.balance == "class" else None, seed=seed, candidates=candidates,
                embeddings=x, dedup_similarity=opts.dedup_similarity,
            )
            sel_clusters = clustering.assignments[rows] if clustering is not None and label_note == "clusters" else None
        if "class_quotas" in info and len(info["class_quotas"]) > 50:
            info["class_quotas"] = dict(sorted(info["class_quotas"].items(), key=lambda kv: -kv[1])[:50])
        timings["select"] = time.perf_counter() - clock - sum(timings.values())
        diagnostics = self._diagnostics(proxy, scores, y, class_names=class_names, rows=rows, label_note=label_note, batch_size=batch_size, forgetting_every=forgetting_every)
        diagnostics["seconds"] = {k: round(v, 3) for k, v in timings.items()}
        diagnostics.update(info)
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(diagnostics.get(key), dict):
                diagnostics[key].update(value)
            else:
                diagnostics[key] = value
        return Selection(
            rows=rows,
            scores=scores[rows],
            weights=np.ones(budget),
            clusters=sel_clusters,
            diagnostics=diagnostics,
        )

    def _classes(self, data: SelectionInput, seed: int, budget: int | None = None):
        opts = self.options
        n = data.n_rows
        note = "clusters"
        if opts.label_source in ("auto", "labels"):
            if data.labels is None:
                if opts.label_source == "labels":
                    raise ConfigError("influence option label_source='labels' needs a label column; pass labels or use label_source='clusters'.")
            else:
                if len(data.labels) != n:
                    raise InputError(f"Got {len(data.labels)} label entries for {n} rows; labels must have one entry per row.")
                y, names = classes_from_labels(data.labels, opts.label_rule)
                if len(names) >= 2:
                    return y, names, None, "labels"
                if opts.label_source == "labels":
                    raise ConfigError("The labels hold a single class, so a proxy classifier learns nothing; use label_source='clusters'.")
                note = "clusters (labels hold a single class)"
        k = opts.k or default_pseudo_k(n, budget)
        if k > n:
            raise ConfigError(f"influence option k={k} is larger than the {n} usable rows; pass a smaller k.")
        clustering = kmeans(data.embeddings, k, seed=seed, n_iter=opts.n_iter)
        return clustering.assignments.astype(np.int64), [f"cluster {i}" for i in range(k)], clustering, note

    def _check_memory(self, n: int, d: int, c: int, batch_size: int) -> None:
        opts = self.options
        n_params = _n_params(opts.model, d, c, opts.hidden)
        # Checkpoints + live parameters, gradient and momentum buffer + float64 target gradient.
        model_bytes = n_params * 4 * (opts.checkpoints + 4) + n_params * 8
        chunk_bytes = 8 * CHUNK_ELEMENTS * 8
        if model_bytes + chunk_bytes > PROXY_MEMORY_LIMIT:
            hint = (
                "use label_source='clusters' with a smaller k"
                if c > 1000
                else "lower checkpoints or hidden"
            )
            raise ResourceError(
                f"The {opts.model} proxy with {c} classes needs about {(model_bytes + chunk_bytes) / 2**30:.1f} GiB "
                f"of parameters and checkpoints (limit {PROXY_MEMORY_LIMIT / 2**30:.0f} GiB); {hint}."
            )

    def _scores(self, proxy: ProxyModel, data: SelectionInput, y: np.ndarray, *, clustering, seed: int):
        opts = self.options
        x = data.embeddings
        extra: dict = {}
        early = min(opts.early_checkpoints, len(proxy.checkpoints))
        if opts.score == "el2n":
            return el2n(proxy, x, y, early), {"score_checkpoints": early}
        if opts.score == "grand":
            return grand(proxy, x, y, early), {"score_checkpoints": early}
        if opts.score == "self_influence":
            return self_influence(proxy, x, y), extra
        if opts.score == "forgetting":
            s = forgetting_scores(proxy.forgetting_counts, proxy.ever_correct)
            extra["forgetting_evaluations"] = proxy.n_forgetting_evals
            extra["never_learned_rows"] = int((~proxy.ever_correct).sum())
            return s, extra
        if opts.score == "vog":
            return vog(proxy, x, y, normalize=opts.vog_normalize, output=opts.vog_output), {
                "vog_output": opts.vog_output if opts.vog_output != "auto" else ("log_softmax" if opts.model == "linear" else "logit"),
                "vog_normalize": opts.vog_normalize,
            }
        targets = np.ascontiguousarray(data.target_embeddings, dtype=np.float32)
        if targets.ndim != 2 or targets.shape[1] != x.shape[1] or len(targets) == 0:
            raise InputError(
                f"Target embeddings have shape {targets.shape}; they must be a non-empty (rows, {x.shape[1]}) matrix from the same embedding model."
            )
        if opts.target_labels == "predicted":
            target_y = predictions(proxy.final, targets)
        else:
            if clustering is not None:
                centroids = clustering.centroids
            else:
                centroids = np.zeros((proxy.n_classes, x.shape[1]), dtype=np.float64)
                np.add.at(centroids, y, x.astype(np.float64))
                centroids = (centroids / np.maximum(np.bincount(y, minlength=proxy.n_classes), 1)[:, None]).astype(np.float32)
            from ..clustering import assign

            target_y = assign(targets, centroids)[1]
        s = target_influence(proxy, x, y, targets=targets, target_y=target_y, cosine=opts.target_cosine)
        extra["target_rows"] = int(len(targets))
        extra["target_classes"] = {str(k): int(v) for k, v in zip(*np.unique(target_y, return_counts=True))}
        return s, extra

    def _diagnostics(self, proxy, scores, y, *, class_names, rows, label_note, batch_size, forgetting_every) -> dict:
        opts = self.options
        counts = np.bincount(y, minlength=len(class_names))
        order = np.lexsort((np.arange(len(counts)), -counts))
        sel_counts = np.bincount(y[rows], minlength=len(class_names))
        lo, hi = float(scores.min()), float(scores.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, 21)
        histograms = {f"{opts.score} (all rows)": _histogram(scores, edges)}
        for c in order[:10]:
            histograms[f"{opts.score} (class {class_names[c]})"] = _histogram(scores[y == c], edges)
        shown = order[:50]
        return {
            "score": opts.score,
            "mode": resolved_mode(opts.mode, opts.score),
            "balance": opts.balance,
            "drop_easiest": opts.drop_easiest,
            "drop_hardest": opts.drop_hardest,
            "proxy_model": opts.model,
            "proxy_parameters": proxy.n_params(),
            "label_source": label_note,
            "n_classes": len(class_names),
            "class_counts": {class_names[c]: int(counts[c]) for c in shown},
            "selected_class_counts": {class_names[c]: int(sel_counts[c]) for c in shown},
            "lr": float(opts.lr or default_lr(opts.model)),
            "batch_size": int(batch_size),
            "training_steps": proxy.total_steps,
            "checkpoint_steps": proxy.checkpoint_steps,
            "checkpoint_lrs": [float(v) for v in proxy.checkpoint_lrs],
            "final_minibatch_accuracy": float(proxy.accuracy_curve[-1]),
            "forgetting_every": forgetting_every,
            "score_min": lo,
            "score_max": hi,
            "curves": {
                "Proxy training loss (per step)": _subsample_curve(proxy.loss_curve),
                "Proxy minibatch accuracy (per step)": _subsample_curve(proxy.accuracy_curve),
            },
            "histograms": histograms,
        }

"""kMQ: k-means clustering, then quality-aware sampling in proportion to cluster size.

Yu et al., "Diversify and Conquer" (arXiv 2409.11378), §2.1. Follows the paper where the reference
code differs: the budget is split in proportion to cluster sizes (the code gives every cluster an
equal share and drops what small clusters cannot fill); the shortfall of small clusters is
redistributed; sampling inside a cluster is without replacement (the paper's "with replacement"
yields duplicates); quality scores are used as floats (the code truncates them to integers).
"""

import math
from typing import Literal

import numpy as np
from pydantic import Field

from ..errors import ConfigError
from .base import Sampler, SamplerOptions, Selection, SelectionInput
from .clustering import kmeans
from .draws import weighted_order


class KMeansOptions(SamplerOptions):
    k: int | None = Field(
        default=None,
        ge=1,
        description="Number of k-means clusters. Empty: chosen from the budget as round(2*sqrt(budget)), k much smaller than the budget as the paper advises.",
    )
    n_iter: int = Field(default=20, ge=1, le=300, description="Lloyd iterations of FAISS k-means.")
    quality_weighting: Literal["proportional", "softmax"] = Field(
        default="proportional",
        description="Inside a cluster, draw rows with probability proportional to quality (the paper), or to softmax(quality) (the reference code). Uniform when there is no quality column.",
    )


def default_k(budget: int, n_rows: int) -> int:
    return int(max(1, min(round(2 * math.sqrt(budget)), budget, n_rows)))


def allocate_quotas(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Split `budget` over clusters in proportion to their sizes, never above a cluster's size.

    Largest-remainder rounding (ties to the lower cluster index); clusters too small for their
    share are filled completely and the rest of the budget is split again, in proportion to size,
    over the clusters that still have room. The quotas sum to the budget exactly.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if budget > sizes.sum():
        raise ConfigError(f"Budget {budget} exceeds the {int(sizes.sum())} rows in the clusters.")
    quotas = np.zeros(len(sizes), dtype=np.int64)
    remaining = int(budget)
    open_ = sizes > 0
    while remaining > 0:
        share = np.where(open_, sizes, 0).astype(np.float64)
        ideal = remaining * share / share.sum()
        capacity = sizes - quotas
        full = open_ & (ideal >= capacity)
        if full.any():
            # Saturate the clusters that cannot hold their proportional share, then re-split the rest.
            remaining -= int(capacity[full].sum())
            quotas[full] = sizes[full]
            open_ &= ~full
            continue
        base = np.floor(ideal).astype(np.int64)
        leftover = remaining - int(base.sum())
        remainder = np.where(open_, ideal - base, -1.0)
        order = np.lexsort((np.arange(len(sizes)), -remainder))
        base[order[:leftover]] += 1
        quotas += base
        remaining = 0
    return quotas


class KMeansSampler(Sampler):
    name = "kmeans"
    description = "kMQ: k-means clusters, budget in proportion to cluster size, quality-weighted draws inside each cluster."
    Options = KMeansOptions
    requires_positive_quality = False

    def _select(self, data: SelectionInput, budget: int, seed: int) -> Selection:
        opts = self.options
        n = data.n_rows
        k = opts.k if opts.k is not None else default_k(budget, n)
        if k > n:
            raise ConfigError(f"kmeans option k={k} is larger than the {n} usable rows; pass a smaller k.")
        clustering = kmeans(data.embeddings, k, seed=seed, n_iter=opts.n_iter)
        sizes = clustering.sizes()
        quotas = allocate_quotas(sizes, budget)
        rng = np.random.default_rng(seed)
        per_cluster: list[np.ndarray] = []
        probs: list[np.ndarray] = []
        for c in range(k):
            members = np.flatnonzero(clustering.assignments == c)
            if quotas[c] == 0:
                per_cluster.append(members[:0])
                probs.append(np.zeros(0))
                continue
            w = self._weights(data.quality, members)
            order = weighted_order(w, rng)[: quotas[c]]
            per_cluster.append(members[order])
            probs.append((w / w.sum())[order] if w.sum() > 0 else np.full(len(order), 1.0 / len(members)))
        rows, scores, clusters = _round_robin(per_cluster, probs, sizes)
        return Selection(
            rows=rows,
            scores=scores,
            weights=np.ones(budget),
            clusters=clusters,
            diagnostics={
                "k": int(k),
                "k_chosen_from_budget": opts.k is None,
                "inertia": clustering.inertia,
                "cluster_sizes": sizes.tolist(),
                "quotas": quotas.tolist(),
                "quality_weighting": opts.quality_weighting if data.quality is not None else "uniform",
            },
        )

    def _weights(self, quality: np.ndarray | None, members: np.ndarray) -> np.ndarray:
        if quality is None:
            return np.ones(len(members))
        q = quality[members].astype(np.float64)
        if self.options.quality_weighting == "softmax":
            return np.exp(q - q.max())
        if q.sum() <= 0:
            return np.ones(len(members))
        return q


def _round_robin(per_cluster: list[np.ndarray], probs: list[np.ndarray], sizes: np.ndarray):
    """Interleave clusters (largest first) so that any prefix of the ranking stays spread over clusters."""
    cluster_order = np.lexsort((np.arange(len(sizes)), -sizes))
    rows, scores, clusters = [], [], []
    depth = max((len(p) for p in per_cluster), default=0)
    for j in range(depth):
        for c in cluster_order:
            if j < len(per_cluster[c]):
                rows.append(per_cluster[c][j])
                scores.append(probs[c][j])
                clusters.append(c)
    return np.array(rows, dtype=np.int64), np.array(scores), np.array(clusters, dtype=np.int64)

"""Label sets of the rows: from a labels column, or from nested k-means clusters of the embeddings."""

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ...errors import InputError, ResourceError
from ..clustering import kmeans


@dataclass
class Labels:
    """Row labels as a binary indicator plus one embedding per label.

    indicator:  (N, K) CSR, 1.0 where row i carries label k.
    names:      K label names.
    embeddings: (K, D) float32 unit-norm label embeddings.
    blocks:     label index ranges [start, end) that may be linked (one per k-means level; one in all for a labels column).
    source:     "labels" or "clusters".
    set_ids:    (N,) id of each row's label set (equal sets, equal ids).
    coarse_assignments: (N,) coarsest-level cluster of each row (clusters only), else None.
    """

    indicator: sp.csr_matrix
    names: list[str]
    embeddings: np.ndarray
    blocks: list[tuple[int, int]]
    source: str
    set_ids: np.ndarray
    coarse_assignments: np.ndarray | None = None
    cluster_sizes: list[int] | None = None
    nested: bool = False
    finest: np.ndarray | None = None  # (N,) finest-level cluster of each row (clusters only)


def cluster_level_sizes(
    n_rows: int,
    levels: int,
    base: int | None,
    *, budget: int | None = None,
    clusters_per_budget: float = 1.0,
    spacing: str = "halving",
) -> list[int]:
    """Distinct k-means sizes, capped at N/4 so clusters keep a few rows each (at least 1).

    base given: base * 2^l. Else, with a budget, the finest level has budget * clusters_per_budget
    clusters and the coarser ones half as many each ('halving'), or sizes run geometrically from
    round(N^(1/3)) up to the finest ('geometric'). No budget: round(N^(1/3)) * 2^l.
    """
    if base is None and budget is not None and spacing == "geometric" and levels > 1:
        cap = max(1, n_rows // 4)
        finest = min(max(1.0, budget * clusters_per_budget), cap, n_rows)
        coarsest = min(max(1.0, round(n_rows ** (1.0 / 3.0))), finest)
        sizes = []
        for level in range(levels):
            k = int(round(coarsest * (finest / coarsest) ** (level / (levels - 1))))
            if k not in sizes:
                sizes.append(k)
        return sizes
    if base is None:
        if budget is not None:
            base = max(1, round(budget * clusters_per_budget / 2 ** (levels - 1)))
        else:
            base = max(1, round(n_rows ** (1.0 / 3.0)))
    cap = max(1, n_rows // 4)
    sizes: list[int] = []
    for level in range(levels):
        k = int(min(base * 2**level, cap, n_rows))
        if k not in sizes:
            sizes.append(k)
    return sizes


def nested_kmeans(embeddings: np.ndarray, sizes: list[int], seed: int, n_iter: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Hierarchical k-means: level 0 clusters all rows into sizes[0]; level l+1 splits each level-l
    cluster c of n_c rows into max(1, round(sizes[l+1] * n_c / N)) clusters (at most n_c) by k-means on
    its rows only. Returns (centroids, assignments) per level. Cost O(N D (sizes[0] + sum of split
    factors)) instead of O(N D sum(sizes)), so a finest level of ~budget clusters stays cheap at 1M rows.
    """
    n = embeddings.shape[0]
    first = kmeans(embeddings, sizes[0], seed=seed, n_iter=n_iter)
    levels = [(first.centroids, first.assignments)]
    parent = first.assignments
    for depth, k in enumerate(sizes[1:], start=1):
        order = np.argsort(parent, kind="stable")
        counts = np.bincount(parent, minlength=int(parent.max()) + 1)
        starts = np.concatenate([[0], np.cumsum(counts)])
        assignments = np.empty(n, dtype=np.int64)
        centroids: list[np.ndarray] = []
        offset = 0
        for c in range(len(counts)):
            rows = order[starts[c] : starts[c + 1]]
            if len(rows) == 0:
                continue
            k_c = int(min(len(rows), max(1, round(k * len(rows) / n))))
            sub = kmeans(embeddings[rows], k_c, seed=seed + 7919 * depth + c, n_iter=n_iter)
            assignments[rows] = offset + sub.assignments
            centroids.append(sub.centroids)
            offset += sub.k
        levels.append((np.concatenate(centroids), assignments))
        parent = assignments
    return levels


def cluster_labels(
    embeddings: np.ndarray,
    sizes: list[int],
    seed: int,
    *, n_iter: int,
    center: np.ndarray | None = None,
    nested: bool = False,
) -> Labels:
    n = embeddings.shape[0]
    names: list[str] = []
    centroid_blocks: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    blocks: list[tuple[int, int]] = []
    coarse = None
    offset = 0
    if nested:
        levels = nested_kmeans(embeddings, sizes, seed, n_iter)
    else:
        levels = [(c.centroids, c.assignments) for c in (kmeans(embeddings, k, seed=seed, n_iter=n_iter) for k in sizes)]
    sizes = [len(c) for c, _ in levels]
    for k, (centroids, assignments) in zip(sizes, levels):
        if coarse is None:
            coarse = assignments
        centroid_blocks.append(_unit_rows(centroids if center is None else centroids - center))
        cols.append(offset + assignments)
        names.extend(f"c{k}:{j}" for j in range(k))
        blocks.append((offset, offset + k))
        offset += k
    n_levels = len(sizes)
    indptr = np.arange(0, n * n_levels + 1, n_levels, dtype=np.int64)
    indices = np.stack(cols, axis=1).reshape(-1).astype(np.int32)
    indicator = sp.csr_matrix((np.ones(n * n_levels), indices, indptr), shape=(n, offset))
    _, set_ids = np.unique(np.stack(cols, axis=1), axis=0, return_inverse=True)
    return Labels(
        indicator=indicator,
        names=names,
        embeddings=np.concatenate(centroid_blocks).astype(np.float32),
        blocks=blocks,
        source="clusters",
        set_ids=set_ids.ravel().astype(np.int64),
        coarse_assignments=coarse,
        cluster_sizes=list(sizes),
        nested=nested,
        finest=cols[-1],
    )


def column_labels(
    embeddings: np.ndarray,
    labels: list[tuple[str, ...]],
    center: np.ndarray | None = None,
    memory_budget_bytes: float = math.inf,
) -> Labels:
    """Labels from a labels column; a label's embedding is the normalised mean of its rows' embeddings (minus `center`)."""
    n = embeddings.shape[0]
    if len(labels) != n:
        raise InputError(f"The labels column has {len(labels)} entries for {n} rows; give every row a (possibly empty) label list.")
    vocabulary = sorted({label for row in labels for label in row})
    if not vocabulary:
        raise InputError("The labels column has no labels in any row; fill it, or run MIG with label_source='clusters'.")
    needed = len(vocabulary) * embeddings.shape[1] * 12
    if needed > memory_budget_bytes:
        raise ResourceError(
            f"The labels column has {len(vocabulary):,} distinct labels, whose embeddings need {needed / 2**30:.1f} GiB; "
            "merge rare labels, use label_source='clusters', or raise memory_budget_gib."
        )
    index = {label: i for i, label in enumerate(vocabulary)}
    counts = np.empty(n, dtype=np.int64)
    set_ids = np.empty(n, dtype=np.int64)
    set_index: dict[tuple[int, ...], int] = {}
    flat: list[int] = []
    for i, row in enumerate(labels):
        ids = tuple(sorted({index[label] for label in row}))
        counts[i] = len(ids)
        set_ids[i] = set_index.setdefault(ids, len(set_index))
        flat.extend(ids)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    indicator = sp.csr_matrix(
        (np.ones(len(flat)), np.asarray(flat, dtype=np.int32), indptr), shape=(n, len(vocabulary))
    )
    sums = np.asarray(indicator.T.astype(np.float32) @ embeddings, dtype=np.float64)
    if center is not None:
        sums -= np.diff(indicator.tocsc().indptr)[:, None] * center[None, :]
    return Labels(
        indicator=indicator,
        names=vocabulary,
        embeddings=_unit_rows(sums),
        blocks=[(0, len(vocabulary))],
        source="labels",
        set_ids=set_ids,
    )


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 0, x / np.maximum(norms, 1e-30), 0.0).astype(np.float32)

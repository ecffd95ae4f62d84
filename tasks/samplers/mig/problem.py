"""One MIG problem built from a selection input: labels, label graph, candidates, and seeded tie ranks."""

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ...errors import InputError, ResourceError
from ..base import SelectionInput
from .candidates import Candidates, build_candidates
from .greedy import GAIN_CHUNK
from .information import Phi
from .label_graph import LabelGraph, build_label_graph, propagation_matrix
from .labels import Labels, _unit_rows, cluster_labels, cluster_level_sizes, column_labels
from .options import MIGOptions


# Tag-free labels: flat k-means per level while rows x total clusters stays below this (a few seconds on one core).
FLAT_KMEANS_WORK = 3e7


def tie_ranks(
    n: int,
    seed: int,
    tie_break: str,
    *, set_ids: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    center: np.ndarray | None = None,
    central_share: float = 1.0,
    reference_ids: np.ndarray | None = None,
) -> np.ndarray:
    """Distinct ranks for breaking ties (lower first): a seeded permutation, or the row index.

    With central_share < 1, the ceil(central_share * n_g) rows of each label set g nearest the set's mean
    direction rank before every other row (in seeded order among themselves), so a label set offers a
    typical row before a peripheral one.
    """
    if tie_break == "row":
        base = np.arange(n, dtype=np.int64)
    else:
        # A stream of its own, so that it does not move with the k-means seeds.
        base = np.random.default_rng([int(seed), 0x4D4947]).permutation(n).astype(np.int64)
    if central_share >= 1.0 or set_ids is None or embeddings is None:
        return base
    groups = np.unique(set_ids, return_inverse=True)[1].ravel()
    refs = groups if reference_ids is None else np.unique(reference_ids, return_inverse=True)[1].ravel()
    shift = None if center is None else center.astype(np.float32)

    def unit_chunk(start: int) -> np.ndarray:
        x = np.array(embeddings[start : start + GAIN_CHUNK], dtype=np.float32)
        if shift is not None:
            x -= shift
        x /= np.maximum(np.sqrt(np.einsum("ij,ij->i", x, x)), 1e-30)[:, None]
        return x

    # In chunks: a centred, normalised copy of 1M x 384 embeddings would be 1.4 GiB more at peak.
    n_refs = int(refs.max()) + 1
    means = np.zeros((n_refs, embeddings.shape[1]), dtype=np.float64)
    for start in range(0, n, GAIN_CHUNK):
        x = unit_chunk(start)
        member = sp.csr_matrix(
            (np.ones(len(x)), (refs[start : start + len(x)], np.arange(len(x)))), shape=(n_refs, len(x))
        )
        means += member @ x.astype(np.float64)
    means = _unit_rows(means)
    centrality = np.empty(n, dtype=np.float32)
    for start in range(0, n, GAIN_CHUNK):
        x = unit_chunk(start)
        centrality[start : start + len(x)] = np.einsum("ij,ij->i", x, means[refs[start : start + len(x)]])
    order = np.lexsort((base, -centrality, groups))
    sizes = np.bincount(groups)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n) - np.repeat(starts, sizes)
    core = position < np.ceil(central_share * sizes[groups])
    ranks = np.empty(n, dtype=np.int64)
    ranks[np.lexsort((base, ~core))] = np.arange(n)
    return ranks


@dataclass
class MIGProblem:
    """Everything MIG builds before the greedy; tests and benchmarks use it directly."""

    labels: Labels
    graph: LabelGraph
    propagation: sp.csr_matrix
    candidates: Candidates
    phi: Phi
    prop_weight: float = 1.0


def build_problem(data: SelectionInput, options: MIGOptions, seed: int, budget: int | None = None) -> MIGProblem:
    n = data.n_rows
    budget_bytes = options.memory_budget_gib * 2**30
    source = options.label_source
    # Sentence embeddings share a common direction; centring makes label similarity about where labels differ.
    center = data.embeddings.mean(axis=0, dtype=np.float64) if options.center_label_embeddings else None
    if source == "auto":
        source = "labels" if data.labels is not None else "clusters"
    if source == "labels":
        if data.labels is None:
            raise InputError("MIG label_source='labels' needs a labels column; pass one, or use label_source='clusters'.")
        labels = column_labels(data.embeddings, data.labels, center, budget_bytes)
    else:
        spacing = options.level_spacing
        sizes = cluster_level_sizes(n, options.cluster_levels, options.base_clusters, budget=budget, clusters_per_budget=options.clusters_per_budget)
        nested = options.nested_clusters
        if nested is None:
            nested = n * sum(sizes) > FLAT_KMEANS_WORK
        if spacing == "auto":
            spacing = "geometric" if nested else "halving"
        if spacing == "geometric":
            sizes = cluster_level_sizes(
                n, options.cluster_levels, options.base_clusters, budget=budget, clusters_per_budget=options.clusters_per_budget, spacing="geometric"
            )
        label_bytes = sum(sizes) * data.embeddings.shape[1] * 4
        if label_bytes > budget_bytes:
            raise ResourceError(
                f"MIG's {sum(sizes)} cluster labels need {label_bytes / 2**30:.1f} GiB of centroids; lower base_clusters or cluster_levels."
            )
        labels = cluster_labels(data.embeddings, sizes, seed, n_iter=options.kmeans_iter, center=center, nested=nested)
    max_edges = int(budget_bytes / 4 / 24)  # the graph may use a quarter of the budget (row, col, weight, CSR copies)
    prop_weight = options.prop_weight
    if prop_weight is None:
        # Asking for a graph (an explicit degree or tau) asks for propagation, also on cluster labels.
        explicit_graph = options.target_degree is not None or options.similarity_threshold is not None
        prop_weight = 1.0 if labels.source == "labels" or explicit_graph else 0.0
    if prop_weight > 0:
        graph = build_label_graph(
            labels, options.target_degree, options.similarity_threshold, max_edges=max_edges, relative_degree=options.relative_degree, kind=options.graph
        )
    else:
        # No propagation: A = I whatever the graph, so none is built (K x K similarity search saved).
        k_labels = len(labels.names)
        graph = LabelGraph(offdiag=sp.csr_matrix((k_labels, k_labels)), thresholds=[math.inf] * len(labels.blocks))
    propagation = propagation_matrix(graph.offdiag, prop_weight, options.propagation)
    candidates = build_candidates(
        labels.indicator,
        labels.set_ids,
        data.quality,
        propagation=propagation,
        normalize_by_label_count=options.normalize_by_label_count,
        memory_budget_bytes=budget_bytes,
        tie_rank=tie_ranks(
            n,
            seed,
            options.tie_break,
            set_ids=labels.set_ids,
            embeddings=data.embeddings,
            center=center,
            central_share=options.central_share,
            reference_ids=labels.finest if options.central_reference == "finest" else None,
        ),
    )
    phi = Phi(kind=options.phi, b=options.phi_b, alpha=options.phi_alpha)
    return MIGProblem(
        labels=labels, graph=graph, propagation=propagation, candidates=candidates, phi=phi, prop_weight=prop_weight
    )

"""MIG: greedy maximisation of information gain over a label graph.

Chen et al., "MIG: Automatic Data Selection for Instruction Tuning by Maximizing Information Gain in
Semantic Space" (ACL Findings 2025, arXiv 2504.13835); reference code yichengchen24/MIG.

Each row d carries a label set L_d and a quality s_d; its raw label vector is e_d = s_d * 1[L_d]
(or s_d / |L_d| per label with `normalize_by_label_count`, the code's `--norm`). Labels are linked
by cosine similarity above a threshold tau, W' = diag(W) + alpha * offdiag(W), and information is
propagated along a non-negative A built from W': e_hat_d = A e_d. The information of a set S is

    E(S) = sum_k phi( [sum_{d in S} e_hat_d]_k ),   phi concave: x^b (paper b=0.8, default here 0.5) or 1 - exp(-a x),

and rows are picked greedily, one at a time, by marginal gain. The defaults below are x^0.5 and
exact gains.

Paper vs reference code, both offered:
- gain="exact" (default): the paper's marginal gain E(S + d) - E(S) (Eqs. 9-11), for which the
  (1 - 1/e) greedy guarantee holds (E is monotone submodular, App. C).
- gain="linearized": the reference code's first-order gain <e_hat_d, phi'(x_S)>, with
  phi'(x) = b (x + 1e-6)^(b-1) for the power phi as in `MIGSampler._d_phi_pow`.

Departures from the paper and the reference code, and why. The measurements are the protocol of
bench/tune_quality.py on the demo data (8,800 rows, 8 families, 44 templates; pool 7,040; budgets 1%,
5%, 10%; mean of seeds 0-2; random over seeds 0-4), with no labels and no quality column, as
`selectflow select --sampler mig` runs; bench/results/mig.md has the tables. The former defaults scored
F1 0.70 / templates 0.77 / cover 0.508 / near-duplicates 0.44 at 5% against random's 0.97 / 1.00 /
0.422 / 0.055: the selection collapsed onto 38 of 453 label sets (up to 47 rows from one).

- Propagation conserves mass (`propagation`, default "conserve"). Eq. 6 and the code use the
  row-stochastic A = D^-1 W' (the code's e P with P = W' / W'.sum(axis=0)): label q then hands out
  sum_p w'_pq / d_p units, 0.61-1.49 on the demo's former label graph, so rows whose labels border
  low-degree labels carry more information for no reason but the graph's shape. Here A = W' D^-1 is
  column-stochastic: each label splits exactly its own mass over itself and its neighbours, so a row's
  propagated mass equals s_d |L_d|. On the former tag-free labels with seeded ties and a relative degree
  of 0.05, it took 5%-F1 from 0.94 to 0.97 and near-duplicates from 0.39 to 0.19 against the paper's A. "paper" keeps Eq. 6. Two more mass-conserving
  forms are offered: "balanced" (S W' S, doubly stochastic by Sinkhorn scaling: a label also receives
  exactly one unit when every label is picked equally) and "share" (each label keeps 1/(1+alpha)
  whatever its degree). With conserve, labels that only receive little (few neighbours) are still
  under-saturated relative to hubs; balanced and share reduce that (5% near-duplicates 0.07 and 0.05
  against 0.10 for conserve at relative_degree 0.02) but were not measured with a labels column.
- The degree is relative to the number of labels (`relative_degree`, default 0.02 of the other labels
  of a block). The former absolute `target_degree=8` made the coarse k-means level (19 labels) a
  near-complete graph, with tau clamped to 0 (all positive similarities linked): every label set then
  propagated to every label and nothing distinguished them. `target_degree` still sets an absolute
  degree; `graph="knn"` gives every label the same number of out-neighbours (measured worse: labels
  outside everyone's neighbour lists get over-sampled).
- Tag-free labels: no propagation between clusters by default (`prop_weight` empty: 1.0 with a labels
  column as in the paper or when target_degree/similarity_threshold is given, else 0 for cluster labels). The multi-granularity levels already share a pick's
  mass with the neighbouring clusters of its coarser clusters. Every propagation variant tried on
  cluster labels (conserve/balanced/share, relative degree 0.005-0.05, alpha 0.1-1, kNN or threshold
  graphs, phi x^0.5, x^0.8 or 1-exp) scored worse than none on coverage distance and near-duplicates:
  concave phi rewards spreading a row's mass thinly, so rows of hub clusters (a dense template split
  into many mutually similar clusters) kept their gain and were picked 5-7 times each. The paper's
  propagation gain (+2.8 points) was measured with InsTag tags, not clusters.
- Tag-free labels follow the budget (`clusters_per_budget`, default 1): the finest k-means level has
  about B clusters and the coarser ones B/2 and B/4, instead of round(N^(1/3)) x {1, 2, 4} (19, 38, 76
  at N = 7,040 whatever the budget), which made a 704-row budget take ~9 rows per finest label and gave
  near-duplicates. With ~one row per finest cluster, the greedy's preference for fresh labels spreads
  the budget over the space. Above N x (total clusters) = 3e7 the levels are nested k-means (each
  cluster split into the next level's clusters, sizes geometric from N^(1/3) to B), O(N D (N^(1/3) +
  split factors)) instead of O(N D B): flat levels took 28 s at 40k rows (B = 2,000), and grow as N B.
  Select times (bench/results/mig.md): 10k 1.9 s, 100k 7 s, 1M 59 s and 2.5 GiB at 5%.
  Nested levels scored slightly worse on the demo (5% cover 0.423 against 0.419 flat and 0.422 random).
- Ties are seeded (`tie_break`, default "seeded"). With constant quality every row of a label set ties,
  and ties went to the lowest row index, so the file order chose the rows (often consecutive rows) and
  the seed changed nothing with a labels column. Now a seeded permutation breaks ties; "row" restores
  the argmax order of the reference code. The seed also seeds the k-means of tag-free labels.
- Typical rows first (`central_share`, default 0.5): among rows of equal gain (with constant quality,
  all rows of a label set), the half of each label set nearest the mean direction of the rows' finest
  cluster (`central_reference`) comes before the other half, in seeded order within each half. MIG's
  objective cannot tell rows of a label set apart, so this changes no gain, only which tied row is
  taken. Without it MIG lost to random on coverage distance at 1% (0.551 against 0.542); taking only
  the most typical row (central_share near 0) loses templates, as k-means medoids do.
- phi = x^0.5 (`phi_b`, paper default 0.8; the paper allows any x^b with 0 < b < 1). Once the causes
  above were fixed, x^0.5 gave the same F1, templates and coverage (within 0.002) and fewer
  near-duplicates on both test splits tried (5%: 0.004 and 0.007 against 0.013 and 0.010; 10%: 0.013
  and 0.019 against 0.022 and 0.027), and the same scores on the bundled corpus. 1 - exp(-3x) scored
  as x^0.5. `phi_b=0.8` restores the paper.
- Labels. Without a `labels` column, rows are labelled by the k-means levels above (label names like
  "c352:17"), and label-label similarity is the cosine similarity of the centroids within one level (no
  edges across levels). With a labels column, a label's embedding is the normalised mean of the
  embeddings of the rows carrying it: no extra encoder call on the label strings (the code embeds the
  tag strings with E5-Mistral). Both centroids and label means are centred on the corpus mean first
  (`center_label_embeddings`): uncentred, the means of frequent labels all point toward the corpus
  mean, become hubs of the graph, and MIG then favours rows with common labels.
- Threshold. The code's tau=0.9 is calibrated to E5-Mistral tag similarities; here tau is the similarity
  at which labels have the target degree on average (estimated from each label's nearest labels), and
  `similarity_threshold` sets tau explicitly.
- Scale. The code keeps a dense N x K propagated matrix and scores every row at every step
  (O(B N K)). Here the propagated vectors are sparse (CSR), one per distinct label set; rows sharing
  a label set differ only by their quality factor, and both gains grow with it, so a label set is a
  single candidate offering its best remaining row (equal qualities in tie-rank order). Selection is
  lazy greedy (Minoux): both gains only decrease as S grows (e_hat >= 0, phi' non-increasing), so a
  stale gain is an upper bound and only the top of a heap is re-evaluated. Ties go to the lower tie
  rank, so the lazy greedy picks exactly what a plain greedy over rows picks with the same ranks
  (barring two rows of one label set whose qualities differ by so little that their gains round to the
  same float).
- Rounds. Rows in `previous_rows` count as already selected: their information is the starting
  point, and they are never selected again.

Against the reference code's formulation on the same tag-free labels (bench/bench_mig.py: Eq. 6, tau
0.9, x^0.8, linearised gain, dense loop, ties to the lowest row), the default scores better on F1,
templates and coverage at 1%, 5% and 10% of the demo pool, and better or equal on near-duplicates
(both 0 at 1%): at 5%, 0.984 / 1.000 / 0.416 / 0.004 against 0.975 / 0.742 / 0.427 / 0.008 (and
0.948 / 0.841 / 0.448 / 0.123 on the former N^(1/3) labels). See bench/results/mig.md.
"""

import heapq
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ..errors import ConfigError, InputError, ResourceError
from .base import Sampler, SamplerOptions, Selection, SelectionInput
from .clustering import kmeans

# Keeps the power phi's derivative finite at 0 (reference code `phi_a`); phi'(0) = 0.8 * 1e-6^-0.2 ~ 12.7.
POW_DERIVATIVE_OFFSET = 1e-6
# Calibrating tau looks at this many nearest labels per target neighbour.
CALIBRATION_NEIGHBOURS_PER_DEGREE = 4
# Rows whose gains are evaluated together in one vectorised call (bounds temporary memory).
GAIN_CHUNK = 65536
# Candidates re-evaluated together at the top of the lazy heap before checking the next bound.
LAZY_BLOCK = 4
MAX_CURVE_POINTS = 500
# Tag-free labels: flat k-means per level while rows x total clusters stays below this (a few seconds on one core).
FLAT_KMEANS_WORK = 3e7


class MIGOptions(SamplerOptions):
    label_source: Literal["auto", "labels", "clusters"] = Field(
        default="auto",
        description="Where row labels come from: the corpus labels column ('labels'), multi-granularity k-means clusters of the embeddings ('clusters'), or the labels column when there is one and clusters otherwise ('auto').",
    )
    cluster_levels: int = Field(
        default=3,
        ge=1,
        le=6,
        description="Tag-free labels: number of k-means granularities (see clusters_per_budget and level_spacing); every row gets one label per level.",
    )
    clusters_per_budget: float = Field(
        default=1.0,
        gt=0.0,
        le=100.0,
        description="Tag-free labels: the finest level has this many clusters per selected row (budget x this, capped at N/4), and each coarser level half as many. Ignored when base_clusters is set.",
    )
    level_spacing: Literal["auto", "halving", "geometric"] = Field(
        default="auto",
        description="Tag-free labels without base_clusters: coarser levels have half as many clusters as the next finer ('halving'), or sizes run geometrically from round(N^(1/3)) up to the finest level ('geometric'). 'auto': halving for flat k-means, geometric for nested (a coarsest level of budget/4 clusters would dominate its cost).",
    )
    nested_clusters: bool | None = Field(
        default=None,
        description="Tag-free labels: split each cluster of a level into the next level's clusters (hierarchical k-means, cheap at any size) instead of one k-means over all rows per level. Empty: flat while N x (total clusters) <= 3e7 (seconds on one core), nested beyond.",
    )
    base_clusters: int | None = Field(
        default=None,
        ge=2,
        le=100_000,
        description="Tag-free labels: clusters at the coarsest level, as an absolute count (level l has base_clusters * 2^l). Empty: from the budget (clusters_per_budget).",
    )
    kmeans_iter: int = Field(default=20, ge=1, le=300, description="Tag-free labels: Lloyd iterations of each FAISS k-means.")
    relative_degree: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="Average neighbours per label as a fraction of the other labels it may link to (its k-means level, or the whole vocabulary); tau is calibrated to it. Ignored when target_degree or similarity_threshold is set. 0 disables propagation.",
    )
    target_degree: float | None = Field(
        default=None,
        ge=0.0,
        le=1000.0,
        description="Absolute average number of neighbours per label (the former default was 8); overrides relative_degree. Ignored when similarity_threshold is set. 0 disables propagation.",
    )
    graph: Literal["threshold", "knn"] = Field(
        default="threshold",
        description="Label graph: 'threshold' links labels with similarity >= tau (the paper; tau calibrated to the degree), 'knn' sends each label's mass to its relative_degree*(K-1) (or target_degree) nearest labels, so every label spreads over the same number of others.",
    )
    propagation: Literal["share", "balanced", "conserve", "paper"] = Field(
        default="conserve",
        description="'balanced': A = S W' S, doubly stochastic (Sinkhorn scaling): each label hands out exactly its own mass and, when every label is selected equally, receives exactly as much, so the graph shifts no selection toward labels with few neighbours. 'conserve': each label hands out exactly its own mass, A = W' D^-1 (column-stochastic). 'paper': Eq. 6 and the reference code, A = D^-1 W' (row-stochastic), under which a label injects more or less than its mass depending on its neighbours' degrees.",
    )
    similarity_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Explicit tau: labels are linked when their cosine similarity is at least this (the paper uses 0.9 with E5-Mistral tag embeddings). Empty: calibrated from relative_degree (or target_degree).",
    )
    prop_weight: float | None = Field(
        default=None,
        ge=0.0,
        le=10.0,
        description="Propagation weight alpha of neighbouring labels, W' = diag(W) + alpha*offdiag(W) (paper default 1.0; 0 means no propagation). Empty: 1.0 with a labels column or an explicit target_degree/similarity_threshold; 0 for tag-free cluster labels otherwise, whose coarser levels already share a pick's mass with neighbouring clusters (propagation between clusters measured worse on every score).",
    )
    phi: Literal["pow", "exp"] = Field(
        default="pow",
        description="Concave information function phi: 'pow' is x^phi_b (paper default), 'exp' is 1 - exp(-phi_alpha * x).",
    )
    phi_b: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Exponent b of phi(x) = x^b (the paper's default is 0.8); 1 makes MIG a plain top-B by propagated quality.",
    )
    phi_alpha: float = Field(default=1.0, gt=0.0, le=100.0, description="Rate of phi(x) = 1 - exp(-phi_alpha * x).")
    gain: Literal["exact", "linearized"] = Field(
        default="exact",
        description="Marginal gain: 'exact' E(S+d)-E(S) as in the paper, or 'linearized' <e_hat_d, phi'(x_S)> as in the reference code.",
    )
    normalize_by_label_count: bool = Field(
        default=False,
        description="Split a row's quality over its labels (s/|L|, the reference code's --norm) instead of giving each label the full quality.",
    )
    center_label_embeddings: bool = Field(
        default=True,
        description="Subtract the corpus mean embedding before comparing labels (label means or centroids). Without it, frequent labels' means all point to the corpus mean and become hubs of the label graph.",
    )
    tie_break: Literal["seeded", "row"] = Field(
        default="seeded",
        description="Order among rows of equal gain (with constant quality, every row of a label set): 'seeded' a permutation drawn from the seed, 'row' the lowest row first (the reference code's argmax).",
    )
    central_share: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Among rows of equal gain, the share of each label set nearest its mean direction that goes before the rest (in seeded order among themselves). 1: no preference, seeded order only; near 0: the most typical row of a label set first.",
    )
    central_reference: Literal["set", "finest"] = Field(
        default="finest",
        description="What central_share measures typicality against: the row's label set ('set'), or its finest cluster ('finest', tag-free labels only; with a labels column it means 'set'). With 'finest', a row in a small label set at a cluster's edge (where the levels disagree) is not typical just because its set is small.",
    )
    memory_budget_gib: float = Field(
        default=4.0,
        ge=0.01,
        le=1024.0,
        description="Largest memory, in GiB, that the label graph and the sparse propagated label vectors may take; beyond it the sampler stops with advice instead of running out of memory.",
    )


# ---------------------------------------------------------------------------------------------
# Information function


@dataclass(frozen=True)
class Phi:
    """phi and what the greedy needs of it; all functions are elementwise on float64 arrays."""

    kind: Literal["pow", "exp"] = "pow"
    b: float = 0.8
    alpha: float = 1.0

    @property
    def linear(self) -> bool:
        return self.kind == "pow" and self.b == 1.0

    def value(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "exp":
            return -np.expm1(-self.alpha * x)
        return x if self.linear else np.power(x, self.b)

    def derivative(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "exp":
            return self.alpha * np.exp(-self.alpha * x)
        if self.linear:
            return np.ones_like(x)
        return self.b * np.power(x + POW_DERIVATIVE_OFFSET, self.b - 1.0)

    def cache(self, x: np.ndarray) -> np.ndarray:
        """Per-label value that `increment` needs: phi(x) for pow, exp(-alpha x) for exp."""
        if self.kind == "exp":
            return np.exp(-self.alpha * x)
        return self.value(x)

    def increment(self, x: np.ndarray, cached: np.ndarray, e: np.ndarray) -> np.ndarray:
        """phi(x + e) - phi(x), given cached = self.cache(x)."""
        if self.kind == "exp":
            # exp(-a x) * (1 - exp(-a e)): a product, so it never increases with x even in floating point.
            return cached * -np.expm1(-self.alpha * e)
        if self.linear:
            return e
        return np.power(x + e, self.b) - cached


def information(x: np.ndarray, phi: Phi) -> float:
    """E = sum_k phi(x_k) for a propagated label-mass vector x."""
    return float(phi.value(np.asarray(x, dtype=np.float64)).sum())


# ---------------------------------------------------------------------------------------------
# Labels


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
    budget: int | None = None,
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
    n_iter: int,
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


# ---------------------------------------------------------------------------------------------
# Label graph and propagation


def calibrate_threshold(embeddings: np.ndarray, target_degree: float) -> float:
    """The similarity at which labels have `target_degree` neighbours on average.

    Estimated from each label's CALIBRATION_NEIGHBOURS_PER_DEGREE * target_degree nearest labels
    (exact FAISS inner-product search), so it is exact unless some label has more neighbours
    than that above the threshold. Returns +inf (no edges) for a degree of 0 or a single label.
    """
    import faiss

    k_labels = embeddings.shape[0]
    if target_degree <= 0 or k_labels < 2:
        return math.inf
    n_neighbours = int(min(k_labels - 1, math.ceil(CALIBRATION_NEIGHBOURS_PER_DEGREE * target_degree)))
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    sims, ids = index.search(embeddings, n_neighbours + 1)
    off_diagonal = ids != np.arange(k_labels)[:, None]
    # A label may miss itself in its list only when it has exact duplicates; keep n_neighbours others per row.
    keep = off_diagonal & (np.cumsum(off_diagonal, axis=1) <= n_neighbours) & (ids >= 0)
    values = np.sort(sims[keep].astype(np.float64))[::-1]
    wanted = int(round(target_degree * k_labels))
    if wanted <= 0:
        return math.inf
    return float(values[min(wanted, len(values)) - 1])


def similarity_graph(embeddings: np.ndarray, threshold: float, max_edges: int) -> sp.csr_matrix:
    """Off-diagonal W: w_pq = cos(p, q) where cos >= threshold and cos > 0, symmetric, zero diagonal.

    Exact FAISS range search in blocks of labels; never a dense K x K matrix. Raises ResourceError
    when the graph would have more than `max_edges` edges.
    """
    import faiss

    k_labels = embeddings.shape[0]
    if k_labels < 2 or not math.isfinite(threshold) or threshold > 1.0:
        return sp.csr_matrix((k_labels, k_labels))
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    # range_search keeps scores strictly above the radius; step one float32 down so equality counts.
    radius = float(np.nextafter(np.float32(max(threshold, 0.0)), np.float32(-np.inf)))
    rows, cols, vals = [], [], []
    n_edges = 0
    # One block's results can reach block * K pairs before they are counted: keep that within max_edges.
    step = int(max(1, min(4096, max_edges // k_labels)))
    for start in range(0, k_labels, step):
        block = embeddings[start : start + step]
        lims, sims, ids = index.range_search(block, radius)
        src = start + np.repeat(np.arange(len(block)), np.diff(lims.astype(np.int64)))
        keep = (ids != src) & (sims >= threshold) & (sims > 0)
        n_edges += int(keep.sum())
        if n_edges > max_edges:
            raise ResourceError(
                f"The MIG label graph would have more than {max_edges:,} edges at similarity threshold {threshold:.3f}; "
                "raise similarity_threshold, lower relative_degree (or target_degree), or raise memory_budget_gib."
            )
        rows.append(src[keep])
        cols.append(ids[keep])
        vals.append(sims[keep].astype(np.float64))
    w = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(k_labels, k_labels)
    )
    # FAISS may round cos(p, q) and cos(q, p) differently; keep the graph symmetric.
    return w.maximum(w.T).tocsr()


SINKHORN_TOL = 1e-10
SINKHORN_MAX_ITER = 10_000


def doubly_stochastic(w_prime: sp.csr_matrix) -> sp.csr_matrix:
    """S W' S with S diagonal such that every row and every column sums to 1 (symmetric Sinkhorn scaling).

    W' must be symmetric, non-negative, with a positive diagonal; then the scaling exists and is unique
    (Sinkhorn-Knopp), and the damped fixed point s <- sqrt(s / (W' s)) converges to it.
    """
    w_prime = w_prime.maximum(w_prime.T).tocsr()
    s = 1.0 / np.sqrt(np.asarray(w_prime.sum(axis=1)).ravel())
    for _ in range(SINKHORN_MAX_ITER):
        s = np.sqrt(s / (w_prime @ s))
        if np.abs(s * (w_prime @ s) - 1.0).max() < SINKHORN_TOL:
            break
    a = (sp.diags(s) @ w_prime @ sp.diags(s)).tocsr()
    # Rescale the last rounding away so columns sum to 1 to machine precision (mass conservation).
    return (a @ sp.diags(1.0 / np.asarray(a.sum(axis=0)).ravel())).tocsr()


def propagation_matrix(
    offdiag: sp.csr_matrix, prop_weight: float, mode: Literal["share", "balanced", "conserve", "paper"] = "paper"
) -> sp.csr_matrix:
    """The propagation A of e_hat = A e, non-negative, from W' = I + alpha W (W symmetric, D its row sums).

    mode="paper": A = D^-1 W', row-stochastic (paper Eq. 6). Equals the transpose of the reference code's
    column-normalised P = W' / W'.sum(axis=0), since W' is symmetric; e_hat = A e is the code's e P.
    Label q then hands out sum_p A_pq = sum_p w'_pq / d_p units, anywhere from below 1 to far above.
    mode="conserve": A = W' D^-1, column-stochastic: label q splits exactly its own mass over itself and
    its neighbours in proportion to w'_pq, so sum_p [A e]_p = sum_q e_q.
    """
    k_labels = offdiag.shape[0]
    w_prime = (sp.identity(k_labels, format="csr") + prop_weight * offdiag).tocsr()
    if mode == "balanced":
        return doubly_stochastic(w_prime)
    if mode == "share":
        # Each label keeps 1/(1+alpha) of its mass and gives alpha/(1+alpha) to its neighbours in proportion to w_pq.
        out = np.asarray(offdiag.sum(axis=0)).ravel()
        spread = offdiag @ sp.diags(np.where(out > 0, 1.0 / np.maximum(out, 1e-300), 0.0))
        keep = np.where(out > 0, 1.0 / (1.0 + prop_weight), 1.0)
        give = np.where(out > 0, prop_weight / (1.0 + prop_weight), 0.0)
        return (sp.diags(keep) + spread @ sp.diags(give)).tocsr()
    if mode == "conserve":
        col_sums = np.asarray(w_prime.sum(axis=0)).ravel()
        return (w_prime @ sp.diags(1.0 / col_sums)).tocsr()
    row_sums = np.asarray(w_prime.sum(axis=1)).ravel()
    return (sp.diags(1.0 / row_sums) @ w_prime).tocsr()


@dataclass
class LabelGraph:
    offdiag: sp.csr_matrix  # (K, K) thresholded similarities, zero diagonal
    thresholds: list[float]  # tau of each block (inf where a block has no edges)


def block_degree(n_labels: int, relative_degree: float, target_degree: float | None) -> float:
    """Target average degree in a block of n_labels: absolute when given, else a share of the other labels."""
    if target_degree is not None:
        return float(target_degree)
    return relative_degree * max(n_labels - 1, 0)


def knn_graph(embeddings: np.ndarray, degree: float) -> sp.csr_matrix:
    """Directed W[p, q] = cos(p, q) for the round(degree) nearest labels p of each label q (positive similarities only).

    Column q lists where label q sends mass: every label reaches the same number of others, so no label
    gains from being a hub. Exact FAISS inner-product search.
    """
    import faiss

    k_labels = embeddings.shape[0]
    m = int(min(k_labels - 1, round(degree)))
    if m <= 0:
        return sp.csr_matrix((k_labels, k_labels))
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    sims, ids = index.search(embeddings, m + 1)
    src = np.repeat(np.arange(k_labels), m + 1)
    ids, sims = ids.ravel(), sims.ravel().astype(np.float64)
    # Drop the label itself (or, for exact duplicates, one extra) so each keeps at most m others.
    keep = (ids != src) & (ids >= 0) & (sims > 0)
    keep &= (np.cumsum(keep.reshape(k_labels, m + 1), axis=1) <= m).ravel()
    return sp.csr_matrix((sims[keep], (ids[keep], src[keep])), shape=(k_labels, k_labels))


def build_label_graph(
    labels: Labels,
    target_degree: float | None,
    threshold: float | None,
    max_edges: int,
    relative_degree: float = 0.0,
    kind: Literal["threshold", "knn"] = "threshold",
) -> LabelGraph:
    k_labels = labels.embeddings.shape[0]
    parts, taus = [], []
    for start, end in labels.blocks:
        block = np.ascontiguousarray(labels.embeddings[start:end])
        degree = block_degree(end - start, relative_degree, target_degree)
        if kind == "knn" and threshold is None:
            if degree * (end - start) > max_edges:
                raise ResourceError(
                    f"The MIG label graph would have more than {max_edges:,} edges; lower relative_degree or raise memory_budget_gib."
                )
            part = knn_graph(block, degree)
            taus.append(float(part.data.min()) if part.nnz else math.inf)
            parts.append(part)
            continue
        tau = threshold if threshold is not None else calibrate_threshold(block, degree)
        # Negative similarities would make propagation weights negative; they never become edges.
        tau = max(tau, 0.0) if math.isfinite(tau) else tau
        taus.append(tau)
        parts.append(similarity_graph(block, tau, max_edges))
    offdiag = sp.block_diag(parts, format="csr") if len(parts) > 1 else parts[0]
    offdiag = sp.csr_matrix(offdiag, shape=(k_labels, k_labels))
    return LabelGraph(offdiag=offdiag, thresholds=taus)


# ---------------------------------------------------------------------------------------------
# Candidates: rows with the same label set share one propagated unit vector


@dataclass
class Candidates:
    """Propagated label vectors per distinct label set, and the rows carrying each set.

    Row i's propagated vector is e_hat_i = scale_i * unit[g_i] (scale = quality, or quality / |L| with
    normalize_by_label_count). Both gains grow with the scale for a fixed label set and fixed x, so
    inside a group only its highest-scale remaining row can be the greedy's choice: a group is one
    candidate, offering its rows in order of (scale descending, row ascending).

    unit:         (G, K) CSR float64, A 1[L_g] for label set g.
    member_rows:  rows grouped by label set, in offer order inside a group.
    member_scale: scale of each entry of member_rows.
    member_ptr:   (G + 1,) offsets of each group in member_rows.
    group_of_row, scale_of_row: (N,) per row.
    tie_rank:     (N,) distinct ranks; among equal gains (and, inside a group, equal scales) the lower rank goes first.
    """

    unit: sp.csr_matrix
    member_rows: np.ndarray
    member_scale: np.ndarray
    member_ptr: np.ndarray
    group_of_row: np.ndarray
    scale_of_row: np.ndarray
    tie_rank: np.ndarray

    @classmethod
    def one_per_row(cls, ehat_rows: sp.csr_matrix, tie_rank: np.ndarray | None = None) -> "Candidates":
        """Every row its own candidate (no grouping): the plain per-row formulation, for reference runs."""
        n = ehat_rows.shape[0]
        return cls(
            tie_rank=np.arange(n, dtype=np.int64) if tie_rank is None else np.asarray(tie_rank, dtype=np.int64),
            unit=sp.csr_matrix(ehat_rows, dtype=np.float64),
            member_rows=np.arange(n, dtype=np.int64),
            member_scale=np.ones(n),
            member_ptr=np.arange(n + 1, dtype=np.int64),
            group_of_row=np.arange(n, dtype=np.int64),
            scale_of_row=np.ones(n),
        )

    def ehat_rows(self, rows: np.ndarray | None = None) -> sp.csr_matrix:
        """Per-row propagated vectors (N, K), or those of `rows`, scaled exactly as the greedy scales them."""
        rows = np.arange(len(self.group_of_row)) if rows is None else np.asarray(rows, dtype=np.int64)
        out = self.unit[self.group_of_row[rows]].tocsr()
        out.data = out.data * np.repeat(self.scale_of_row[rows], np.diff(out.indptr))
        return out


def build_candidates(
    indicator: sp.csr_matrix,
    set_ids: np.ndarray,
    quality: np.ndarray | None,
    propagation: sp.csr_matrix,
    normalize_by_label_count: bool,
    memory_budget_bytes: float,
    tie_rank: np.ndarray | None = None,
) -> Candidates:
    n = indicator.shape[0]
    tie_rank = np.arange(n, dtype=np.int64) if tie_rank is None else np.asarray(tie_rank, dtype=np.int64)
    indicator = indicator.tocsr()
    indicator.sort_indices()
    label_counts = np.diff(indicator.indptr)
    scale = np.ones(n) if quality is None else np.array(quality, dtype=np.float64)
    if normalize_by_label_count:
        scale = scale / np.maximum(label_counts, 1)
    _, first, group_of_row = np.unique(set_ids, return_index=True, return_inverse=True)
    group_of_row = group_of_row.ravel().astype(np.int64)
    n_groups = len(first)
    # nnz(unit) <= sum over a set's labels of that label's row count in A: check it before multiplying.
    per_label = np.diff(propagation.tocsr().indptr).astype(np.float64)
    nnz_bound = float((indicator[first] @ per_label).sum())
    needed = nnz_bound * 12 + n * 40
    if needed > memory_budget_bytes:
        raise ResourceError(
            f"MIG's propagated label vectors need about {needed / 2**30:.1f} GiB (over memory_budget_gib="
            f"{memory_budget_bytes / 2**30:g}); lower relative_degree (or target_degree) or cluster_levels, raise similarity_threshold, "
            "or raise memory_budget_gib if the machine has the memory."
        )
    unit = (sp.csr_matrix(indicator[first], dtype=np.float64) @ propagation.T).tocsr()
    unit.sum_duplicates()
    unit.eliminate_zeros()
    unit.sort_indices()
    order = np.lexsort((tie_rank, -scale, group_of_row))
    member_ptr = np.concatenate([[0], np.cumsum(np.bincount(group_of_row, minlength=n_groups))]).astype(np.int64)
    return Candidates(
        unit=unit,
        member_rows=order.astype(np.int64),
        member_scale=scale[order],
        member_ptr=member_ptr,
        group_of_row=group_of_row,
        scale_of_row=scale,
        tie_rank=tie_rank,
    )


# ---------------------------------------------------------------------------------------------
# Greedy


@dataclass
class GreedyResult:
    rows: np.ndarray
    gains: np.ndarray  # marginal gain (of the chosen kind) at pick time
    information: np.ndarray  # exact E(S_t) after each pick
    x: np.ndarray  # final propagated label mass
    evaluations: int  # candidate gain evaluations
    bound_violations: int  # re-evaluated gains above their stale bound (floating-point noise), expected 0


class _GainState:
    """Propagated mass x of the selected set, with per-label caches, and gains of candidates."""

    def __init__(self, unit: sp.csr_matrix, phi: Phi, gain: str, x0: np.ndarray):
        self.indptr, self.indices, self.data = unit.indptr, unit.indices, unit.data
        self.phi, self.gain = phi, gain
        self.x = np.array(x0, dtype=np.float64)
        self.cached = phi.cache(self.x)
        self.grad = phi.derivative(self.x)
        self.information = information(self.x, phi)
        self.evaluations = 0

    def _gather(self, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts = self.indptr[groups]
        lengths = self.indptr[groups + 1] - starts
        segment = np.repeat(np.arange(len(groups)), lengths)
        offsets = np.cumsum(lengths) - lengths
        positions = np.arange(int(lengths.sum())) - np.repeat(offsets - starts, lengths)
        return segment, positions

    def gains(self, groups: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """Marginal gains of scale * unit[group]; each is summed in CSR order from 0, whatever else is evaluated with it."""
        groups = np.asarray(groups, dtype=np.int64)
        scales = np.asarray(scales, dtype=np.float64)
        self.evaluations += len(groups)
        out = np.empty(len(groups))
        for start in range(0, len(groups), GAIN_CHUNK):
            chunk = groups[start : start + GAIN_CHUNK]
            segment, positions = self._gather(chunk)
            cols = self.indices[positions]
            vals = self.data[positions] * scales[start : start + len(chunk)][segment]
            if self.gain == "linearized":
                terms = vals * self.grad[cols]
            else:
                terms = self.phi.increment(self.x[cols], self.cached[cols], vals)
            out[start : start + len(chunk)] = np.bincount(segment, weights=terms, minlength=len(chunk))
        return out

    def add(self, group: int, scale: float) -> float:
        """Add scale * unit[group] to x; return the exact information gain."""
        lo, hi = self.indptr[group], self.indptr[group + 1]
        cols, vals = self.indices[lo:hi], self.data[lo:hi] * np.float64(scale)
        delta = float(self.phi.increment(self.x[cols], self.cached[cols], vals).sum())
        self.x[cols] += vals
        self.cached[cols] = self.phi.cache(self.x[cols])
        self.grad[cols] = self.phi.derivative(self.x[cols])
        self.information += delta
        return delta


def greedy(
    candidates: Candidates,
    budget: int,
    phi: Phi,
    gain: Literal["exact", "linearized"] = "exact",
    x0: np.ndarray | None = None,
    excluded_rows: np.ndarray | None = None,
    lazy: bool = True,
) -> GreedyResult:
    """Pick `budget` rows one at a time by largest marginal gain, ties to the lower `candidates.tie_rank`.

    lazy=False re-scores every candidate at every step (the reference); lazy=True keeps a heap of stale
    gains and re-scores only its top, and selects the same rows. Once the best gain is 0, every
    remaining gain is 0 and the rest of the budget is filled in tie-rank order, as a plain greedy would.
    """
    rank = candidates.tie_rank
    k_labels = candidates.unit.shape[1]
    state = _GainState(candidates.unit, phi, gain, np.zeros(k_labels) if x0 is None else x0)
    member_rows, member_scale, member_ptr = candidates.member_rows, candidates.member_scale, candidates.member_ptr
    n_rows = len(candidates.group_of_row)
    taken = np.zeros(n_rows, dtype=bool)
    if excluded_rows is not None and len(excluded_rows):
        taken[excluded_rows] = True
        keep = ~taken[member_rows]
        group = np.repeat(np.arange(len(member_ptr) - 1), np.diff(member_ptr))
        counts = np.bincount(group[keep], minlength=len(member_ptr) - 1)
        member_rows, member_scale = member_rows[keep], member_scale[keep]
        member_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    next_pos = member_ptr[:-1].copy()
    end_pos = member_ptr[1:]
    if budget > len(member_rows):
        raise ConfigError(f"Budget of {budget} rows is more than the {len(member_rows)} rows MIG may still select.")

    rows = np.empty(budget, dtype=np.int64)
    gains = np.empty(budget)
    info = np.empty(budget)
    violations = 0

    def take(group: int, t: int, g: float) -> None:
        rows[t] = member_rows[next_pos[group]]
        taken[rows[t]] = True
        gains[t] = g
        state.add(group, member_scale[next_pos[group]])
        next_pos[group] += 1
        info[t] = state.information

    def fill_zero_gain(t: int) -> GreedyResult:
        free = np.flatnonzero(~taken)
        rest = free[np.argsort(rank[free], kind="stable")[: budget - t]]
        rows[t:], gains[t:], info[t:] = rest, 0.0, state.information
        return GreedyResult(rows, gains, info, state.x, state.evaluations, violations)

    if not lazy:
        for t in range(budget):
            open_groups = np.flatnonzero(next_pos < end_pos)
            g = state.gains(open_groups, member_scale[next_pos[open_groups]])
            best = np.lexsort((rank[member_rows[next_pos[open_groups]]], -g))[0]
            if g[best] <= 0:
                return fill_zero_gain(t)
            take(int(open_groups[best]), t, float(g[best]))
        return GreedyResult(rows, gains, info, state.x, state.evaluations, 0)

    # Groups never re-evaluated stay in one array sorted by initial gain; re-evaluated ones go on a heap.
    open_groups = np.flatnonzero(next_pos < end_pos)
    initial = state.gains(open_groups, member_scale[next_pos[open_groups]])
    order = np.lexsort((rank[member_rows[next_pos[open_groups]]], -initial))
    sorted_groups = open_groups[order].tolist()
    sorted_keys = list(zip((-initial[order]).tolist(), rank[member_rows[next_pos[open_groups[order]]]].tolist()))
    at = 0
    heap: list[tuple[float, int, int]] = []  # (-bound, tie rank of the row on offer, group)

    def peek() -> tuple[float, int] | None:
        best = sorted_keys[at] if at < len(sorted_keys) else None
        if heap and (best is None or heap[0][:2] < best):
            best = heap[0][:2]
        return best

    def pop() -> tuple[int, float]:
        nonlocal at
        if heap and (at >= len(sorted_keys) or heap[0][:2] < sorted_keys[at]):
            neg_bound, _, group = heapq.heappop(heap)
            return group, -neg_bound
        at += 1
        return sorted_groups[at - 1], -sorted_keys[at - 1][0]

    for t in range(budget):
        block_groups: list[int] = []
        block_gains: list[float] = []
        best_key: tuple[float, int] | None = None
        best_index = -1
        want = LAZY_BLOCK
        while True:
            popped, bounds = [], []
            while len(popped) < want and peek() is not None:
                group, bound = pop()
                popped.append(group)
                bounds.append(bound)
            if popped:
                popped_arr = np.asarray(popped, dtype=np.int64)
                fresh = state.gains(popped_arr, member_scale[next_pos[popped_arr]])
                violations += int(np.count_nonzero(fresh > np.asarray(bounds)))
                for group, g in zip(popped, fresh.tolist()):
                    key = (-g, int(rank[member_rows[next_pos[group]]]))
                    block_groups.append(group)
                    block_gains.append(g)
                    if best_key is None or key < best_key:
                        best_key, best_index = key, len(block_groups) - 1
            following = peek()
            # Every stale bound is >= its true gain, so a fresh key ahead of the next bound is the true best.
            if following is None or best_key < following:
                break
            want *= 2
        if block_gains[best_index] <= 0:
            return fill_zero_gain(t)
        chosen = block_groups[best_index]
        take(chosen, t, block_gains[best_index])
        # Fresh gains stay valid upper bounds: x only grows, and a group's next row has a scale no larger.
        for group, g in zip(block_groups, block_gains):
            if next_pos[group] < end_pos[group]:
                heapq.heappush(heap, (-g, int(rank[member_rows[next_pos[group]]]), group))
    return GreedyResult(rows, gains, info, state.x, state.evaluations, violations)


# ---------------------------------------------------------------------------------------------
# Sampler


def tie_ranks(
    n: int,
    seed: int,
    tie_break: str,
    set_ids: np.ndarray | None = None,
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
        sizes = cluster_level_sizes(n, options.cluster_levels, options.base_clusters, budget, options.clusters_per_budget)
        nested = options.nested_clusters
        if nested is None:
            nested = n * sum(sizes) > FLAT_KMEANS_WORK
        if spacing == "auto":
            spacing = "geometric" if nested else "halving"
        if spacing == "geometric":
            sizes = cluster_level_sizes(
                n, options.cluster_levels, options.base_clusters, budget, options.clusters_per_budget, "geometric"
            )
        label_bytes = sum(sizes) * data.embeddings.shape[1] * 4
        if label_bytes > budget_bytes:
            raise ResourceError(
                f"MIG's {sum(sizes)} cluster labels need {label_bytes / 2**30:.1f} GiB of centroids; lower base_clusters or cluster_levels."
            )
        labels = cluster_labels(data.embeddings, sizes, seed, options.kmeans_iter, center, nested)
    max_edges = int(budget_bytes / 4 / 24)  # the graph may use a quarter of the budget (row, col, weight, CSR copies)
    prop_weight = options.prop_weight
    if prop_weight is None:
        # Asking for a graph (an explicit degree or tau) asks for propagation, also on cluster labels.
        explicit_graph = options.target_degree is not None or options.similarity_threshold is not None
        prop_weight = 1.0 if labels.source == "labels" or explicit_graph else 0.0
    if prop_weight > 0:
        graph = build_label_graph(
            labels, options.target_degree, options.similarity_threshold, max_edges, options.relative_degree, options.graph
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
        propagation,
        options.normalize_by_label_count,
        budget_bytes,
        tie_rank=tie_ranks(
            n,
            seed,
            options.tie_break,
            labels.set_ids,
            data.embeddings,
            center,
            options.central_share,
            labels.finest if options.central_reference == "finest" else None,
        ),
    )
    phi = Phi(kind=options.phi, b=options.phi_b, alpha=options.phi_alpha)
    return MIGProblem(
        labels=labels, graph=graph, propagation=propagation, candidates=candidates, phi=phi, prop_weight=prop_weight
    )


class MIGSampler(Sampler):
    name = "mig"
    description = "MIG: greedy maximisation of information gain over a label graph (tags, or k-means clusters when there are none)."
    Options = MIGOptions
    requires_positive_quality = False
    handles_previous_rows = True

    def quality_requirement(self) -> str | None:
        # Quality scales label mass (MIG) or enters as quality^theta (DPP): negative scores have no meaning there.
        return ">= 0"

    def _select(self, data: SelectionInput, budget: int, seed: int) -> Selection:
        opts = self.options
        problem = build_problem(data, opts, seed, budget)
        cands = problem.candidates
        previous = None
        x0 = None
        if data.previous_rows is not None and len(data.previous_rows):
            previous = np.unique(np.asarray(data.previous_rows, dtype=np.int64))
            if previous.min() < 0 or previous.max() >= data.n_rows:
                raise InputError(f"previous_rows has rows outside 0..{data.n_rows - 1}; pass rows of this corpus.")
            # Rows picked in earlier rounds already hold their information: start from it, never pick them again.
            x0 = np.asarray(cands.ehat_rows(previous).sum(axis=0)).ravel()
            if budget > data.n_rows - len(previous):
                raise ConfigError(
                    f"Budget of {budget} rows is more than the {data.n_rows - len(previous)} rows not selected in earlier rounds; pass a smaller budget."
                )
        result = greedy(cands, budget, problem.phi, opts.gain, x0=x0, excluded_rows=previous, lazy=True)
        return Selection(
            rows=result.rows,
            scores=result.gains,
            weights=np.ones(budget),
            clusters=None if problem.labels.coarse_assignments is None else problem.labels.coarse_assignments[result.rows],
            diagnostics=_diagnostics(problem, result, opts, previous),
        )


def _diagnostics(problem: MIGProblem, result: GreedyResult, opts: MIGOptions, previous: np.ndarray | None) -> dict:
    labels, graph = problem.labels, problem.graph
    k_labels = len(labels.names)
    indicator = labels.indicator
    selected_labels = indicator[result.rows]
    per_label = np.asarray(selected_labels.sum(axis=0)).ravel()
    covered = int(np.count_nonzero(per_label))
    top = np.lexsort((np.arange(k_labels), -per_label))[: min(10, covered)]
    degrees = np.diff(graph.offdiag.indptr)
    curve_at = np.unique(np.linspace(0, len(result.rows) - 1, min(len(result.rows), MAX_CURVE_POINTS)).round().astype(int))
    edges = np.unique(np.linspace(0, max(int(degrees.max(initial=0)), 1), 21).round())
    counts, edges = np.histogram(degrees, bins=edges)
    diagnostics = {
        "label_source": labels.source,
        "n_labels": k_labels,
        "labels_per_row_mean": float(np.diff(indicator.indptr).mean()),
        "rows_without_labels": int(np.count_nonzero(np.diff(indicator.indptr) == 0)),
        "distinct_label_sets": int(problem.candidates.unit.shape[0]),
        "similarity_threshold": [None if not math.isfinite(t) else float(t) for t in graph.thresholds],
        "threshold_calibrated": opts.similarity_threshold is None,
        "target_degree": opts.target_degree,
        "average_degree": float(graph.offdiag.nnz / max(k_labels, 1)),
        "prop_weight": problem.prop_weight,
        "propagation": opts.propagation,
        "relative_degree": opts.relative_degree,
        "central_share": opts.central_share,
        "phi": f"x^{opts.phi_b:g}" if opts.phi == "pow" else f"1-exp(-{opts.phi_alpha:g}x)",
        "gain": opts.gain,
        "labels_covered": covered,
        "labels_covered_fraction": covered / max(k_labels, 1),
        "labels_reached": int(np.count_nonzero(result.x > 0)),
        "most_selected_labels": [labels.names[k] for k in top],
        "information": float(result.information[-1]),
        "gain_evaluations": int(result.evaluations),
        "bound_violations": int(result.bound_violations),
        "previous_rows": 0 if previous is None else int(len(previous)),
        "curves": {
            "Information E(S) by rows selected": [float(v) for v in result.information[curve_at]],
            "Marginal gain by rank": [float(v) for v in result.gains[curve_at]],
        },
        "histograms": {"Label graph degree": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}},
    }
    if labels.cluster_sizes is not None:
        diagnostics["cluster_levels"] = labels.cluster_sizes
        diagnostics["nested_clusters"] = labels.nested
    return diagnostics

"""Options of the MIG sampler."""

from typing import Literal

from pydantic import Field

from ..base import SamplerOptions


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

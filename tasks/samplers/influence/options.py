"""Options of the influence sampler."""

from typing import Literal

from pydantic import Field

from ..base import SamplerOptions


ScoreName = Literal["el2n", "grand", "forgetting", "vog", "target", "self_influence"]


class InfluenceOptions(SamplerOptions):
    score: ScoreName = Field(
        default="el2n",
        description="Per-row score: el2n (error norm), grand (gradient norm), forgetting (forgetting events), vog (variance of gradients), target (TracIn influence toward the target set; needs target embeddings), self_influence (TracIn self-influence).",
    )
    mode: Literal["auto", "stratified", "top", "bottom", "middle"] = Field(
        default="auto",
        description="Which rows to keep: stratified = one seeded draw from each of `quota` equal-count score strata of the rows left after drop_easiest/drop_hardest (CCS), top = highest scores first, bottom = lowest first, middle = a seeded uniform draw from the rows left; auto = top for score='target' (LESS keeps the top), stratified otherwise.",
    )
    drop_easiest: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Fraction of rows with the lowest scores removed before selecting (per class when balance=class)."
    )
    drop_hardest: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Fraction of rows with the highest scores removed before selecting (per class when balance=class)."
    )
    dedup_similarity: float | None = Field(
        default=0.95,
        gt=0.0,
        le=1.0,
        description="While rows remain, skip a row whose cosine similarity to a row already selected (in its class when balance=class) is above this (the near-duplicate threshold of the reports); skipped rows only fill a quota nothing else can. Empty: off. Not applied with balance=ucb.",
    )
    balance: Literal["class", "none", "ucb"] = Field(
        default="class",
        description="class = budget split over proxy classes in proportion to their sizes; none = one ranking over the pool; ucb = Quad-style upper-confidence-bound draws over k-means clusters.",
    )
    ucb_alpha: float = Field(
        default=0.5, ge=0.0, le=100.0, description="UCB exploration weight α (rewards are score percentiles in [0, 1]); 0 = greedy on the cluster mean."
    )
    ucb_batch: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Rows taken per UCB pull. Empty: ceil(budget / (4 * clusters))."
    )
    model: Literal["linear", "mlp"] = Field(
        default="linear", description="Proxy model: a linear softmax head (closed-form gradients) or a one-hidden-layer ReLU MLP (autograd)."
    )
    hidden: int = Field(default=128, ge=4, le=4096, description="Hidden width of the MLP proxy.")
    label_source: Literal["auto", "labels", "clusters"] = Field(
        default="auto",
        description="Proxy classes: labels = the corpus labels, clusters = k-means pseudo-labels, auto = labels when the corpus has at least two distinct ones, else clusters.",
    )
    label_rule: Literal["first", "most_frequent"] = Field(
        default="first",
        description="A row with several labels is given its first label, or the one most frequent in the corpus (ties by name).",
    )
    k: int | None = Field(
        default=None, ge=1, le=100_000, description="k-means clusters for pseudo-labels and UCB arms. Empty: the larger of round(sqrt(N/10)) and ceil(budget/8), clipped to 2..100."
    )
    n_iter: int = Field(default=20, ge=1, le=300, description="Lloyd iterations of FAISS k-means.")
    epochs: int = Field(default=3, ge=1, le=100, description="Proxy training epochs (full passes over the rows).")
    batch_size: int | None = Field(
        default=None, ge=1, le=100_000_000, description="SGD minibatch rows; at least the row count means full-batch gradient descent. Empty: N/50 clipped to 32..1024."
    )
    lr: float | None = Field(
        default=None, gt=0.0, le=1000.0, description="SGD learning rate of the proxy. Empty: 10 for the linear head, 2 for the MLP (unit-norm inputs)."
    )
    lr_schedule: Literal["constant", "linear"] = Field(default="constant", description="Constant learning rate, or linear decay towards 0 over training.")
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0, description="SGD momentum (TracIn assumes plain SGD, 0).")
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="L2 weight decay of the proxy.")
    checkpoints: int = Field(default=6, ge=1, le=100, description="Checkpoints kept, evenly spaced over training steps (VoG and TracIn use all).")
    early_checkpoints: int = Field(
        default=2, ge=1, le=100, description="EL2N and GraNd average over this many earliest checkpoints (early-training scores)."
    )
    forgetting_every: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Evaluate every row for forgetting events every this many SGD steps. Empty: 10 times per epoch."
    )
    vog_output: Literal["auto", "logit", "log_softmax"] = Field(
        default="auto",
        description="VoG differentiates the true-class logit (the paper) or log-softmax; auto = log_softmax for the linear head (whose logit gradient is constant per class), logit for the MLP.",
    )
    vog_normalize: Literal["class", "dataset", "none"] = Field(
        default="class", description="VoG normalisation: z-score per class, over the dataset, or raw."
    )
    target_cosine: bool = Field(
        default=False, description="Target influence as the mean cosine between gradients (LESS) instead of the TracIn dot product."
    )
    threads: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Torch threads while the sampler runs (restored afterwards). The proxy's minibatch ops are small: on a shared 2-core machine one thread trained 7x faster than two.",
    )
    target_labels: Literal["nearest_centroid", "predicted"] = Field(
        default="nearest_centroid",
        description="Labels of target rows: the class whose centroid is nearest (the k-means centroid for pseudo-labels, so targets are labelled like the pool; the class mean for labels), or the final proxy's prediction.",
    )

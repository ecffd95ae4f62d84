"""Options of the sensitivity sampler."""

from typing import Literal

from pydantic import Field

from ..base import SamplerOptions


class SensitivityOptions(SamplerOptions):
    method: Literal["kmeans-coreset", "lightweight", "leverage", "lewis"] = Field(
        default="kmeans-coreset",
        description="Sampling probabilities: k-means coreset sensitivity bound (Bachem-Lucic-Krause), lightweight coreset (½ uniform + ½ distance to the mean), exact ℓ2 leverage scores, or ℓp Lewis weights / root leverage mixed with leverage.",
    )
    k: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="kmeans-coreset: number of centres of the rough solution. Empty: round(2*sqrt(budget)), at most the number of rows. Time grows linearly with k.",
    )
    centres: Literal["kmeans++", "faiss-kmeans"] = Field(
        default="kmeans++",
        description="kmeans-coreset: rough solution from k-means++ D² seeding (the paper's guarantee) or FAISS Lloyd k-means (tighter centres, faster for large k, no k-means++ guarantee).",
    )
    kmeans_iter: int = Field(default=20, ge=1, le=300, description="Lloyd iterations when centres='faiss-kmeans'.")
    ridge: float = Field(
        default=0.0,
        ge=0.0,
        le=1e6,
        description="leverage / lewis: ridge λ for the ℓ2 leverage scores τ (and root leverage), as a multiple of the mean eigenvalue of AᵀA (‖A‖_F²/D); 0 gives exact leverage scores, larger values flatten them toward uniform. Lewis weights themselves use no ridge.",
    )
    p: float = Field(default=1.0, ge=1.0, lt=4.0, description="lewis: the ℓp norm whose sensitivities are bounded (1 <= p < 4).")
    lewis_proxy: Literal["lewis", "root-leverage"] = Field(
        default="lewis",
        description="lewis: ℓp sensitivity bound from Lewis weights (Cohen-Peng fixed point) or root leverage τ^(p/2) (one leverage pass, valid for p <= 2).",
    )
    leverage_mix: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="lewis: share β of ℓ2 leverage in q = (1-β)·σ/Σσ + β·τ/Στ (ℓ2 augmentation; 0.5 is sampling ∝ σ + τ when Σσ = Στ = D).",
    )
    lewis_iters: int = Field(default=30, ge=1, le=200, description="lewis: maximum fixed-point iterations (each is one pass over the embeddings).")
    lewis_tol: float = Field(
        default=1e-2,
        gt=0.0,
        le=0.5,
        description="lewis: stop when the largest relative change of a weight falls below this (1% is ample for sampling, which only needs constant-factor Lewis weights).",
    )
    uniform_mix: float = Field(
        default=0.9,
        ge=0.0,
        le=1.0,
        description="Defensive mixing q ← (1-η)·q + η/N for every method: bounds importance weights by N/(η·budget). The default 0.9 serves rows taken as they are (a spread, near-uniform sample tilted toward what the sensitivities favour); 0 is the papers' pure importance design, needed for their coreset sample sizes.",
    )
    max_oversampling: float | None = Field(
        default=None,
        ge=1.0,
        le=1e6,
        description="Cap κ on q·N: no row is drawn with more than κ times the uniform probability (after uniform_mix). Empty: no cap. The weights stay exact Horvitz-Thompson weights of the capped design.",
    )
    sampling: Literal["pivotal", "systematic"] = Field(
        default="pivotal",
        description="Fixed-size design with exact inclusion probabilities π = min(1, c·q) and weights 1/π: pivotal method (spatially balanced over clusters) or systematic πps.",
    )
    order: Literal["tree", "cluster", "random"] = Field(
        default="tree",
        description="The order the design walks. tree: rows of each k-means cluster (all rows for the other methods) ordered along a PCA median-split tree, so near neighbours are paired first and near-duplicates rarely drawn together; cluster: clusters contiguous, random inside; random: a random permutation.",
    )

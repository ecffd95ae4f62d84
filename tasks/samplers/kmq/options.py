"""Options of the kMQ sampler (registered as `kmeans`)."""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ..base import SamplerOptions


class KMeansOptions(SamplerOptions):
    method: Literal["kmq", "kcenter"] = Field(
        default="kmq",
        description="kmq: k-means clusters and quality-weighted quotas (the paper). kcenter: farthest-point k-center greedy, the classic diversity baseline (slow at 1M rows: O(rows x budget x dim)).",
    )
    k: int | None = Field(
        default=None,
        ge=1,
        description="Number of k-means clusters. Empty: chosen from the budget as round(budget / rows_per_cluster) capped by max_k, or by silhouette (see k_selection). Required in refinement rounds (use the first round's k).",
    )
    n_iter: int = Field(default=20, ge=1, le=300, description="Lloyd iterations of FAISS k-means.")
    rows_per_cluster: float = Field(
        default=5.0,
        ge=1.0,
        le=1e6,
        description="When k is empty and k_selection='budget': k = round(budget / rows_per_cluster), the budget-to-k ratio that scored best in the paper's k ablation (10K rows, k=2048: b/k ~ 5).",
    )
    max_k: int = Field(
        default=512,
        ge=1,
        le=1_000_000,
        description="Upper bound on the k chosen from the budget (and on the silhouette grid): FAISS k-means costs O(min(rows, 256k) x k x dim x n_iter), about 26 s at 100k rows and k=512 on 2 loaded cores; the balanced draws spread the rows inside larger clusters.",
    )
    within_cluster: Literal["balanced", "independent"] = Field(
        default="balanced",
        description="How a cluster's quota is drawn. balanced: inclusion probabilities proportional to quality (uniform without a quality column), drawn by the pivotal method along a PCA tree of the cluster's rows, so the rows are spread inside the cluster and near-duplicates are rarely drawn together. independent: successive weighted draws without replacement (the paper's multinomial draws).",
    )
    quality_weighting: Literal["proportional", "softmax"] = Field(
        default="proportional",
        description="Inside a cluster, rows are included with probability proportional to quality (the paper), or to softmax(quality) (the reference code), capped at 1. Uniform when there is no quality column.",
    )
    k_selection: Literal["budget", "silhouette"] = Field(
        default="budget",
        description="How k is chosen when k is empty: budget = round(budget / rows_per_cluster), at most max_k; silhouette = best silhouette score over powers of two between a quarter and twice that k (one k-means per candidate).",
    )
    silhouette_sample_size: int = Field(
        default=5000,
        ge=100,
        le=50_000,
        description="Rows (seeded random sample) on which the silhouette score of each candidate k is computed; its cost grows with the square of this number.",
    )
    silhouette_metric: Literal["euclidean", "cosine"] = Field(
        default="euclidean",
        description="Distance for the silhouette score: euclidean (what k-means minimises) or cosine.",
    )
    refinement_weighting: Literal["multiplicative", "softmax"] = Field(
        default="multiplicative",
        description="Refinement rounds: cluster weight update from mean feedback s_j. multiplicative: w_j ~ s_j/sum(s) * previous w_j (the paper's Eq. 6; shifted when some s_j <= 0). softmax: w_j ~ exp(s_j/T) * previous w_j (the reference code).",
    )
    softmax_temperature: float = Field(
        default=1.0,
        gt=0.0,
        le=1e6,
        description="Temperature T of the softmax refinement weighting; larger T flattens the weights (1.0 as in the reference code).",
    )
    refinement_prior: Literal["size", "uniform"] = Field(
        default="size",
        description="Refinement rounds without previous_cluster_weights: previous weights taken as cluster-size shares (what a static first round used) or uniform 1/k (the paper's w0, the reference code's equal allocation).",
    )
    previous_cluster_weights: list[Annotated[float, Field(ge=0.0, allow_inf_nan=False)]] | None = Field(
        default=None,
        min_length=1,
        description="Refinement rounds: the previous round's cluster weights (diagnostics next_round_options), one per cluster; empty to recompute them from refinement_prior.",
    )
    kcenter_start: Literal["random", "mean"] = Field(
        default="random",
        description="k-center greedy: first centre is a seeded random row, or the row nearest the mean embedding.",
    )

    @model_validator(mode="after")
    def _consistent(self):
        if self.k is not None and self.k_selection == "silhouette":
            raise ValueError("k_selection='silhouette' chooses k itself; leave k empty or use k_selection='budget'.")
        if self.method == "kcenter" and self.k_selection == "silhouette":
            raise ValueError("k_selection='silhouette' applies to method 'kmq' only; k-center greedy has no k.")
        weights = self.previous_cluster_weights
        if weights is not None:
            if self.k is not None and len(weights) != self.k:
                raise ValueError(f"previous_cluster_weights has {len(weights)} entries but k={self.k}; pass one weight per cluster.")
            if sum(weights) <= 0:
                raise ValueError("previous_cluster_weights are all zero; pass at least one positive weight or leave them empty.")
        return self

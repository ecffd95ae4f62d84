"""Sensitivity and leverage-score sampling: importance sampling with unbiased importance weights.

Every method turns the embeddings into sampling probabilities q (summing to 1) and returns a
weighted subset such that sum_{i in S} w_i f(x_i) estimates sum_i f(x_i) without bias for any f:

- "kmeans-coreset" (default): Bachem, Lucic & Krause, "Practical coreset constructions for machine
  learning" (arXiv 1703.06476). Rough solution B = k centres from k-means++ D² seeding (Arthur &
  Vassilvitskii 2007, implemented here with numpy, one matrix-vector product per centre), then the
  sensitivity upper bound
      s(x) = 2α·d(x,B)²/c̄ + 4α·(Σ_{x'∈B_x} d(x',B)²)/(n_x·c̄) + 4N/n_x,   α = max(log k, 1),
  with c̄ the mean squared distance to B, B_x the cluster of x and n_x its size; s ≡ 1 when c̄ = 0.
  The reference code (zalanborsos/coresets) seeds with scikit-learn's *greedy* k-means++ (2 + log k
  local trials per centre); we implement the plain D² seeding of the paper, whose O(log k)
  approximation is what α accounts for. `centres="faiss-kmeans"` instead uses Lloyd k-means
  (shared FAISS helper), which gives tighter centres but no longer the k-means++ guarantee.
- "lightweight": Bachem, Lucic & Krause, "Scalable k-means clustering via lightweight coresets"
  (KDD 2018): q(x) = ½·1/N + ½·d(x,μ)²/Σ d(x',μ)², μ the data mean (uniform when all rows coincide).
- "leverage": exact ℓ2 leverage scores τ_i = a_iᵀ(AᵀA + λI)⁺a_i (Cholesky when λ > 0, else an
  eigendecomposition that drops directions below the input's floating-point precision), q = τ/Στ.
- "lewis": ℓp Lewis weights (Cohen & Peng, "ℓp row sampling by Lewis weights", 2015) via their
  fixed point w_i ← (a_iᵀ(AᵀW^{1−2/p}A)⁻¹a_i)^{p/2}, or root leverage τ^{p/2} (Woodruff & Yasuda
  2023) as the ℓp sensitivity bound σ̃, mixed with ℓ2 leverage as Munteanu & Omlor (2024, "ℓ2
  augmentation") recommend: q = (1−β)·σ̃/Σσ̃ + β·τ/Στ. Note: the shorthand update
  "w ← τ(W^{1/2−1/p}A)^{p/2}" has the wrong fixed point for p ≠ 2; Cohen–Peng's update is the one
  implemented (its fixed point satisfies w = τ(W^{1/2−1/p}A) and Σw = rank).

Fixed-size sampling. The papers draw m rows i.i.d. with replacement and weight each draw 1/(m q).
The pipeline needs exactly `budget` distinct rows, and "draw with replacement until B distinct rows
are seen, weight = multiplicity/(m q)" is biased (the stopping rule depends on the draws). We
instead use a without-replacement πps design: inclusion probabilities π_i = min(1, c·q_i) with c
solved exactly so that Σπ = budget, and Horvitz–Thompson weights w_i = 1/π_i, which equal
1/(c·q_i), i.e. the paper's 1/(m q) with m = c, wherever π < 1. Rows are drawn with
  - "pivotal" (default): the pivotal method of Deville & Tillé, applied bottom-up over a tree of
    the rows as in Shimizu et al. (ICLR 2024), vectorised over all sibling pairs at once. Marginals
    are exactly π, the size is exactly `budget`.
  - "systematic": systematic πps sampling along the same order; exact marginals and size, but many
    pairs of rows can never be drawn together (no variance estimate from one sample).
The order the design walks (`order`):
  - "tree" (default): `spatial_order`, PCA median splits (Shimizu et al.'s Alg. 2, the principal
    direction by two power iterations) down to segments of at most 1024 rows, then inside each
    segment recursive nearest-neighbour matching (mutual nearest neighbours paired first, pairs
    merged, repeated), so pivotal siblings are near neighbours: every subtree's sample size stays
    within one of its expectation (the sample spreads over the data) and a near-duplicate pair with
    π_i + π_j < 1 never yields both rows. Shimizu et al. split down to single rows; the matching
    leaves are a departure that keeps near-duplicates together, which median cuts often separate.
    Costs O(N·D·log N) for the splits plus O(N·1024·D) for the matching.
  - "cluster": the previous default: kmeans-coreset rows ordered by cluster, random inside.
  - "random": a random permutation.
Because the marginals are exact, E[Σ_{i∈S} w_i f(x_i)] = Σ_i f(x_i) for every f (in particular
k-means costs for any centres and Σw, which estimates N), whatever the order. Rows are returned in a
random order, so a prefix of b rows with weights multiplied by budget/b is still an unbiased estimator.

Default for rows taken as they are (`select --sampler sensitivity`, sf_weight ignored): the papers'
probabilities oversample small clusters and outliers by design (the 4N/n_x term gives every
k-means++ cluster the same mass, and a singleton is taken with certainty). That is right for a
weighted coreset and wrong for a user who trains on the rows unweighted: on the demo data it lost to
random on coverage distance and near-duplicate rate. The default is therefore a defensive mixture
(Hesterberg 1995) q ← 0.1·q_sensitivity + 0.9/N (`uniform_mix` = 0.9) walked along the tree order:
a spread, near-uniform sample tilted toward what the sensitivities favour, with every weight at most
N/(0.9·budget). The weights are still exact Horvitz–Thompson weights, so the estimator stays
unbiased; but the coreset sample sizes of the papers assume q ∝ s, so for a coreset set
uniform_mix=0 (a mixture with weight η on uniform needs up to 1/(1-η) times more rows for the same
guarantee). Measured (bench/tune_quality.py, demo data): with the tree order most of the gain over
random comes from the balanced design, not from the probabilities (uniform_mix 0.8, 0.9 and 1.0
score alike over 10 seeds); `max_oversampling` caps q·N instead, for users who want more tilt.
"""

from .coreset import kmeans_plus_plus, kmeans_sensitivity, lightweight_probabilities
from .inclusion import cap_oversampling, inclusion_probabilities, pivotal_sample, sample_fixed_size, systematic_sample
from .leverage import leverage_scores, lewis_weights
from .memory import CHUNK_BYTES, MEMORY_LIMIT_BYTES
from .options import SensitivityOptions
from .sampler import SensitivitySampler, default_k
from .spatial_ordering import spatial_order

__all__ = [
    "CHUNK_BYTES", "MEMORY_LIMIT_BYTES", "SensitivityOptions", "SensitivitySampler", "cap_oversampling",
    "default_k", "inclusion_probabilities", "kmeans_plus_plus", "kmeans_sensitivity", "leverage_scores",
    "lewis_weights", "lightweight_probabilities", "pivotal_sample", "sample_fixed_size", "spatial_order",
    "systematic_sample",
]

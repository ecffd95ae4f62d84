"""kMQ: k-means clustering, then quality-aware sampling in proportion to cluster size.

Yu et al., "Diversify and Conquer" (arXiv 2409.11378). Three modes, chosen by options:

Static kMQ (§2.1, the default). Follows the paper where the reference code differs: the budget is
split in proportion to cluster sizes (the code gives every cluster an equal share and drops what
small clusters cannot fill); the shortfall of small clusters is redistributed; sampling inside a
cluster is without replacement (the paper's "with replacement" yields duplicates); quality scores
are used as floats (the code truncates them to integers).

Departures in the defaults, for a user who runs `select --sampler kmeans` with no quality column
(then kMQ is the paper's kM-Random baseline, a stratified random sample) and takes the rows as they are:
  * k = round(budget / rows_per_cluster) with rows_per_cluster = 5, at most max_k = 512 (and at most
    the budget and the rows). The earlier k = 2·sqrt(b) sat where the paper's k ablation (§4.3,
    Table 5: 10K rows, best k = 2048, b/k ~ 5) scored no better than random, and on the demo data
    (8,800 rows) it lost to random on coverage distance and near-duplicates at 5%. The cap bounds
    FAISS k-means, which costs O(min(N, 256·k)·k·D·n_iter): k = 1000 already took 57 s at 100k rows
    on 2 loaded cores (1.1 s with the old k = 141), and a 5% budget of 1M rows would ask for
    k = 10,000. Above the cap the balanced draws below spread the rows inside the larger clusters.
    Budgets up to 2,560 rows (the demo data, the 10,000-row held-out evaluation) are not capped.
    The silhouette grid (§4.3) brackets this default: powers of two from k/4 to 2k.
  * within_cluster = "balanced": a cluster's quota b_j is drawn with inclusion probabilities
    π_i = min(1, c·q_i) (Σπ = b_j; q = quality, softmax(quality) or 1) by the pivotal method
    (Deville & Tillé 1998) along a tree of the cluster's rows: PCA median splits (Shimizu et al.,
    ICLR 2024) down to at most 1024 rows, then recursive nearest-neighbour matching
    (`spatial_order`, sensitivity/spatial_ordering.py). Siblings are near neighbours, so each subtree gets its expected
    share of the quota (the rows spread over the cluster) and near-duplicates are paired first: with
    π < 1/2 at most one of a pair survives. The paper draws from Multinomial(D_j, p(x|q)); here the
    quality still sets the inclusion probability of every row exactly (a row's first-draw
    probability when b_j = 1), but successive draws are replaced by this fixed-size design.
    within_cluster="independent" restores successive weighted draws without replacement.
  Measured with bench/tune_quality.py (demo data, seeds 0-2, random 0-4): the earlier default lost
  to random at 5% on coverage distance (0.4247 vs 0.4167) and near-duplicate rate (0.067 vs 0.030);
  the new one beats random on all four scores at 1%, 5% and 10% (bench/results/kmeans.md).

Iterative kMQ (§2.2, Alg. 1, Eqs. 5-6): a refinement round is a call whose input carries
`previous_rows` (rows selected in earlier rounds) and, usually, `feedback` (per-row training
feedback, NaN where none). The clustering is recomputed from the same seed, so it is identical
across rounds as long as k is: a refinement round therefore needs k, either as the `k` option or
as the length of `previous_cluster_weights` (the first round reports both under
`diagnostics["next_round_options"]`). Cluster weights:
  * s_j = mean feedback of cluster j's previously selected rows (Eq. 5).
  * "multiplicative" (the paper, Eq. 6): w_j ∝ (s_j / Σ_c s_c) · w_j^prev. Eq. 6 is undefined for
    s_j <= 0, so when any observed s_j is <= 0 all of them are shifted by -min(s) plus 1% of
    their spread (1.0 when they are all equal): order is kept and the worst cluster keeps a small
    non-zero weight instead of being dropped.
  * "softmax" (the reference code, selection/iter.py): w_j ∝ exp(s_j / T) · w_j^prev. With
    refinement_prior="uniform" and no previous weights this is exactly the code's softmax.
  * Clusters without feedback get the neutral factor (the mean observed s_j, resp. mean s_j/T),
    so their weight relative to the prior does not move; exhausted clusters get weight 0; the
    weights are normalised to sum to 1 and reported in the diagnostics.
  * w^prev: the `previous_cluster_weights` option when given (chain the rounds exactly), else
    recomputed: cluster-size shares ("size", default: the allocation a static first round used)
    or 1/k ("uniform": the paper's w^0 and the code's equal allocation).
  * The round's budget is split over clusters by these weights (largest remainder, capped by each
    cluster's remaining rows, shortfall redistributed) and drawn inside clusters as in static kMQ,
    never re-selecting a previous row. The reference code draws len(D)·portion/K/rounds cluster ids
    per round, K times fewer than b/rounds (open issue #8 of Cohere-Labs-Community/
    iterative-data-selection); here every round selects exactly the budget it is given. The
    round's draws use a generator seeded with (seed, number of previous rows), so repeating the
    seed does not replay the first round's draws while the clustering stays the same.

k by silhouette (§4.3: the paper picks k by silhouette before training): k-means for each power
of two between k0/4 and 2·k0, k0 the budget default above (capped by max_k, the budget and the
rows), silhouette (scikit-learn) on a seeded random sample of rows, and the best k's clustering is
kept. Costs one full k-means per grid value (3-4 of them).

k-center greedy (`method="kcenter"`, the classic baseline of the paper's Table 2; Gonzalez 1985):
start from a seeded random row (or the row nearest the mean), repeatedly add the row farthest (L2)
from the selected set; earlier rounds' rows count as already selected. Keeps one O(N) float32
array of squared distances to the set, updated with each new centre by one matrix-vector product.
Time is O(N·B·D) and memory-bound: one pass over the embeddings per selected row. On 2 (loaded)
cores that measured ~40 ms per pick at 100k x 384 (3.5 min for a 5% budget) and ~0.37 s per pick at
1M x 384, i.e. about 5 hours for a 5% budget (bench/results/kmeans.md); memory stays O(N), but use
kMQ at that scale. Quality and feedback are ignored.
"""

from .k_choice import choose_k_by_silhouette, default_k, silhouette_k_grid
from .kcenter import kcenter_greedy
from .options import KMeansOptions
from .refinement import FEEDBACK_SHIFT_FLOOR, cluster_feedback_means, refine_cluster_weights
from .sampler import KMeansSampler, MAX_CURVE_POINTS

__all__ = [
    "FEEDBACK_SHIFT_FLOOR", "KMeansOptions", "KMeansSampler", "MAX_CURVE_POINTS", "choose_k_by_silhouette",
    "cluster_feedback_means", "default_k", "kcenter_greedy", "refine_cluster_weights", "silhouette_k_grid",
]

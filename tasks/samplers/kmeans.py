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
    (`sensitivity.spatial_order`). Siblings are near neighbours, so each subtree gets its expected
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

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from ..errors import ConfigError, InputError
from .base import Sampler, SamplerOptions, Selection, SelectionInput
from .clustering import Clustering, assign, kmeans
from .draws import weighted_order
from .sensitivity import inclusion_probabilities, pivotal_sample, spatial_order

# Fraction of the observed feedback spread kept as the lowest shifted s_j (multiplicative rule).
FEEDBACK_SHIFT_FLOOR = 0.01
MAX_CURVE_POINTS = 500


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


def default_k(budget: int, n_rows: int, rows_per_cluster: float = 5.0, max_k: int = 512) -> int:
    """k from the budget: round(budget / rows_per_cluster), at least 1, at most max_k, the budget and the rows."""
    return int(max(1, min(round(budget / rows_per_cluster), max_k, budget, n_rows)))


def allocate_quotas(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Split `budget` over clusters in proportion to their sizes, never above a cluster's size.

    Largest-remainder rounding (ties to the lower cluster index); clusters too small for their
    share are filled completely and the rest of the budget is split again, in proportion to size,
    over the clusters that still have room. The quotas sum to the budget exactly.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if budget > sizes.sum():
        raise ConfigError(f"Budget {budget} exceeds the {int(sizes.sum())} rows in the clusters.")
    return allocate_weighted(sizes.astype(np.float64), sizes, budget)


def allocate_weighted(weights: np.ndarray, capacity: np.ndarray, budget: int) -> np.ndarray:
    """Split `budget` over clusters in proportion to `weights`, never above a cluster's `capacity`.

    Largest-remainder rounding (ties to the lower cluster index); clusters whose share exceeds
    their capacity are filled and the rest is split again over the others. Zero-weight clusters get
    rows only when the positive-weight ones are full (then in proportion to their room), so the
    quotas always sum to the budget exactly.
    """
    weights = np.asarray(weights, dtype=np.float64)
    capacity = np.asarray(capacity, dtype=np.int64)
    if weights.shape != capacity.shape or np.any(~np.isfinite(weights)) or np.any(weights < 0):
        raise ConfigError("Cluster weights must be finite, non-negative and one per cluster.")
    if np.any(capacity < 0):
        raise ConfigError("Cluster capacities must be non-negative.")
    if budget > capacity.sum():
        raise ConfigError(f"Budget {budget} exceeds the {int(capacity.sum())} rows left in the clusters.")
    quotas = np.zeros(len(capacity), dtype=np.int64)
    remaining = int(budget)
    open_ = (capacity > 0) & (weights > 0)
    while remaining > 0:
        room = capacity - quotas
        if not open_.any():
            # Only zero-weight clusters have room left: the budget is exact, so fill them by room.
            weights = room.astype(np.float64)
            open_ = room > 0
            continue
        share = np.where(open_, weights, 0.0)
        ideal = remaining * share / share.sum()
        full = open_ & (ideal >= room)
        if full.any():
            # Saturate the clusters that cannot hold their share, then re-split the rest.
            remaining -= int(room[full].sum())
            quotas[full] = capacity[full]
            open_ &= ~full
            continue
        base = np.floor(ideal).astype(np.int64)
        leftover = remaining - int(base.sum())
        remainder = np.where(open_, ideal - base, -1.0)
        order = np.lexsort((np.arange(len(capacity)), -remainder))
        base[order[:leftover]] += 1
        quotas += base
        remaining = 0
    return quotas


def cluster_feedback_means(
    assignments: np.ndarray, k: int, previous_rows: np.ndarray, feedback: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 5: mean finite feedback of each cluster's previously selected rows (NaN where none), and counts."""
    counts = np.zeros(k, dtype=np.int64)
    means = np.full(k, np.nan)
    if feedback is None or len(previous_rows) == 0:
        return means, counts
    values = feedback[previous_rows]
    finite = np.isfinite(values)
    clusters = assignments[previous_rows][finite]
    counts = np.bincount(clusters, minlength=k)
    sums = np.bincount(clusters, weights=values[finite], minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return means, counts


def refine_cluster_weights(
    prior: np.ndarray,
    cluster_feedback: np.ndarray,
    capacity: np.ndarray,
    weighting: Literal["multiplicative", "softmax"] = "multiplicative",
    temperature: float = 1.0,
) -> tuple[np.ndarray, dict]:
    """One round of iterative kMQ cluster weights (paper Eq. 6 or the reference code's softmax).

    prior: w^prev (non-negative); cluster_feedback: s_j, NaN for clusters without feedback;
    capacity: rows left per cluster (0 = exhausted, weight 0). Returns weights that are
    non-negative and sum to 1, and facts for the diagnostics.
    """
    prior = np.asarray(prior, dtype=np.float64)
    s = np.asarray(cluster_feedback, dtype=np.float64)
    capacity = np.asarray(capacity)
    observed = np.isfinite(s)
    info: dict = {"clusters_with_feedback": int(observed.sum()), "feedback_shift": 0.0}
    factor = np.ones(len(prior))
    if observed.any():
        if weighting == "multiplicative":
            lo, hi = float(s[observed].min()), float(s[observed].max())
            if lo <= 0:
                # Eq. 6 needs s_j > 0: shift so the worst cluster keeps a small weight, order kept.
                shift = -lo + (FEEDBACK_SHIFT_FLOOR * (hi - lo) if hi > lo else 1.0)
                s = s + shift
                info["feedback_shift"] = shift
            factor = np.where(observed, s, s[observed].mean())
            factor = factor / factor[observed].sum()
        else:
            z = np.where(observed, s / temperature, np.nan)
            z = np.where(observed, z, np.nanmean(z))
            factor = np.exp(z - z.max())
    weights = factor * prior
    weights[capacity <= 0] = 0.0
    info["weights_fallback"] = False
    if not weights.sum() > 0:
        # The prior gives no weight to any cluster that still has rows: fall back to their room.
        weights = np.where(capacity > 0, capacity, 0).astype(np.float64)
        info["weights_fallback"] = True
    return weights / weights.sum(), info


def silhouette_k_grid(budget: int, n_rows: int, rows_per_cluster: float = 5.0, max_k: int = 512) -> list[int]:
    """Powers of two between k0/4 and 2*k0, k0 = default_k (budget / rows_per_cluster, capped by max_k);
    at least 2, at most max_k, the budget and n_rows-1."""
    k0 = default_k(budget, n_rows, rows_per_cluster, max_k)
    lo, hi = k0 / 4, 2 * k0
    cap = min(budget, n_rows - 1, max_k)
    return [2**e for e in range(1, 63) if lo <= 2**e <= hi and 2**e <= cap]


def choose_k_by_silhouette(
    embeddings: np.ndarray,
    budget: int,
    seed: int,
    n_iter: int = 20,
    sample_size: int = 5000,
    metric: Literal["euclidean", "cosine"] = "euclidean",
    rows_per_cluster: float = 5.0,
    max_k: int = 512,
) -> tuple[int, Clustering | None, list[int], list[float]]:
    """Cluster the whole corpus for each k of the grid; score each on one seeded sample; keep the best.

    Returns (k, its clustering, grid, scores); the clustering is None (and k the budget default)
    when the grid is empty, e.g. for tiny budgets. Ties go to the smaller k.
    """
    from sklearn.metrics import silhouette_score

    n = embeddings.shape[0]
    grid = silhouette_k_grid(budget, n, rows_per_cluster, max_k)
    if not grid:
        return default_k(budget, n, rows_per_cluster, max_k), None, [], []
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(sample_size, n), replace=False))
    x_sample = embeddings[sample]
    best_k, best_score, best_clustering, scores = grid[0], -np.inf, None, []
    for k in grid:
        clustering = kmeans(embeddings, k, seed=seed, n_iter=n_iter)
        labels = clustering.assignments[sample]
        n_labels = len(np.unique(labels))
        # Silhouette is undefined with a single label, or with one label per sampled row.
        score = float(silhouette_score(x_sample, labels, metric=metric)) if 2 <= n_labels < len(sample) else -1.0
        scores.append(score)
        if score > best_score:
            best_k, best_score, best_clustering = k, score, clustering
    return best_k, best_clustering, grid, scores


def kcenter_greedy(
    embeddings: np.ndarray,
    budget: int,
    seed: int,
    start: Literal["random", "mean"] = "random",
    previous_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Farthest-point k-center greedy (Gonzalez 1985): a 2-approximation of the minimax covering radius.

    Returns (rows in pick order, L2 distance of each pick to the set before it, final covering
    radius: the largest distance of an unselected row to the selected and previous rows). The first
    pick (when there are no previous rows) has no set to be far from; its score is its own farthest
    distance, so the scores are non-increasing. Ties go to the lower row index.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = x.shape[0]
    sq_norms = np.einsum("ij,ij->i", x, x)
    previous = np.asarray(previous_rows if previous_rows is not None else [], dtype=np.int64)
    if budget > n - len(previous):
        raise ConfigError(f"k-center budget {budget} exceeds the {n - len(previous)} rows not selected before.")
    buffer = np.empty(n, dtype=np.float32)

    def distances_to(row: int) -> np.ndarray:
        # ||x - c||^2 = |x|^2 + |c|^2 - 2 x.c, one matrix-vector product over the corpus.
        np.dot(x, x[row], out=buffer)
        np.multiply(buffer, -2.0, out=buffer)
        np.add(buffer, sq_norms, out=buffer)
        np.add(buffer, sq_norms[row], out=buffer)
        return buffer

    rows = np.empty(budget, dtype=np.int64)
    scores = np.empty(budget, dtype=np.float64)
    if len(previous):
        min_sq, _ = assign(x, x[previous])
        min_sq = min_sq.astype(np.float32)
        min_sq[previous] = -1.0
        first = int(np.argmax(min_sq))
        first_score = math.sqrt(max(float(min_sq[first]), 0.0))
    else:
        if start == "mean":
            first = int(np.argmax(x @ x.mean(axis=0)))
        else:
            first = int(np.random.default_rng(seed).integers(n))
        min_sq = np.full(n, np.inf, dtype=np.float32)
        first_score = None
    rows[0] = first
    np.minimum(min_sq, distances_to(first), out=min_sq)
    min_sq[first] = -1.0  # selected rows are never picked again
    scores[0] = first_score if first_score is not None else math.sqrt(max(float(min_sq.max()), 0.0))
    for i in range(1, budget):
        pick = int(np.argmax(min_sq))
        rows[i] = pick
        scores[i] = math.sqrt(max(float(min_sq[pick]), 0.0))
        np.minimum(min_sq, distances_to(pick), out=min_sq)
        min_sq[pick] = -1.0
    radius = math.sqrt(max(float(min_sq.max()), 0.0)) if budget + len(previous) < n else 0.0
    return rows, scores, radius


class KMeansSampler(Sampler):
    name = "kmeans"
    description = "kMQ: k-means clusters (k = budget/5), budget in proportion to cluster size, quality-weighted spatially balanced draws inside each cluster; iterative refinement from training feedback; optional k by silhouette or k-center greedy."
    Options = KMeansOptions
    requires_positive_quality = False
    handles_previous_rows = True

    def quality_requirement(self) -> str | None:
        # Draws proportional to quality need non-negative weights; softmax weights accept any score.
        return ">= 0" if self.options.quality_weighting == "proportional" else None

    def _select(self, data: SelectionInput, budget: int, seed: int) -> Selection:
        n = data.n_rows
        previous = _previous_rows(data)
        feedback = _feedback(data, previous)
        if budget > n - len(previous):
            raise ConfigError(
                f"Budget of {budget} rows exceeds the {n - len(previous)} rows not selected in earlier rounds; "
                "pass a smaller budget for this round."
            )
        if self.options.method == "kcenter":
            return self._kcenter(data, budget, seed, previous, feedback)
        if len(previous):
            return self._refine(data, budget, seed, previous, feedback)
        return self._static(data, budget, seed)

    def _static(self, data: SelectionInput, budget: int, seed: int) -> Selection:
        opts = self.options
        n = data.n_rows
        silhouette: dict = {}
        clustering = None
        if opts.k is not None:
            k = opts.k
        elif opts.k_selection == "silhouette":
            k, clustering, grid, scores = choose_k_by_silhouette(
                data.embeddings, budget, seed, opts.n_iter, opts.silhouette_sample_size, opts.silhouette_metric,
                opts.rows_per_cluster, opts.max_k,
            )
            silhouette = {"silhouette_k_grid": grid, "silhouette_scores": scores, "silhouette_metric": opts.silhouette_metric}
        else:
            k = default_k(budget, n, opts.rows_per_cluster, opts.max_k)
        if k > n:
            raise ConfigError(f"kmeans option k={k} is larger than the {n} usable rows; pass a smaller k.")
        if clustering is None:
            clustering = kmeans(data.embeddings, k, seed=seed, n_iter=opts.n_iter)
        sizes = clustering.sizes()
        quotas = allocate_quotas(sizes, budget)
        rng = np.random.default_rng(seed)
        members_of = _members_by_cluster(clustering.assignments, k)
        per_cluster, probs = self._draw(data, clustering.assignments, members_of, quotas, rng)
        rows, scores, clusters = _round_robin(per_cluster, probs, sizes)
        cluster_weights = sizes / sizes.sum()
        return Selection(
            rows=rows,
            scores=scores,
            weights=np.ones(budget),
            clusters=clusters,
            diagnostics={
                "method": "kmq",
                "round": "static",
                "k": int(k),
                "k_chosen_from_budget": opts.k is None and opts.k_selection == "budget",
                "k_selection": "fixed" if opts.k is not None else opts.k_selection,
                **silhouette,
                "inertia": clustering.inertia,
                "cluster_sizes": sizes.tolist(),
                "quotas": quotas.tolist(),
                "cluster_weights": cluster_weights.tolist(),
                "quality_weighting": opts.quality_weighting if data.quality is not None else "uniform",
                "within_cluster": opts.within_cluster,
                "next_round_options": _next_round_options(k, cluster_weights),
            },
        )

    def _refine(
        self, data: SelectionInput, budget: int, seed: int, previous: np.ndarray, feedback: np.ndarray | None
    ) -> Selection:
        opts = self.options
        n = data.n_rows
        k = opts.k if opts.k is not None else len(opts.previous_cluster_weights or [])
        if k == 0:
            raise ConfigError(
                "A refinement round (previous_rows given) needs the first round's k so the clusters are the same: "
                "pass k (or previous_cluster_weights) from that round's diagnostics next_round_options, with k_selection='budget'."
            )
        if k > n:
            raise ConfigError(f"kmeans option k={k} is larger than the {n} usable rows; pass a smaller k.")
        clustering = kmeans(data.embeddings, k, seed=seed, n_iter=opts.n_iter)
        sizes = clustering.sizes()
        taken = np.bincount(clustering.assignments[previous], minlength=k)
        capacity = sizes - taken
        if opts.previous_cluster_weights is not None:
            prior, prior_source = np.asarray(opts.previous_cluster_weights, dtype=np.float64), "option"
        elif opts.refinement_prior == "uniform":
            prior, prior_source = np.full(k, 1.0 / k), "uniform"
        else:
            prior, prior_source = sizes / sizes.sum(), "size"
        s, feedback_counts = cluster_feedback_means(clustering.assignments, k, previous, feedback)
        weights, info = refine_cluster_weights(prior, s, capacity, opts.refinement_weighting, opts.softmax_temperature)
        quotas = allocate_weighted(weights, capacity, budget)
        # A different stream per round, so a repeated seed does not replay the first round's draws.
        rng = np.random.default_rng([seed, len(previous)])
        is_previous = np.zeros(n, dtype=bool)
        is_previous[previous] = True
        members_of = [m[~is_previous[m]] for m in _members_by_cluster(clustering.assignments, k)]
        per_cluster, probs = self._draw(data, clustering.assignments, members_of, quotas, rng)
        rows, scores, clusters = _round_robin(per_cluster, probs, quotas)
        outside = 0
        if feedback is not None:
            outside = int(np.isfinite(feedback).sum() - np.isfinite(feedback[previous]).sum())
        return Selection(
            rows=rows,
            scores=scores,
            weights=np.ones(budget),
            clusters=clusters,
            diagnostics={
                "method": "kmq",
                "round": "refinement",
                "k": int(k),
                "refinement_weighting": opts.refinement_weighting,
                "prior_weights": prior_source,
                "previous_rows": int(len(previous)),
                "feedback_rows_used": int(feedback_counts.sum()),
                "feedback_rows_ignored_not_previous": outside,
                **info,
                "exhausted_clusters": int((capacity == 0).sum()),
                "inertia": clustering.inertia,
                "cluster_sizes": sizes.tolist(),
                "cluster_feedback": [None if not np.isfinite(v) else float(v) for v in s],
                "cluster_weights": weights.tolist(),
                "quotas": quotas.tolist(),
                "quality_weighting": opts.quality_weighting if data.quality is not None else "uniform",
                "within_cluster": opts.within_cluster,
                "next_round_options": _next_round_options(k, weights),
            },
        )

    def _kcenter(
        self, data: SelectionInput, budget: int, seed: int, previous: np.ndarray, feedback: np.ndarray | None
    ) -> Selection:
        rows, scores, radius = kcenter_greedy(data.embeddings, budget, seed, self.options.kcenter_start, previous)
        return Selection(
            rows=rows,
            scores=scores,
            weights=np.ones(budget),
            diagnostics={
                "method": "kcenter",
                "kcenter_start": self.options.kcenter_start if len(previous) == 0 else "previous_rows",
                "previous_rows": int(len(previous)),
                "covering_radius": radius,
                "quality_ignored": data.quality is not None,
                "feedback_ignored": feedback is not None,
                "curves": {"Distance to the selected set at pick time": _subsample_curve(scores)},
            },
        )

    def _draw(self, data: SelectionInput, assignments: np.ndarray, members_of, quotas, rng):
        """Exactly quotas[c] of members_of[c] for each cluster c, and a score per row (its draw or inclusion probability)."""
        if self.options.within_cluster == "balanced":
            return self._draw_balanced(data, assignments, members_of, quotas, rng)
        return self._draw_independent(data.quality, members_of, quotas, rng)

    def _draw_balanced(self, data: SelectionInput, assignments: np.ndarray, members_of, quotas, rng):
        """Spatially balanced draws: π ∝ quality within each cluster (Σπ = quota), pivotal method along a PCA tree."""
        n = data.n_rows
        pi = np.zeros(n, dtype=np.float64)
        for c, members in enumerate(members_of):
            if quotas[c] > 0:
                pi[members] = _quota_probabilities(self._weights(data.quality, members), int(quotas[c]))
        order = spatial_order(data.embeddings, rng, groups=assignments)
        chosen = np.zeros(n, dtype=bool)
        chosen[pivotal_sample(pi, order, rng, groups=assignments)] = True
        per_cluster: list[np.ndarray] = []
        probs: list[np.ndarray] = []
        for c, members in enumerate(members_of):
            picked = members[chosen[members]]
            if len(picked) != quotas[c]:
                # Floating-point residue only: add the likeliest missing members or drop the least likely.
                by_pi = members[np.lexsort((members, -pi[members]))]
                keep = picked[np.lexsort((picked, -pi[picked]))][: quotas[c]]
                extra = by_pi[~np.isin(by_pi, keep)][: quotas[c] - len(keep)]
                picked = np.concatenate([keep, extra])
            picked = picked[rng.permutation(len(picked))]
            per_cluster.append(picked)
            probs.append(pi[picked])
        return per_cluster, probs

    def _draw_independent(self, quality, members_of, quotas, rng):
        """Quality-weighted draws without replacement inside each cluster, in cluster order."""
        per_cluster: list[np.ndarray] = []
        probs: list[np.ndarray] = []
        for c, members in enumerate(members_of):
            if quotas[c] == 0:
                per_cluster.append(members[:0])
                probs.append(np.zeros(0))
                continue
            w = self._weights(quality, members)
            order = weighted_order(w, rng)[: quotas[c]]
            per_cluster.append(members[order])
            probs.append((w / w.sum())[order] if w.sum() > 0 else np.full(len(order), 1.0 / len(members)))
        return per_cluster, probs

    def _weights(self, quality: np.ndarray | None, members: np.ndarray) -> np.ndarray:
        if quality is None:
            return np.ones(len(members))
        q = quality[members].astype(np.float64)
        if self.options.quality_weighting == "softmax":
            return np.exp(q - q.max())
        if q.sum() <= 0:
            return np.ones(len(members))
        return q


def _quota_probabilities(w: np.ndarray, quota: int) -> np.ndarray:
    """Inclusion probabilities min(1, c·w) summing to `quota`; zero-weight rows share what positive ones cannot hold."""
    positive = w > 0
    n_positive = int(positive.sum())
    if n_positive >= quota:
        return inclusion_probabilities(w, quota)[0]
    pi = np.where(positive, 1.0, (quota - n_positive) / max(len(w) - n_positive, 1))
    return pi


def _previous_rows(data: SelectionInput) -> np.ndarray:
    if data.previous_rows is None:
        return np.zeros(0, dtype=np.int64)
    prev = np.asarray(data.previous_rows)
    if prev.size == 0:
        return np.zeros(0, dtype=np.int64)
    if prev.ndim != 1 or not np.issubdtype(prev.dtype, np.integer):
        raise InputError(f"previous_rows must be a 1-D array of row positions; got shape {prev.shape}, dtype {prev.dtype}.")
    if prev.min() < 0 or prev.max() >= data.n_rows:
        raise InputError(
            f"previous_rows holds positions outside 0..{data.n_rows - 1}; were they selected on a different corpus?"
        )
    return np.unique(prev.astype(np.int64))


def _feedback(data: SelectionInput, previous: np.ndarray) -> np.ndarray | None:
    if data.feedback is None:
        return None
    fb = np.asarray(data.feedback, dtype=np.float64)
    if fb.shape != (data.n_rows,):
        raise InputError(f"feedback must have one value per row ({data.n_rows}); got shape {fb.shape}.")
    if np.isinf(fb).any():
        bad = int(np.flatnonzero(np.isinf(fb))[0])
        raise InputError(f"feedback of row {bad} is {fb[bad]}; use a finite score, or NaN for no feedback.")
    if len(previous) == 0 and np.isfinite(fb).any():
        raise InputError(
            "feedback is given but previous_rows is empty; pass the rows selected in earlier rounds "
            "(feedback is read only for them), or drop the feedback for a first round."
        )
    return fb


def _members_by_cluster(assignments: np.ndarray, k: int) -> list[np.ndarray]:
    """Rows of each cluster in ascending order (one stable sort instead of k passes over the corpus)."""
    order = np.argsort(assignments, kind="stable")
    bounds = np.searchsorted(assignments[order], np.arange(k + 1))
    return [order[bounds[c] : bounds[c + 1]] for c in range(k)]


def _next_round_options(k: int, weights: np.ndarray) -> dict:
    return {"k": int(k), "k_selection": "budget", "previous_cluster_weights": [float(w) for w in weights]}


def _subsample_curve(values: np.ndarray, max_points: int = MAX_CURVE_POINTS) -> list[float]:
    if len(values) <= max_points:
        return [float(v) for v in values]
    idx = np.unique(np.linspace(0, len(values) - 1, max_points).round().astype(np.int64))
    return [float(values[i]) for i in idx]


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

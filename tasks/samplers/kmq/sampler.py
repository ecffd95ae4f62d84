"""The kMQ sampler (registered as `kmeans`): static kMQ, refinement rounds and k-center greedy behind one contract."""

import numpy as np

from ...errors import ConfigError, InputError
from ..base import Sampler, Selection, SelectionInput
from ..clustering import kmeans
from ..draws import weighted_order
from ..quotas import allocate_quotas, allocate_weighted
from ..sensitivity.inclusion import inclusion_probabilities, pivotal_sample
from ..sensitivity.spatial_ordering import spatial_order
from .k_choice import choose_k_by_silhouette, default_k
from .kcenter import kcenter_greedy
from .options import KMeansOptions
from .refinement import cluster_feedback_means, refine_cluster_weights


MAX_CURVE_POINTS = 500


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
        previous = _previous_rows(data)
        feedback = _feedback(data, previous)
        if self.options.method == "kcenter":
            return self._kcenter(data, budget, seed, previous=previous, feedback=feedback)
        if len(previous):
            return self._refine(data, budget, seed, previous=previous, feedback=feedback)
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
                data.embeddings, budget, seed, n_iter=opts.n_iter, sample_size=opts.silhouette_sample_size, metric=opts.silhouette_metric,
                rows_per_cluster=opts.rows_per_cluster, max_k=opts.max_k,
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
        per_cluster, probs = self._draw(data, clustering.assignments, members_of, quotas=quotas, rng=rng)
        rows, scores, clusters = _round_robin(per_cluster, probs, sizes)
        cluster_weights = sizes / sizes.sum()
        details = {
            "k_chosen_from_budget": opts.k is None and opts.k_selection == "budget",
            "k_selection": "fixed" if opts.k is not None else opts.k_selection,
            **silhouette,
            "inertia": clustering.inertia,
            "cluster_sizes": sizes.tolist(),
            "quotas": quotas.tolist(),
            "cluster_weights": cluster_weights.tolist(),
        }
        return self._kmq_selection(data, rows, scores, clusters, budget=budget, round_name="static", k=k,
                                   cluster_weights=cluster_weights, details=details)

    def _refine(
        self, data: SelectionInput, budget: int, seed: int, *, previous: np.ndarray, feedback: np.ndarray | None
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
        weights, info = refine_cluster_weights(prior, s, capacity, weighting=opts.refinement_weighting, temperature=opts.softmax_temperature)
        quotas = allocate_weighted(weights, capacity, budget)
        # A different stream per round, so a repeated seed does not replay the first round's draws.
        rng = np.random.default_rng([seed, len(previous)])
        is_previous = np.zeros(n, dtype=bool)
        is_previous[previous] = True
        members_of = [m[~is_previous[m]] for m in _members_by_cluster(clustering.assignments, k)]
        per_cluster, probs = self._draw(data, clustering.assignments, members_of, quotas=quotas, rng=rng)
        rows, scores, clusters = _round_robin(per_cluster, probs, quotas)
        outside = 0
        if feedback is not None:
            outside = int(np.isfinite(feedback).sum() - np.isfinite(feedback[previous]).sum())
        details = {
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
        }
        return self._kmq_selection(data, rows, scores, clusters, budget=budget, round_name="refinement", k=k,
                                   cluster_weights=weights, details=details)

    def _kmq_selection(self, data: SelectionInput, rows, scores, clusters, *, budget: int, round_name: str, k: int,
                       cluster_weights: np.ndarray, details: dict) -> Selection:
        """A kMQ round's Selection: diagnostics are method, round and k, then the round's `details`, then the draw
        settings and the options for the next round (in this order: the report lists them so)."""
        opts = self.options
        return Selection(
            rows=rows,
            scores=scores,
            weights=np.ones(budget),
            clusters=clusters,
            diagnostics={
                "method": "kmq",
                "round": round_name,
                "k": int(k),
                **details,
                "quality_weighting": opts.quality_weighting if data.quality is not None else "uniform",
                "within_cluster": opts.within_cluster,
                "next_round_options": _next_round_options(k, cluster_weights),
            },
        )

    def _kcenter(
        self, data: SelectionInput, budget: int, seed: int, *, previous: np.ndarray, feedback: np.ndarray | None
    ) -> Selection:
        rows, scores, radius = kcenter_greedy(data.embeddings, budget, seed, start=self.options.kcenter_start, previous_rows=previous)
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

    def _draw(self, data: SelectionInput, assignments: np.ndarray, members_of, *, quotas, rng):
        """Exactly quotas[c] of members_of[c] for each cluster c, and a score per row (its draw or inclusion probability)."""
        if self.options.within_cluster == "balanced":
            return self._draw_balanced(data, assignments, members_of, quotas=quotas, rng=rng)
        return self._draw_independent(data.quality, members_of, quotas, rng)

    def _draw_balanced(self, data: SelectionInput, assignments: np.ndarray, members_of, *, quotas, rng):
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

"""The sensitivity sampler: importance sampling by leverage, Lewis weights or clustering sensitivity, drawn at a fixed size."""

import math

import numpy as np

from ...errors import ConfigError, ResourceError
from ..base import Sampler, Selection, SelectionInput
from .coreset import _sq_norms, kmeans_plus_plus, kmeans_sensitivity, lightweight_probabilities
from .inclusion import cap_oversampling, sample_fixed_size
from .leverage import leverage_scores, lewis_weights
from .memory import MEMORY_LIMIT_BYTES, _check_dense_memory
from .options import SensitivityOptions
from .spatial_ordering import spatial_order


def default_k(budget: int, n_rows: int) -> int:
    return int(max(1, min(round(2 * math.sqrt(budget)), n_rows)))


class SensitivitySampler(Sampler):
    name = "sensitivity"
    description = "Sensitivity / leverage-score importance sampling: exactly B distinct rows with unbiased Horvitz-Thompson weights (k-means coreset by default)."
    Options = SensitivityOptions

    def _select(self, data: SelectionInput, budget: int, seed: int) -> Selection:
        opts = self.options
        x = data.embeddings
        n, d = x.shape
        rng = np.random.default_rng(seed)
        # N-sized float64/int64 work arrays (q, π, distances, assignments, order, ...): about 12 per row.
        per_row = 12 * 8 * n
        if per_row > MEMORY_LIMIT_BYTES:
            raise ResourceError(
                f"Sensitivity sampling over {n} rows needs about {per_row / 2**30:.1f} GiB of per-row arrays; "
                "select from a random subset of the corpus first, or use the 'random' sampler."
            )
        diagnostics: dict = {"method": opts.method, "sampling": opts.sampling, "uses_quality": False}
        clusters_all: np.ndarray | None = None
        curves: dict[str, list[float]] = {}

        if opts.method == "kmeans-coreset":
            k = opts.k if opts.k is not None else default_k(budget, n)
            if k > n:
                raise ConfigError(f"sensitivity option k={k} is larger than the {n} usable rows; pass a smaller k.")
            if opts.centres == "kmeans++":
                _, d2, assign = kmeans_plus_plus(x, k, rng)
                k_used = int(assign.max()) + 1
            else:
                from ..clustering import kmeans

                clustering = kmeans(x, k, seed=seed, n_iter=opts.kmeans_iter)
                d2, assign, k_used = clustering.distances.astype(np.float64), clustering.assignments, k
            alpha = max(math.log(k_used), 1.0)
            scores = kmeans_sensitivity(d2, assign, k_used, alpha=alpha)
            # The bound is on N·σ(x) (sensitivity relative to the mean cost), so Σs/N = 6α + 4k is 𝔖.
            total_sensitivity = float(scores.sum()) / n
            clusters_all = assign
            diagnostics.update(
                k=int(k),
                k_chosen_from_budget=opts.k is None,
                k_centres_found=k_used,
                centres=opts.centres,
                alpha=alpha,
                mean_sq_distance_to_centres=float(d2.mean()),
                score_definition="Bachem-Lucic-Krause sensitivity upper bound s(x)",
            )
        elif opts.method == "lightweight":
            scores = lightweight_probabilities(x)
            # An additive-error guarantee, not a multiplicative sensitivity bound: no total to report.
            total_sensitivity = None
            diagnostics["score_definition"] = "q(x) = 1/(2N) + d(x,mean)^2 / (2 Σ d^2)"
        else:
            _check_dense_memory(n, d)
            lam = opts.ridge * float(_sq_norms(x).sum()) / d if opts.ridge > 0 else 0.0
            tau = leverage_scores(x, ridge=lam)
            diagnostics.update(ridge_lambda=lam, leverage_sum=float(tau.sum()))
            if opts.method == "leverage":
                scores = tau
                total_sensitivity = float(tau.sum())
                diagnostics["score_definition"] = "ℓ2 leverage τ (sum = rank, or effective dimension with ridge)"
            else:
                if opts.lewis_proxy == "lewis":
                    sigma, info = lewis_weights(x, p=opts.p, n_iter=opts.lewis_iters, tol=opts.lewis_tol, return_info=True)
                    diagnostics.update(
                        lewis_iterations=info["iterations"], lewis_residual=info["residual"], lewis_converged=info["converged"]
                    )
                    curves["Lewis fixed point: largest relative change per iteration"] = [float(c) for c in info["changes"]]
                else:
                    sigma = tau ** (opts.p / 2.0)
                total_sensitivity = float(sigma.sum())
                diagnostics.update(p=opts.p, lewis_proxy=opts.lewis_proxy, leverage_mix=opts.leverage_mix)
                beta = opts.leverage_mix
                sigma_sum, tau_sum = sigma.sum(), tau.sum()
                scores = (1 - beta) * (sigma / sigma_sum if sigma_sum > 0 else 0.0) + beta * (tau / tau_sum if tau_sum > 0 else 0.0)
                diagnostics["score_definition"] = "q = (1-β)·σ/Σσ + β·τ/Στ, σ the ℓp sensitivity bound; total_sensitivity = Σσ"

        diagnostics["total_sensitivity"] = total_sensitivity
        total = float(np.sum(scores))
        q = scores / total if total > 0 else np.full(n, 1.0 / n)
        if opts.uniform_mix > 0:
            q = (1.0 - opts.uniform_mix) * q + opts.uniform_mix / n
        diagnostics["uniform_mix"] = opts.uniform_mix
        if opts.max_oversampling is not None:
            q = cap_oversampling(q, opts.max_oversampling)
        diagnostics["max_oversampling"] = opts.max_oversampling

        if opts.order == "tree":
            # Neighbours in embedding space are pivotal siblings: spatially balanced, near-duplicates compete.
            order = spatial_order(x, rng)
        elif opts.order == "cluster" and clusters_all is not None:
            # Cluster-sorted order: pivotal siblings share a cluster, so each cluster's count stays near its expectation.
            order = np.lexsort((rng.random(n), clusters_all))
        else:
            order = rng.permutation(n)
        diagnostics["order"] = opts.order
        rows, pi, c = sample_fixed_size(q, budget, rng, scheme=opts.sampling, order=order)
        rows = rows[rng.permutation(budget)]
        weights = 1.0 / pi[rows]

        diagnostics.update(
            expected_draws_c=c if math.isfinite(c) else None,
            rows_taken_with_certainty=int(np.count_nonzero(pi >= 1.0)),
            max_sampling_probability=float(q.max()),
            min_sampling_probability=float(q.min()),
            effective_sample_size=float(weights.sum() ** 2 / np.sum(weights**2)),
            sum_of_weights=float(weights.sum()),
            n_rows=int(n),
        )
        sorted_pi = np.sort(pi)[::-1]
        idx = np.unique(np.linspace(0, n - 1, min(n, 500)).round().astype(np.int64))
        curves["Inclusion probability by rank (all rows)"] = [float(v) for v in sorted_pi[idx]]
        diagnostics["curves"] = curves
        diagnostics["histograms"] = {"Importance weights": _log_histogram(weights)}
        return Selection(
            rows=rows,
            scores=pi[rows],
            weights=weights,
            clusters=clusters_all[rows] if clusters_all is not None else None,
            diagnostics=diagnostics,
        )


def _log_histogram(values: np.ndarray, bins: int = 20) -> dict:
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo * (1 + 1e-9):
        return {"edges": [lo, hi], "counts": [int(len(values))]}
    edges = np.geomspace(lo, hi, bins + 1)
    counts, _ = np.histogram(values, bins=edges)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}

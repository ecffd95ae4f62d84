"""The DPP sampler: greedy MAP or exact k-DPP draws, over the whole pool or inside k-means partitions."""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ...errors import ConfigError, ResourceError
from ..base import Sampler, Selection, SelectionInput
from ..clustering import kmeans
from .blas_threads import _available_cores, single_threaded_blas
from .greedy_map import _greedy_bytes, fast_greedy_map
from .k_dpp import _partition_rng, _sample_bytes, sample_partition
from .kernels import _quality_squared, median_distance
from .log_det import log_det_diversity
from .options import DPPOptions
from .cells import _check_rank, _partition_reason, capped_quotas


# Points kept in the curves of the report.
_CURVE_POINTS = 500


# Above this many row x centroid pairs a single k-means over the pool gets slow (about 20 iterations x
# 384 dims x 1e7 pairs ~ 0.15 TFLOP): partition in two levels, sqrt(k) partitions split again to the target.
_FLAT_KMEANS_PAIRS = 10_000_000


class DPPSampler(Sampler):
    name = "dpp"
    description = "DPP: quality-diversity kernel diag(q)(K+eps I)diag(q); exact k-DPP draws inside k-means partitions (default) or fast greedy MAP."
    Options = DPPOptions
    requires_positive_quality = False
    handles_previous_rows = True

    def quality_requirement(self) -> str | None:
        # Quality scales label mass (MIG) or enters as quality^theta (DPP): negative scores have no meaning there.
        return ">= 0"

    def _select(self, data: SelectionInput, budget: int, seed: int) -> Selection:
        opts = self.options
        x = data.embeddings
        n, dim = x.shape
        rng = np.random.default_rng(seed)
        sigma = None
        if opts.kernel == "rbf":
            sigma = float(opts.sigma) if opts.sigma is not None else median_distance(x, rng)
        q2 = _quality_squared(data.quality, opts.quality_power)
        previous = _previous_rows(data.previous_rows, n)
        # Rank of K before the jitter: the jitter only guards the numerics, picks beyond this rank carry no diversity.
        kernel_rank = n if opts.kernel == "rbf" else min(dim, n)
        settings = {
            "mode": opts.mode,
            "kernel": opts.kernel,
            "sigma": sigma,
            "sigma_from_data": opts.kernel == "rbf" and opts.sigma is None,
            "bandwidth": opts.bandwidth if opts.kernel == "rbf" and opts.sigma is None else None,
            "jitter": opts.jitter,
            "quality_power": opts.quality_power,
            "quality_used": q2 is not None,
            "kernel_rank": int(kernel_rank),
            "previous_rows_conditioned": int(len(previous)),
        }
        if opts.mode == "sample":
            sel = self._sample(x, q2, previous, budget=budget, sigma=sigma, kernel_rank=kernel_rank, seed=seed)
        else:
            sel = self._greedy(x, q2, previous, budget=budget, sigma=sigma, kernel_rank=kernel_rank, seed=seed)
        sel.diagnostics = {**settings, **sel.diagnostics}
        sel.diagnostics["log_det_diversity"] = log_det_diversity(
            x, sel.rows, kernel=opts.kernel, sigma=sigma, jitter=max(opts.jitter, 1e-10), seed=seed
        )
        _add_report_curves(sel)
        return sel

    # -- greedy MAP ---------------------------------------------------------------------------

    def _greedy(self, x, q2, previous, *, budget, sigma, kernel_rank, seed) -> Selection:
        opts = self.options
        n, dim = x.shape
        limit = int(opts.memory_limit_gib * 2**30)
        factor_bytes = _greedy_bytes(len(previous) + budget, n, dim)
        too_big = factor_bytes > limit
        over_rank = budget + len(previous) > kernel_rank
        partitioned = opts.partition == "always" or (opts.partition == "auto" and (too_big or over_rank))
        if not partitioned:
            if too_big:
                raise ResourceError(
                    f"dpp greedy needs a {len(previous) + budget} x {n} Cholesky factor ({factor_bytes / 2**30:.1f} GiB) "
                    f"above memory_limit_gib={opts.memory_limit_gib}; set partition='auto', raise memory_limit_gib or lower the budget."
                )
            _check_rank(budget + len(previous), kernel_rank, opts, where="the pool")
            with single_threaded_blas():
                rows, gains = fast_greedy_map(
                    x, budget, kernel=opts.kernel, sigma=sigma, jitter=opts.jitter, q2=q2, conditioned_on=previous,
                    rng=_partition_rng(seed, -1),
                )
            diagnostics = {
                "partitioned": False,
                "picks_beyond_kernel_rank": int(max(0, budget + len(previous) - kernel_rank)),
                "factor_gib": factor_bytes / 2**30,
            }
            return Selection(rows=rows, scores=gains, weights=np.ones(budget), diagnostics=diagnostics)
        reason = _partition_reason(opts.partition, budget + len(previous), kernel_rank, x=x, limit=limit)
        return self._partitioned(x, q2, previous, budget=budget, sigma=sigma, seed=seed, limit=limit, reason=reason)

    # -- partitions (both modes) ----------------------------------------------------------------

    def _partitioned(self, x, q2, previous, *, budget, sigma, seed, limit, reason) -> Selection:
        opts = self.options
        sampling = opts.mode == "sample"
        n, dim = x.shape
        # Without jitter a cosine partition holds at most `dim` independent rows.
        per_partition_rank = dim if (opts.kernel == "cosine" and opts.jitter == 0) else None
        target = opts.partition_budget
        if opts.kernel == "cosine":
            target = min(target, dim)
        workers = opts.workers or _available_cores()
        # Partitions run `workers` at a time and share the limit.
        limit = max(1, limit // workers)
        row_cap = opts.sample_max_rows if sampling else None
        if opts.n_partitions is not None:
            k = opts.n_partitions
        else:
            if sampling:
                # Each partition's kernel and eigenvectors (3 m^2 float64) must fit, and m <= sample_max_rows.
                m_fit = min(opts.sample_max_rows, max(2, int(math.sqrt(limit / 24))))
                k_memory = math.ceil(n / m_fit)
            else:
                # Balanced partitions: factor bytes ~ 8 * budget * n / k^2 must fit the limit.
                k_memory = math.ceil(math.sqrt(_greedy_bytes(budget, n, dim) / limit))
            k = max(math.ceil(budget / target), k_memory, 1)
        k = min(k, n)
        if per_partition_rank is not None and budget > k * per_partition_rank:
            raise ConfigError(
                f"dpp: a cosine kernel without jitter gives at most {per_partition_rank} rows per partition, so "
                f"{k} partitions cannot hold a budget of {budget}; raise n_partitions to at least "
                f"{math.ceil(budget / per_partition_rank)}, set jitter > 0 or use kernel='rbf'."
            )
        # One k-means over the pool up to _FLAT_KMEANS_PAIRS row x centroid pairs; beyond, sqrt(k)
        # partitions first and each split again below (same target), which costs about sqrt(k) times less.
        k_first = k if (opts.n_partitions is not None or n * k <= _FLAT_KMEANS_PAIRS) else max(1, math.isqrt(k - 1) + 1)
        labels = kmeans(x, k_first, seed=seed, n_iter=opts.kmeans_iter).assignments
        labels, k, n_split = self._split_oversized(x, labels, k_first, budget=budget, target=target, limit=limit, seed=seed, row_cap=row_cap)
        sizes = np.bincount(labels, minlength=k)
        prev_counts = np.bincount(labels[previous], minlength=k) if len(previous) else np.zeros(k, np.int64)
        free = sizes - prev_counts
        caps = free if per_partition_rank is None else np.minimum(free, per_partition_rank)
        if opts.kernel == "cosine" and per_partition_rank is None and np.minimum(free, dim).sum() >= budget:
            # With jitter a cosine partition could take more than `dim` rows, but those picks carry no diversity.
            caps = np.minimum(free, dim)
        quotas = capped_quotas(free, caps, budget)
        order_by_rows = np.argsort(labels, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        members_of = {int(c): order_by_rows[bounds[c] : bounds[c + 1]] for c in np.flatnonzero(quotas)}
        prev_mask = np.zeros(n, dtype=bool)
        prev_mask[previous] = True
        largest_factor = 0
        for c, members in members_of.items():
            if sampling:
                need = _sample_bytes(int(free[c]))
            else:
                need = _greedy_bytes(int(quotas[c] + prev_counts[c]), len(members), dim)
            largest_factor = max(largest_factor, need)
            if need > limit:
                raise ResourceError(
                    f"dpp: partition {c} ({len(members)} rows, {quotas[c]} to select) needs {need / 2**30:.2f} GiB, above "
                    f"memory_limit_gib={opts.memory_limit_gib} shared by {workers} workers; raise n_partitions, "
                    "lower partition_budget or workers, or raise memory_limit_gib."
                )
        local_sigma = opts.kernel == "rbf" and opts.sigma is None and opts.bandwidth == "partition"
        sigmas: dict[int, float] = {}

        def run(c: int) -> tuple[np.ndarray, np.ndarray]:
            members = members_of[c]
            rng = _partition_rng(seed, c)
            s = sigma
            if local_sigma:
                s = sigmas[c] = median_distance(x[members], rng)
            try:
                if sampling:
                    free_members = members[~prev_mask[members]]
                    local, gains = sample_partition(
                        x[free_members], int(quotas[c]), rng, kernel=opts.kernel, sigma=s, jitter=opts.jitter,
                        q2=q2[free_members] if q2 is not None else None,
                    )
                    return free_members[local], gains
                prev_local = np.flatnonzero(prev_mask[members]) if len(previous) else None
                rows, gains = fast_greedy_map(
                    x[members],
                    int(quotas[c]),
                    kernel=opts.kernel,
                    sigma=s,
                    jitter=opts.jitter,
                    q2=q2[members] if q2 is not None else None,
                    conditioned_on=prev_local,
                    rng=rng,
                )
            except ConfigError as exc:
                raise ConfigError(f"dpp partition {c}: {exc}") from None
            return members[rows], gains

        # Largest partitions first so the workers finish together; results do not depend on the schedule
        # (each partition draws from its own generator, seeded by (seed, partition)).
        schedule = sorted(members_of, key=lambda c: (-int(quotas[c]) * len(members_of[c]), c))
        with single_threaded_blas():
            if workers > 1 and len(schedule) > 1:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    results = dict(zip(schedule, pool.map(run, schedule)))
            else:
                results = {c: run(c) for c in schedule}
        keys = sorted(results)
        rows = np.concatenate([results[c][0] for c in keys])
        gains = np.concatenate([results[c][1] for c in keys])
        parts = np.concatenate([np.full(len(results[c][0]), c, dtype=np.int64) for c in keys])
        # Merge by gain (ties by row); within a greedy partition gains never increase, so its order is kept.
        order = np.lexsort((rows, -gains))
        used = quotas > 0
        diagnostics = {
            "partitioned": True,
            "partition_reason": reason,
            "n_partitions": int(k),
            "first_level_partitions": int(k_first),
            "workers": int(workers),
            "partitions_split_again": int(n_split),
            "partition_size_min_median_max": _min_med_max(sizes[used]),
            "partition_quota_min_median_max": _min_med_max(quotas[used]),
            "log_det_curve_note": "sum of within-partition log pivots; ignores similarity across partitions (an upper bound, Fischer's inequality)",
        }
        if sampling:
            diagnostics["largest_kernel_gib"] = largest_factor / 2**30
        else:
            diagnostics["largest_factor_gib"] = largest_factor / 2**30
        if sigmas:
            values = np.array(list(sigmas.values()))
            diagnostics["partition_sigma_min_median_max"] = [float(values.min()), float(np.median(values)), float(values.max())]
        return Selection(
            rows=rows[order], scores=gains[order], weights=np.ones(budget), clusters=parts[order], diagnostics=diagnostics
        )

    def _split_oversized(self, x, labels, k, *, budget, target, limit, seed, row_cap=None):
        """Split again by k-means any partition whose share of the budget is far above the target, whose
        memory exceeds the limit or (sample mode) whose rows exceed `row_cap`.

        One dominant k-means cluster would otherwise dominate time (quadratic in its quota, or cubic in
        its rows when sampling) and memory. This is also the second level of a two-level partitioning.
        """
        sampling = self.options.mode == "sample"
        sizes = np.bincount(labels, minlength=k)
        shares = budget * sizes / max(1, sizes.sum())
        n_split = 0
        next_label = k
        labels = labels.copy()
        for c in np.flatnonzero(sizes):
            if sampling:
                by_memory = 1
                while _sample_bytes(math.ceil(sizes[c] / by_memory)) > limit:
                    by_memory += 1
            else:
                need = _greedy_bytes(int(math.ceil(shares[c])), int(sizes[c]), x.shape[1])
                by_memory = math.ceil(math.sqrt(need / limit))
            # An explicit n_partitions is only overridden for memory and the row cap.
            big = shares[c] > 2 * target or (self.options.kernel == "cosine" and shares[c] > x.shape[1])
            by_target = math.ceil(shares[c] / target) if big and self.options.n_partitions is None else 1
            by_rows = math.ceil(sizes[c] / row_cap) if row_cap else 1
            parts = max(by_target, by_memory, by_rows)
            parts = min(parts, int(sizes[c]))
            if parts <= 1:
                continue
            members = np.flatnonzero(labels == c)
            sub = kmeans(x[members], parts, seed=seed + 1 + int(c), n_iter=self.options.kmeans_iter).assignments
            # Sub-cluster 0 keeps the label c; the others get new labels.
            new = np.where(sub == 0, c, next_label + sub - 1)
            labels[members] = new
            next_label += parts - 1
            n_split += 1
        # k-means may leave a sub-cluster above the row cap (unbalanced clusters): halve those until none is.
        if row_cap:
            while True:
                sizes = np.bincount(labels, minlength=next_label)
                over = np.flatnonzero(sizes > row_cap)
                if not len(over):
                    break
                for c in over:
                    members = np.flatnonzero(labels == c)
                    parts = math.ceil(len(members) / row_cap) + 1
                    sub = kmeans(x[members], parts, seed=seed + 7 + int(c), n_iter=self.options.kmeans_iter).assignments
                    if np.bincount(sub).max() == len(members):  # identical rows: cut by position
                        sub = np.arange(len(members)) % parts
                    labels[members] = np.where(sub == 0, c, next_label + sub - 1)
                    next_label += parts - 1
                    n_split += 1
        return labels, next_label, n_split

    # -- exact k-DPP sampling -----------------------------------------------------------------

    def _sample(self, x, q2, previous, *, budget, sigma, kernel_rank, seed) -> Selection:
        opts = self.options
        n = x.shape[0]
        pool = np.setdiff1d(np.arange(n), previous) if len(previous) else np.arange(n)
        m = len(pool)
        limit = int(opts.memory_limit_gib * 2**30)
        need = _sample_bytes(m)
        if opts.partition == "always" or (opts.partition == "auto" and (m > opts.sample_max_rows or need > limit)):
            if opts.partition == "always":
                reason = "partition='always'"
            elif m > opts.sample_max_rows:
                reason = "pool above sample_max_rows"
            else:
                reason = "kernel above memory_limit_gib"
            return self._partitioned(x, q2, previous, budget=budget, sigma=sigma, seed=seed, limit=limit, reason=reason)
        if m > opts.sample_max_rows:
            raise ConfigError(
                f"dpp mode='sample' eigendecomposes an N x N kernel and is limited to sample_max_rows={opts.sample_max_rows}; "
                f"the pool has {m} rows. Use partition='auto' or 'always', mode='greedy', or raise sample_max_rows (time grows as N^3)."
            )
        if need > limit:
            raise ResourceError(
                f"dpp mode='sample' needs {need / 2**30:.1f} GiB for the {m} x {m} kernel and its eigenvectors, above "
                f"memory_limit_gib={opts.memory_limit_gib}; use partition='auto', mode='greedy' or raise memory_limit_gib."
            )
        _check_rank(budget, min(kernel_rank, m), opts, where="the pool")
        with single_threaded_blas():
            local, gains, lam = sample_partition(
                x[pool], budget, np.random.default_rng(seed), kernel=opts.kernel, sigma=sigma, jitter=opts.jitter,
                q2=q2[pool] if q2 is not None else None, return_eigenvalues=True,
            )
        diagnostics = {
            "partitioned": False,
            "dpp_expected_size": float(np.sum(lam / (1 + lam))),
            "eigenvalue_max": float(lam.max()),
            "eigenvalues_above_jitter": int(np.sum(lam > max(opts.jitter, 1e-12) * 10)),
        }
        return Selection(rows=pool[local], scores=gains, weights=np.ones(budget), diagnostics=diagnostics)


def _previous_rows(previous: np.ndarray | None, n: int) -> np.ndarray:
    if previous is None or len(previous) == 0:
        return np.zeros(0, dtype=np.int64)
    prev = np.unique(np.asarray(previous, dtype=np.int64))
    return prev[(prev >= 0) & (prev < n)]


def _min_med_max(values: np.ndarray) -> list[int]:
    if len(values) == 0:
        return [0, 0, 0]
    return [int(values.min()), int(np.median(values)), int(values.max())]


def _subsample(curve: np.ndarray) -> list[float]:
    if len(curve) > _CURVE_POINTS:
        idx = np.unique(np.linspace(0, len(curve) - 1, _CURVE_POINTS).round().astype(np.int64))
        curve = curve[idx]
    return [float(v) for v in curve]


def _add_report_curves(sel: Selection) -> None:
    gains = sel.scores
    sel.diagnostics["curves"] = {"Log-det of the selection": _subsample(np.cumsum(gains))}
    counts, edges = np.histogram(gains, bins=min(30, max(1, len(gains))))
    sel.diagnostics["histograms"] = {
        "Marginal log-det gain at pick time": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}
    }
    sel.diagnostics["log_det_total"] = float(np.sum(gains))
    sel.diagnostics["gain_first_last"] = [float(gains[0]), float(gains[-1])]

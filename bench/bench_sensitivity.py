"""Benchmark the sensitivity sampler: wall time and peak memory at N = 10k / 100k / 1M (D = 384, budget 5%),
plus a quality figure: relative error of the weighted k-means cost estimate Σ_S w·cost(x, Q) against the
full cost(X, Q) for random centre sets Q, side by side with a uniform sample of the same size (weights N/B).

    python bench/bench_sensitivity.py [--sizes 10000 100000 1000000] [--methods kmeans-coreset leverage lightweight lewis]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import clustered_embeddings, measure, write_results  # noqa: E402

D = 384
BUDGET_FRACTION = 0.05
N_CENTRE_SETS = 5
CENTRES_PER_SET = 50


def run_one(n: int, method: str, n_seeds: int = 1) -> dict:
    """Runs in a fresh subprocess (bench.common.measure): select with seeds 0..n_seeds-1, then score the
    weighted cost estimate of each selection. Wall time is that of the first (seed 0) selection."""
    import numpy as np

    from selectflow.tasks.samplers import SelectionInput
    from selectflow.tasks.samplers.clustering import assign
    from selectflow.tasks.samplers.sensitivity import SensitivitySampler

    x = clustered_embeddings(n, D, n_clusters=200, seed=0)
    data = SelectionInput(embeddings=x)
    budget = max(1, round(BUDGET_FRACTION * n))
    rng = np.random.default_rng(12345)
    costs = []
    for _ in range(N_CENTRE_SETS):
        cost = assign(x, x[rng.choice(n, CENTRES_PER_SET, replace=False)])[0].astype(np.float64)
        costs.append((cost, cost.sum()))
    walls, errors, uniform_errors = [], [], []
    for seed in range(n_seeds):
        start = time.perf_counter()
        sel = SensitivitySampler({"method": method}).select(data, budget, seed=seed)
        walls.append(time.perf_counter() - start)
        if seed == 0:
            diag = sel.diagnostics
        uniform_rows = np.random.default_rng(seed).choice(n, budget, replace=False)
        for cost, total in costs:
            errors.append(abs(np.sum(sel.weights * cost[sel.rows]) / total - 1))
            uniform_errors.append(abs(cost[uniform_rows].sum() * n / budget / total - 1))
    return {
        "wall_s": walls[0],
        "budget": budget,
        "n_seeds": n_seeds,
        "rel_err_mean": float(np.mean(errors)),
        "rel_err_max": float(np.max(errors)),
        "uniform_rel_err_mean": float(np.mean(uniform_errors)),
        "uniform_rel_err_max": float(np.max(uniform_errors)),
        "ess": diag["effective_sample_size"],
        "certain": diag["rows_taken_with_certainty"],
        "total_sensitivity": diag["total_sensitivity"],
        "lewis_iterations": diag.get("lewis_iterations"),
    }


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--methods", nargs="+", default=["kmeans-coreset", "leverage", "lightweight", "lewis"])
    parser.add_argument(
        "--large-methods",
        nargs="+",
        default=["kmeans-coreset", "leverage", "lightweight"],
        help="methods measured at N >= 1M (lewis costs one leverage pass per fixed-point iteration)",
    )
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per measured run")
    parser.add_argument("--seeds", type=int, default=3, help="sampler seeds for the quality figure (1 at N >= 1M)")
    args = parser.parse_args()

    lines = [
        "# sensitivity sampler benchmark",
        "",
        f"Clustered synthetic embeddings (200 clusters, D={D}, float32, unit norm), budget {BUDGET_FRACTION:.0%}, seed 0, "
        "default options per method. Wall time covers `select` only; peak RSS is the whole child process "
        "(embeddings included: 1.5 GiB at 1M).",
        "",
        f"Quality: relative error |Σ_S w·cost(x,Q) / cost(X,Q) − 1| of the weighted k-means cost for {N_CENTRE_SETS} "
        f"random sets Q of {CENTRES_PER_SET} data rows, over {args.seeds} sampler seeds (1 at 1M), mean (max); \"uniform\" "
        "is a uniform sample of the same size weighted N/B. ESS = Kish effective sample size (Σw)²/Σw². Total sensitivity: "
        "Σs/N = 6α + 4k for kmeans-coreset, rank for leverage, Σ Lewis weights for lewis, none for lightweight.",
        "",
        "| method | N | budget | wall (s) | peak RSS (GiB) | rel. error | uniform rel. error | ratio | ESS | rows with π=1 | total sensitivity |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in args.sizes:
        for method in args.methods if n < 1_000_000 else [m for m in args.methods if m in args.large_methods]:
            print(f"measuring {method} at N={n} ...", flush=True)
            n_seeds = args.seeds if n < 1_000_000 else 1
            r = measure("bench.bench_sensitivity", "run_one", {"n": n, "method": method, "n_seeds": n_seeds}, timeout=args.timeout)
            ratio = r["rel_err_mean"] / r["uniform_rel_err_mean"] if r["uniform_rel_err_mean"] > 0 else float("nan")
            row = (
                f"| {method} | {n:,} | {r['budget']:,} | {r['wall_s']:.1f} | {r['peak_rss_gib']:.2f} | "
                f"{r['rel_err_mean']:.4f} ({r['rel_err_max']:.4f}) | {r['uniform_rel_err_mean']:.4f} ({r['uniform_rel_err_max']:.4f}) | "
                f"{ratio:.2f} | {r['ess']:.0f} | {r['certain']} | {_fmt(r['total_sensitivity'])} |"
            )
            print(row, flush=True)
            lines.append(row)
    lines += [
        "",
        "ratio = sensitivity relative error / uniform relative error (below 1: the importance weights help).",
        "At 1M the default k = round(2·sqrt(B)) = 447 exceeds the 200 true clusters, and the pivotal design walks the rows "
        "cluster by cluster, so each k-means++ cluster gets its expected share (implicit stratification): that, not the "
        "weights alone, is why kmeans-coreset beats uniform there. A check at 100k with k=400 (3 seeds × 5 Q) gave mean "
        "relative error 0.0019 (pivotal) / 0.0008 (systematic) against 0.0032 with the default k=141. The 450 rows with "
        "π=1 are most likely k-means++ centres left (nearly) alone in their cluster, where s ≥ 4N/n_x is large (not checked row by row).",
        "Timings were taken on a 2-core machine shared with other jobs (load average above 2), so they are upper bounds.",
    ]
    path = write_results("sensitivity", "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

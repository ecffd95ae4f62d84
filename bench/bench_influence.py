"""Benchmark of the influence sampler: wall time and peak memory at 10k / 100k / 1M rows, the cost of
each score at one size, and the closed-form (factored) target influence against torch.func
per-example gradients on the same rows, and the quality of the default against random on the demo
and bundled corpora (bench/tune_quality.py) when their cached embeddings exist.

    python bench/bench_influence.py [--sizes 10000 100000 1000000] [--score-sizes 100000] [--ratio-rows 2000]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import clustered_embeddings, measure, write_results  # noqa: E402
from bench.common import quality_section as common_quality_section  # noqa: E402

D = 384
BUDGET_FRACTION = 0.05
# The default before the quality fix: top EL2N per class, no near-duplicate skipping, k from N only.
PREVIOUS_DEFAULT = {"mode": "top", "dedup_similarity": None}


def quality_section(demo_embeddings: str, bundled_embeddings: str) -> list[str]:
    """The tune_quality tables (default and previous default against random) for the corpora whose embeddings are cached."""
    previous = "influence:mode=top,dedup_similarity=null"
    intro = [
        "Run as `selectflow select --sampler influence` runs it (no labels, so k-means pseudo-labels; no quality).",
        "Scores: macro-F1 of a logistic regression on the selected rows predicting the family, template coverage,",
        "mean cosine distance from each test row to its nearest selected row, near-duplicate rate (cosine > 0.95).",
        "Mean over seeds 0, 1, 2 (random: 0-4). 'influence' is the default; the last row is the previous default",
        "(top EL2N per class, no near-duplicate skipping; its k then also follows the budget).",
    ]
    return common_quality_section(["influence", previous], intro, demo_embeddings, bundled_embeddings)


def run_select(n: int, options: dict, seed: int = 0) -> dict:
    """One InfluenceSampler.select on clustered synthetic embeddings (generation not timed)."""
    from selectflow.tasks.samplers import SelectionInput
    from selectflow.tasks.samplers.influence import InfluenceSampler

    x = clustered_embeddings(n, D, seed=seed)
    # A target set drawn from the same distribution (another seed), for the target score.
    targets = clustered_embeddings(500, D, seed=seed + 1) if options.get("score") == "target" else None
    data = SelectionInput(embeddings=x, target_embeddings=targets)
    budget = max(1, round(BUDGET_FRACTION * n))
    start = time.perf_counter()
    sel = InfluenceSampler(options).select(data, budget, seed=seed)
    wall = time.perf_counter() - start
    d = sel.diagnostics
    return {
        "wall_s": wall,
        "seconds": d["seconds"],
        "classes": d["n_classes"],
        "steps": d["training_steps"],
        "accuracy": d["final_minibatch_accuracy"],
    }


def run_target_ratio(n: int, n_targets: int = 200, model: str = "linear", seed: int = 0) -> dict:
    """Time target_influence with the factored closed form and with per-example autograd gradients."""
    import numpy as np
    import torch

    from selectflow.tasks.samplers.clustering import assign, kmeans
    from selectflow.tasks.samplers.influence import default_lr, default_pseudo_k, target_influence, train_proxy

    torch.set_num_threads(1)  # as the sampler runs by default
    x = clustered_embeddings(n, D, seed=seed)
    k = default_pseudo_k(100_000)  # the class count of a 100k-row corpus, so the head has its usual size
    clustering = kmeans(x, k, seed=seed)
    y = clustering.assignments
    proxy = train_proxy(x, y, k, model=model, batch_size=256, lr=default_lr(model), epochs=2, n_checkpoints=6, seed=seed)
    targets = clustered_embeddings(n_targets, D, seed=seed + 1)
    target_y = assign(targets, clustering.centroids)[1]
    start = time.perf_counter()
    fast = target_influence(proxy, x, y, targets=targets, target_y=target_y, method="factored")
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    slow = target_influence(proxy, x, y, targets=targets, target_y=target_y, method="per_example")
    slow_s = time.perf_counter() - start
    return {
        "wall_s": fast_s + slow_s,
        "factored_s": fast_s,
        "per_example_s": slow_s,
        "ratio": slow_s / fast_s,
        "max_rel_diff": float(np.max(np.abs(fast - slow)) / np.max(np.abs(slow))),
        "params": proxy.n_params(),
        "checkpoints": len(proxy.checkpoints),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--score-sizes", type=int, nargs="*", default=[100_000], help="sizes for the per-score table")
    parser.add_argument("--ratio-rows", type=int, nargs="*", default=[2000], help="rows for the factored-vs-autograd comparison")
    parser.add_argument("--timeout", type=int, default=1200)
    parser.add_argument("--demo-embeddings", default="/tmp/demo_emb.parquet")
    parser.add_argument("--bundled-embeddings", default="/tmp/bundled_emb.parquet")
    args = parser.parse_args()
    module = "bench.bench_influence"

    lines = [
        "# influence sampler",
        "",
        f"Clustered synthetic embeddings (D={D}, 200 centres), budget {BUDGET_FRACTION:.0%}, seed 0. Default options: "
        "linear softmax head, k-means pseudo-labels (k = max(round(sqrt(N/10)), ceil(budget/8)) clipped to 2..100), 3 epochs of SGD, "
        "6 checkpoints, one torch thread, score EL2N averaged over the 2 earliest checkpoints, class-balanced score-stratified "
        "draws (one per equal-count score stratum) skipping near-duplicates (cosine > 0.95). "
        "Each run is a fresh subprocess; peak RSS includes the embeddings themselves (N x 1.5 KiB). "
        "**Timings were taken on a shared 2-core machine under load from other jobs (load average 3-10, varying between runs: compare rows with care), so they are upper bounds.**",
        "",
    ]
    lines += quality_section(args.demo_embeddings, args.bundled_embeddings)
    lines += [
        "## Scale (default options; previous default: top selection, no near-duplicate skipping)",
        "",
        "| N | configuration | classes | wall (s) | k-means (s) | train (s) | score (s) | select (s) | SGD steps | peak RSS (GiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in args.sizes:
        for label, options in (("default", {}), ("previous default", PREVIOUS_DEFAULT)):
            r = measure(module, "run_select", {"n": n, "options": options}, timeout=args.timeout)
            s = r["seconds"]
            lines.append(
                f"| {n:,} | {label} | {r['classes']} | {r['wall_s']:.1f} | {s['classes']:.1f} | {s['train']:.1f} | {s['score']:.1f} "
                f"| {s['select']:.2f} | {r['steps']} | {r['peak_rss_gib']:.2f} |"
            )
            print(lines[-1], flush=True)

    scores = [
        ("el2n", {}),
        ("grand", {"score": "grand"}),
        ("forgetting (10 evals/epoch)", {"score": "forgetting"}),
        ("vog (6 checkpoints)", {"score": "vog"}),
        ("target (500 targets, dot)", {"score": "target"}),
        ("target (cosine, LESS)", {"score": "target", "target_cosine": True}),
        ("self_influence", {"score": "self_influence"}),
        ("el2n + UCB balance", {"balance": "ucb"}),
        ("el2n, MLP proxy (hidden 128)", {"model": "mlp"}),
        ("grand, MLP proxy", {"model": "mlp", "score": "grand"}),
    ]
    for n in args.score_sizes:
        lines += [
            "",
            f"## Cost of each score at N = {n:,}",
            "",
            "| score | wall (s) | train (s) | score (s) | peak RSS (GiB) |",
            "|---|---|---|---|---|",
        ]
        for label, options in scores:
            r = measure(module, "run_select", {"n": n, "options": options}, timeout=args.timeout)
            s = r["seconds"]
            lines.append(f"| {label} | {r['wall_s']:.1f} | {s['train']:.1f} | {s['score']:.1f} | {r['peak_rss_gib']:.2f} |")
            print(lines[-1], flush=True)

    if args.ratio_rows:
        lines += [
            "",
            "## Target influence: factored closed form vs torch.func per-example gradients (same rows)",
            "",
            "Same proxy (100 pseudo-label classes, 6 checkpoints), 200 target rows; `per_example` materialises every "
            "row's gradient with `torch.func.vmap(grad(...))` in chunks and dots it with the mean target gradient.",
            "",
            "| rows | proxy | parameters | factored (s) | per-example autograd (s) | ratio | max relative difference |",
            "|---|---|---|---|---|---|---|",
        ]
        for n in args.ratio_rows:
            for model in ("linear", "mlp"):
                r = measure(module, "run_target_ratio", {"n": n, "model": model}, timeout=args.timeout)
                lines.append(
                    f"| {n:,} | {model} | {r['params']:,} | {r['factored_s']:.3f} | {r['per_example_s']:.2f} "
                    f"| {r['ratio']:.0f}x | {r['max_rel_diff']:.1e} |"
                )
                print(lines[-1], flush=True)
    path = write_results("influence", "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

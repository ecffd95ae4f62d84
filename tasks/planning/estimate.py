"""`--dry-run`: what a run would do, what it would reuse, and what it would cost on this machine.

Estimates come from N, D, the budget and measured rates: encoder throughput in tokens per second
per core (from bench/results/embed.md), and each sampler's measured seconds per million rows at a
5% budget on 2 cores (bench/results/samplers.md). They are planning figures, good to a factor of
about two, not promises.
"""

import os
from dataclasses import dataclass, field

GIB = 2**30
# Measured on 2 cores (see the bench/results files named in the module docstring).
TOKENS_PER_SECOND_PER_CORE = 4_000
GPU_SPEEDUP = 30.0
SECONDS_PER_MILLION_ROWS = {"random": 1.0, "kmeans": 9.0, "mig": 19.0, "sensitivity": 45.0, "influence": 23.0, "dpp": 58.0}
CHARS_PER_TOKEN = 4.0


@dataclass
class StagePlan:
    stage: str
    action: str
    seconds: float
    peak_bytes: float


@dataclass
class Plan:
    stages: list[StagePlan] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"{'stage':<9} {'est. time':>10} {'est. peak memory':>17}  what happens"]
        for s in self.stages:
            lines.append(f"{s.stage:<9} {_duration(s.seconds):>10} {s.peak_bytes / GIB:>13.2f} GiB  {s.action}")
        total = sum(s.seconds for s in self.stages)
        peak = max((s.peak_bytes for s in self.stages), default=0)
        lines.append(f"{'total':<9} {_duration(total):>10} {peak / GIB:>13.2f} GiB  (peak of the stages)")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def machine_memory_bytes() -> float:
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):
        return 8.0 * GIB


def sampler_peak_bytes(sampler: str, options: dict, *, n: int, d: int, budget: int) -> tuple[float, str | None]:
    """Peak memory of one sampler run and, when it may not fit, the option that avoids it."""
    embeddings = n * d * 4.0
    if sampler == "dpp":
        factor = budget * n * 8.0
        limit = float(options.get("memory_limit_gib", 2.0)) * GIB
        if options.get("mode") == "sample":
            return embeddings + n * n * 8.0 * 2, "mode=greedy (the exact k-DPP sampler builds an N x N kernel)"
        if factor > limit and options.get("partition") == "never":
            return embeddings + factor, "-o partition=auto (partitioned greedy) or a smaller budget"
        return embeddings + min(factor, limit), None
    if sampler == "sensitivity" and options.get("method") in ("leverage", "lewis"):
        return embeddings + min(n, 100_000) * d * 8.0 * 2 + d * d * 8.0 * 4, None
    if sampler == "mig":
        return embeddings + float(options.get("memory_budget_gib", 4.0)) * GIB * 0.5, None
    if sampler == "influence":
        return embeddings * 1.4, None
    return embeddings * 1.3 + n * 16.0, None


def make_plan(*, n_rows: int, n_to_encode: int, mean_chars: float, dim: int, budget: int, sampler: str,
              options: dict, device: str, cores: int | None = None, own_embeddings: bool = False,
              index_kind: str = "flat") -> Plan:
    cores = cores or os.cpu_count() or 1
    plan = Plan()
    plan.stages.append(StagePlan("corpus", f"read and validate {n_rows:,} rows", n_rows / 150_000, 300e6))
    if own_embeddings:
        plan.stages.append(StagePlan("embed", "use the given embeddings (no encoding)", n_rows * dim * 4 / 500e6, n_rows * dim * 4.0))
    else:
        tokens = n_to_encode * min(256.0, mean_chars / CHARS_PER_TOKEN + 2)
        rate = TOKENS_PER_SECOND_PER_CORE * cores * (GPU_SPEEDUP if device.startswith("cuda") else 1.0)
        reused = n_rows - n_to_encode
        plan.stages.append(StagePlan("embed", f"encode {n_to_encode:,} texts, reuse {reused:,} from the embedding store",
                                     tokens / rate, 1.2e9 + min(n_to_encode, 50_000) * mean_chars * 2))
    index_seconds = n_rows / 100_000 * (15.5 if index_kind == "hnsw" else 5.0 if index_kind == "ivf" else 0.1)
    plan.stages.append(StagePlan("index", f"FAISS {index_kind} index", index_seconds, n_rows * dim * 4.0 * 2))
    per_million = SECONDS_PER_MILLION_ROWS.get(sampler, 60.0) * (2.0 / cores)
    select_seconds = per_million * n_rows / 1e6 * (max(budget / (0.05 * n_rows), 1.0) if sampler == "dpp" else 1.0)
    peak, fix = sampler_peak_bytes(sampler, options, n=n_rows, d=dim, budget=budget)
    plan.stages.append(StagePlan("select", f"{sampler}: {budget:,} of {n_rows:,} rows", select_seconds, peak))
    plan.stages.append(StagePlan("report", "selected.parquet, manifest, report (metrics on samples)",
                                 5.0 + n_rows / 200_000, n_rows * dim * 4.0 + 500e6))
    available = machine_memory_bytes()
    for stage in plan.stages:
        if stage.peak_bytes > 0.8 * available:
            hint = f"; use {fix}" if fix and stage.stage == "select" else ""
            plan.warnings.append(
                f"the {stage.stage} stage needs about {stage.peak_bytes / GIB:.1f} GiB of this machine's "
                f"{available / GIB:.1f} GiB{hint}."
            )
    if fix and not any("select" in w for w in plan.warnings) and peak > 0.5 * available:
        plan.warnings.append(f"{sampler} may run short of memory; {fix}.")
    return plan

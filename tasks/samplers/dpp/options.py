"""Options of the DPP sampler."""

from typing import Literal

from pydantic import Field

from ..base import SamplerOptions


class DPPOptions(SamplerOptions):
    mode: Literal["greedy", "sample"] = Field(
        default="sample",
        description="sample (default): an exact k-DPP draw (Kulesza & Taskar) inside each k-means partition, seeded. greedy: fast greedy MAP (Chen et al. 2018), the most diverse set, which without a quality column favours outlying rows.",
    )
    kernel: Literal["rbf", "cosine"] = Field(
        default="rbf",
        description="Similarity K: rbf exp(-|x-y|^2/(2 sigma^2)) is full rank; cosine x.y has rank <= embedding dim, so it gives at most that many diverse rows per partition.",
    )
    sigma: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="RBF bandwidth sigma. Empty: the median heuristic, the median pairwise distance of up to 1,000 sampled rows, of each partition or of the pool (see bandwidth).",
    )
    bandwidth: Literal["partition", "pool"] = Field(
        default="partition",
        description="Where the median heuristic measures sigma when sigma is empty: partition = inside each k-means partition (the kernel then tells apart rows at the scale one partition spans), pool = over the whole pool (one sigma everywhere).",
    )
    jitter: float = Field(
        default=1e-6,
        ge=0,
        le=1,
        description="epsilon added to the diagonal of K (K + eps*I): keeps the kernel full rank and every pivot >= eps. 0 means the pure kernel (then a budget above its rank is an error).",
    )
    quality_power: float = Field(
        default=1.0,
        ge=0,
        le=10,
        description="theta in q = quality^theta. 0 ignores quality (pure diversity); 1 is Wang et al.'s L = diag(q) K diag(q); larger weighs quality more.",
    )
    partition: Literal["auto", "never", "always"] = Field(
        default="always",
        description="Run inside k-means partitions with budget in proportion to partition size: always (default); auto = only when needed (greedy: the Cholesky factor, budget x rows x 8 bytes, exceeds memory_limit_gib or the budget exceeds the kernel rank; sample: the pool exceeds sample_max_rows or memory); never (error if it does not fit).",
    )
    partition_budget: int = Field(
        default=2,
        ge=1,
        le=100_000,
        description="Target rows selected per partition: partitions = ceil(budget / partition_budget) unless n_partitions is set, so each partition spans about partition_budget x rows / budget rows. Greedy cost grows as rows x partition_budget x (partition_budget + dim).",
    )
    n_partitions: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Number of k-means partitions in partitioned mode. Empty: from partition_budget, memory_limit_gib, sample_max_rows and the kernel rank.",
    )
    memory_limit_gib: float = Field(
        default=2.0,
        gt=0,
        le=1024,
        description="Memory allowed for the greedy Cholesky factor (and the N x N kernel in sample mode), in GiB.",
    )
    sample_max_rows: int = Field(
        default=3000,
        ge=2,
        le=50_000,
        description="Largest pool (partition='never') or partition mode=sample eigendecomposes (an N x N kernel, O(N^3) time); larger partitions are split again by k-means.",
    )
    kmeans_iter: int = Field(default=20, ge=1, le=300, description="Lloyd iterations of the partitioning k-means.")
    workers: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Partitions run at the same time (threads, each with single-threaded BLAS; memory_limit_gib is shared between them). Empty: the number of CPU cores available.",
    )

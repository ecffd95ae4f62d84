"""DPP selection: a quality-diversity kernel, exact k-DPP sampling in partitions or fast greedy MAP.

Default (departure from Wang et al., who run greedy MAP over the whole pool): the pool is cut into
ceil(budget / partition_budget) FAISS k-means partitions (partition_budget = 2, so each partition
spans about 2·N/budget rows), the budget is split in proportion to partition size, and one exact
k-DPP draw (Kulesza & Taskar) is taken inside each partition, seeded by (seed, partition); the RBF
bandwidth is the median heuristic measured inside each partition (`bandwidth="partition"`).
Why: without a quality column greedy MAP with an RBF kernel over the whole pool is a k-center
heuristic: on the demo data (7,040 rows, 1% to 10%) 42% of its picks at 5% came from the sparsest
decile of the pool, template coverage fell to 0.82 against random's 1.00, and its first pick was the
argmax of a constant, row 0, so the seed changed nothing. Sampling (not MAP) keeps each partition's
draw representative rather than extreme, the size-proportional quotas give dense regions their
share (the "partition the pool" remedy of the reference notes, used here for quality and not only
for scale), and the per-partition bandwidth makes the kernel tell apart rows at the scale a
partition spans, where the pool-wide median distance (about 1.36 on unit vectors) made every
partition look like one point. On the demo data this beats random on macro-F1, template coverage,
coverage distance and near-duplicate rate at 1%, 5% and 10% (bench/results/dpp.md); partition_budget
4 lost coverage distance at 1%. Pools above 1e7 row x centroid pairs are partitioned in two levels
(about sqrt(k) partitions, each split again to the target). Partitions above sample_max_rows are
split again, since the draw eigendecomposes the partition's kernel (O(m^3)); a quota of one row is
drawn directly with P(i) ∝ L_ii.
Greedy MAP (`mode="greedy"`) keeps the previous behaviour, except that exact ties of the gain (the
first pick without quality) are broken by the seed instead of going to the lowest row.

Kernel (P. Wang et al., "Diversity Measurement and Subset Selection for Instruction Tuning
Datasets", arXiv 2402.02318): L = diag(q) · (K + εI) · diag(q), with K an RBF kernel
exp(-‖x-y‖² / (2σ²)) or the cosine kernel x·y on the unit-norm embeddings, q = quality^θ
(constant 1 without a quality column), so that log det L_Y = 2 Σ_Y log q + log det (K + εI)_Y.
The quality exponent θ (`quality_power`) plays the part of Chen et al.'s quality/diversity
trade-off: their L = diag(e^{αr}) S diag(e^{αr}) with r = log quality is θ = α = t / (2(1 - t)) for
their weight t, i.e. maximising t Σ r + (1 - t) log det S_Y; θ = 1 is Wang et al.'s kernel.

Greedy MAP (default) is the incremental-Cholesky algorithm of Chen, Zhang and Zhou, "Fast Greedy
MAP Inference for Determinantal Point Process to Improve Recommendation Diversity" (NeurIPS 2018).
Where it differs from their reference code (laming-chen/fast-map-dpp `dpp.py`):
  - the code takes the full M x M kernel; here one kernel row per step is computed from the
    embeddings, so memory is O(N·B) (the factor) and never N x N;
  - the code stops early when the best pivot d² falls below 1e-10 and returns fewer items; here the
    budget is exact: the jitter ε keeps every pivot ≥ ε, and with ε = 0 a numerically singular
    kernel raises a ConfigError instead of returning fewer rows;
  - the factorisation runs on the unit-diagonal K + εI and the quality enters at the argmax
    (d²_L = q² d²_K, algebraically identical), which keeps the Cholesky well scaled.
Partitioned, greedy (or the draw) runs in each partition and the picks are merged in order of
their gain (it ignores similarity across partitions).

Exact k-DPP sampling (`mode="sample"`, per partition or over the whole pool with partition="never") follows Kulesza and Taskar (2012), Alg. 7-8, as DPPy's
`sample_exact_k_dpp` with its default 'GS' phase 2 (Gram-Schmidt updates of the residual norms,
O(N k²)) rather than the paper's re-orthogonalisation at each step; the elementary symmetric
polynomials are computed in log space (DPPy computes them directly, which overflows for large k).

Not taken from the paper: the unconstrained-MAP stop (d² < 1) is not used, the budget decides;
rows of earlier rounds (`previous_rows`) are conditioned on (greedy) or excluded (sample) and never
returned; the kernel rank used by the checks is that of K before the jitter (min(N, D) for cosine),
because picks past it are ordered by quality alone.
"""

from .blas_threads import single_threaded_blas
from .greedy_map import fast_greedy_map, naive_greedy_map
from .k_dpp import log_elementary_symmetric, sample_k_dpp, sample_partition
from .kernels import kernel_matrix, median_distance
from .log_det import log_det_diversity
from .options import DPPOptions
from .cells import capped_quotas
from .sampler import DPPSampler

__all__ = [
    "DPPOptions", "DPPSampler", "capped_quotas", "fast_greedy_map", "kernel_matrix", "log_det_diversity",
    "log_elementary_symmetric", "median_distance", "naive_greedy_map", "sample_k_dpp", "sample_partition",
    "single_threaded_blas",
]

"""MIG: greedy maximisation of information gain over a label graph.

Chen et al., "MIG: Automatic Data Selection for Instruction Tuning by Maximizing Information Gain in
Semantic Space" (ACL Findings 2025, arXiv 2504.13835); reference code yichengchen24/MIG.

Each row d carries a label set L_d and a quality s_d; its raw label vector is e_d = s_d * 1[L_d]
(or s_d / |L_d| per label with `normalize_by_label_count`, the code's `--norm`). Labels are linked
by cosine similarity above a threshold tau, W' = diag(W) + alpha * offdiag(W), and information is
propagated along a non-negative A built from W': e_hat_d = A e_d. The information of a set S is

    E(S) = sum_k phi( [sum_{d in S} e_hat_d]_k ),   phi concave: x^b (paper b=0.8, default here 0.5) or 1 - exp(-a x),

and rows are picked greedily, one at a time, by marginal gain. The defaults below are x^0.5 and
exact gains.

Paper vs reference code, both offered:
- gain="exact" (default): the paper's marginal gain E(S + d) - E(S) (Eqs. 9-11), for which the
  (1 - 1/e) greedy guarantee holds (E is monotone submodular, App. C).
- gain="linearized": the reference code's first-order gain <e_hat_d, phi'(x_S)>, with
  phi'(x) = b (x + 1e-6)^(b-1) for the power phi as in `Phi.derivative` (mig/information.py).

Departures from the paper and the reference code, and why. The measurements are the protocol of
bench/tune_quality.py on the demo data (8,800 rows, 8 families, 44 templates; pool 7,040; budgets 1%,
5%, 10%; mean of seeds 0-2; random over seeds 0-4), with no labels and no quality column, as
`selectflow select --sampler mig` runs; bench/results/mig.md has the tables. The former defaults scored
F1 0.70 / templates 0.77 / cover 0.508 / near-duplicates 0.44 at 5% against random's 0.97 / 1.00 /
0.422 / 0.055: the selection collapsed onto 38 of 453 label sets (up to 47 rows from one).

- Propagation conserves mass (`propagation`, default "conserve"). Eq. 6 and the code use the
  row-stochastic A = D^-1 W' (the code's e P with P = W' / W'.sum(axis=0)): label q then hands out
  sum_p w'_pq / d_p units, 0.61-1.49 on the demo's former label graph, so rows whose labels border
  low-degree labels carry more information for no reason but the graph's shape. Here A = W' D^-1 is
  column-stochastic: each label splits exactly its own mass over itself and its neighbours, so a row's
  propagated mass equals s_d |L_d|. On the former tag-free labels with seeded ties and a relative degree
  of 0.05, it took 5%-F1 from 0.94 to 0.97 and near-duplicates from 0.39 to 0.19 against the paper's A. "paper" keeps Eq. 6. Two more mass-conserving
  forms are offered: "balanced" (S W' S, doubly stochastic by Sinkhorn scaling: a label also receives
  exactly one unit when every label is picked equally) and "share" (each label keeps 1/(1+alpha)
  whatever its degree). With conserve, labels that only receive little (few neighbours) are still
  under-saturated relative to hubs; balanced and share reduce that (5% near-duplicates 0.07 and 0.05
  against 0.10 for conserve at relative_degree 0.02) but were not measured with a labels column.
- The degree is relative to the number of labels (`relative_degree`, default 0.02 of the other labels
  of a block). The former absolute `target_degree=8` made the coarse k-means level (19 labels) a
  near-complete graph, with tau clamped to 0 (all positive similarities linked): every label set then
  propagated to every label and nothing distinguished them. `target_degree` still sets an absolute
  degree; `graph="knn"` gives every label the same number of out-neighbours (measured worse: labels
  outside everyone's neighbour lists get over-sampled).
- Tag-free labels: no propagation between clusters by default (`prop_weight` empty: 1.0 with a labels
  column as in the paper or when target_degree/similarity_threshold is given, else 0 for cluster labels). The multi-granularity levels already share a pick's
  mass with the neighbouring clusters of its coarser clusters. Every propagation variant tried on
  cluster labels (conserve/balanced/share, relative degree 0.005-0.05, alpha 0.1-1, kNN or threshold
  graphs, phi x^0.5, x^0.8 or 1-exp) scored worse than none on coverage distance and near-duplicates:
  concave phi rewards spreading a row's mass thinly, so rows of hub clusters (a dense template split
  into many mutually similar clusters) kept their gain and were picked 5-7 times each. The paper's
  propagation gain (+2.8 points) was measured with InsTag tags, not clusters.
- Tag-free labels follow the budget (`clusters_per_budget`, default 1): the finest k-means level has
  about B clusters and the coarser ones B/2 and B/4, instead of round(N^(1/3)) x {1, 2, 4} (19, 38, 76
  at N = 7,040 whatever the budget), which made a 704-row budget take ~9 rows per finest label and gave
  near-duplicates. With ~one row per finest cluster, the greedy's preference for fresh labels spreads
  the budget over the space. Above N x (total clusters) = 3e7 the levels are nested k-means (each
  cluster split into the next level's clusters, sizes geometric from N^(1/3) to B), O(N D (N^(1/3) +
  split factors)) instead of O(N D B): flat levels took 28 s at 40k rows (B = 2,000), and grow as N B.
  Select times (bench/results/mig.md): 10k 1.9 s, 100k 7 s, 1M 59 s and 2.5 GiB at 5%.
  Nested levels scored slightly worse on the demo (5% cover 0.423 against 0.419 flat and 0.422 random).
- Ties are seeded (`tie_break`, default "seeded"). With constant quality every row of a label set ties,
  and ties went to the lowest row index, so the file order chose the rows (often consecutive rows) and
  the seed changed nothing with a labels column. Now a seeded permutation breaks ties; "row" restores
  the argmax order of the reference code. The seed also seeds the k-means of tag-free labels.
- Typical rows first (`central_share`, default 0.5): among rows of equal gain (with constant quality,
  all rows of a label set), the half of each label set nearest the mean direction of the rows' finest
  cluster (`central_reference`) comes before the other half, in seeded order within each half. MIG's
  objective cannot tell rows of a label set apart, so this changes no gain, only which tied row is
  taken. Without it MIG lost to random on coverage distance at 1% (0.551 against 0.542); taking only
  the most typical row (central_share near 0) loses templates, as k-means medoids do.
- phi = x^0.5 (`phi_b`, paper default 0.8; the paper allows any x^b with 0 < b < 1). Once the causes
  above were fixed, x^0.5 gave the same F1, templates and coverage (within 0.002) and fewer
  near-duplicates on both test splits tried (5%: 0.004 and 0.007 against 0.013 and 0.010; 10%: 0.013
  and 0.019 against 0.022 and 0.027), and the same scores on the bundled corpus. 1 - exp(-3x) scored
  as x^0.5. `phi_b=0.8` restores the paper.
- Labels. Without a `labels` column, rows are labelled by the k-means levels above (label names like
  "c352:17"), and label-label similarity is the cosine similarity of the centroids within one level (no
  edges across levels). With a labels column, a label's embedding is the normalised mean of the
  embeddings of the rows carrying it: no extra encoder call on the label strings (the code embeds the
  tag strings with E5-Mistral). Both centroids and label means are centred on the corpus mean first
  (`center_label_embeddings`): uncentred, the means of frequent labels all point toward the corpus
  mean, become hubs of the graph, and MIG then favours rows with common labels.
- Threshold. The code's tau=0.9 is calibrated to E5-Mistral tag similarities; here tau is the similarity
  at which labels have the target degree on average (estimated from each label's nearest labels), and
  `similarity_threshold` sets tau explicitly.
- Scale. The code keeps a dense N x K propagated matrix and scores every row at every step
  (O(B N K)). Here the propagated vectors are sparse (CSR), one per distinct label set; rows sharing
  a label set differ only by their quality factor, and both gains grow with it, so a label set is a
  single candidate offering its best remaining row (equal qualities in tie-rank order). Selection is
  lazy greedy (Minoux): both gains only decrease as S grows (e_hat >= 0, phi' non-increasing), so a
  stale gain is an upper bound and only the top of a heap is re-evaluated. Ties go to the lower tie
  rank, so the lazy greedy picks exactly what a plain greedy over rows picks with the same ranks
  (barring two rows of one label set whose qualities differ by so little that their gains round to the
  same float).
- Rounds. Rows in `previous_rows` count as already selected: their information is the starting
  point, and they are never selected again.

Against the reference code's formulation on the same tag-free labels (bench/bench_mig.py: Eq. 6, tau
0.9, x^0.8, linearised gain, dense loop, ties to the lowest row), the default scores better on F1,
templates and coverage at 1%, 5% and 10% of the demo pool, and better or equal on near-duplicates
(both 0 at 1%): at 5%, 0.984 / 1.000 / 0.416 / 0.004 against 0.975 / 0.742 / 0.427 / 0.008 (and
0.948 / 0.841 / 0.448 / 0.123 on the former N^(1/3) labels). See bench/results/mig.md.
"""

from .candidates import Candidates, build_candidates
from .greedy import GAIN_CHUNK, GreedyResult, LAZY_BLOCK, greedy
from .information import POW_DERIVATIVE_OFFSET, Phi, information
from .label_graph import CALIBRATION_NEIGHBOURS_PER_DEGREE, LabelGraph, SINKHORN_MAX_ITER, SINKHORN_TOL, block_degree, build_label_graph, calibrate_threshold, doubly_stochastic, knn_graph, propagation_matrix, similarity_graph
from .labels import Labels, cluster_labels, cluster_level_sizes, column_labels, nested_kmeans
from .options import MIGOptions
from .problem import FLAT_KMEANS_WORK, MIGProblem, build_problem, tie_ranks
from .sampler import MAX_CURVE_POINTS, MIGSampler

__all__ = [
    "CALIBRATION_NEIGHBOURS_PER_DEGREE", "Candidates", "FLAT_KMEANS_WORK", "GAIN_CHUNK", "GreedyResult",
    "LAZY_BLOCK", "LabelGraph", "Labels", "MAX_CURVE_POINTS", "MIGOptions", "MIGProblem", "MIGSampler",
    "POW_DERIVATIVE_OFFSET", "Phi", "SINKHORN_MAX_ITER", "SINKHORN_TOL", "block_degree", "build_candidates",
    "build_label_graph", "build_problem", "calibrate_threshold", "cluster_labels", "cluster_level_sizes",
    "column_labels", "doubly_stochastic", "greedy", "information", "knn_graph", "nested_kmeans",
    "propagation_matrix", "similarity_graph", "tie_ranks",
]

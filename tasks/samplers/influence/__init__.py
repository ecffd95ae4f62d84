"""Influence-score selection with a cheap proxy model trained on the embeddings.

Anand, Tan & Minakova, "Influence Scores at Scale for Efficient Language Data Sampling" (EMNLP 2023,
arXiv 2311.16298), scored with a proxy model on frozen embeddings as in algorithms.md §4.4(a).

A softmax head (default) or a one-hidden-layer MLP is trained with plain SGD on the embeddings
against the corpus labels or, without labels, k-means pseudo-labels; parameters are kept in memory
at a few evenly spaced checkpoints. Scores per row:

- el2n:  ‖softmax(f(x)) − y‖₂ (Paul et al. 2021), averaged over the earliest checkpoints (the paper
  found early scores informative and late ones collapsed). One training run replaces the paper's
  average over 10 seeds.
- grand: ‖∇_θ ℓ(x, y)‖₂ averaged over the same checkpoints. For the linear head this is exactly
  EL2N·‖h̃‖ with h̃ = [h, 1] (the bias feature); for the MLP each layer's per-example gradient is the
  outer product δ·ãᵀ of the backpropagated error (one autograd pass per chunk) and its input, so the
  norms are exact without materialising per-example gradients (`per_example_grads`, torch.func, is
  the tested reference). With unit-norm embeddings ‖h̃‖ = √2, so for the linear head GraNd ranks
  rows exactly as EL2N does. Paul et al. average over initialisations; we average over checkpoints.
- forgetting: correct → incorrect transitions (Toneva et al. 2019), evaluated on every row every
  `forgetting_every` SGD steps (the paper logged every 50 iterations because per-presentation logging
  gave mostly zeros). Rows never predicted correctly get the paper's "∞" as (max count + 1), so
  scores stay finite and still rank above every learned row.
- vog: the VoG of Agarwal et al. (CVPR 2022): per input dimension, the standard deviation across
  checkpoints of the gradient of the true-class output w.r.t. the input, then the mean over dims;
  normalised per class or over the dataset (option). The paper (App. B.1) writes (1/√N_c)(G − μ)²;
  we implement the original VoG's square-rooted form. For the linear head the gradient of the
  true-class *logit* is the weight row W_y, the same for every row of a class, so VoG would only rank
  classes; `vog_output="auto"` therefore uses the true-class log-softmax there (Wᵀ(y − p)) and the
  paper's pre-softmax logit for the MLP.
- target: TracIn-CP (Pruthi et al. 2020) influence toward a target set,
  Σ_t η_t ⟨∇ℓ_t(z), ḡ_t⟩ with ḡ_t the mean target gradient at checkpoint t and η_t the mean learning
  rate since the previous checkpoint. For the linear head ∇ℓ = (p − y)h̃ᵀ, so
  ⟨∇ℓ_i, ḡ⟩ = (p_i − y_i)ᵀ Ḡ h̃_i with Ḡ = mean_j (p_j − y_j)h̃_jᵀ (a C×(D+1) matrix): one extra
  forward-sized pass per checkpoint, never an N×T matrix (the MLP uses the same factorisation per
  layer). `target_cosine=True` is LESS style:
  the mean over target rows of the cosine between gradients (exact, via the mean of the normalised
  target gradients), with η renormalised to sum to 1. Target rows are labelled by their nearest class
  centroid (default; for pseudo-labels this is the k-means centroid, the very rule that labelled the
  pool) or by the final proxy's own prediction. With predicted labels a target's gradient pushes
  toward what the proxy already believes, so pool rows whose label disagrees score negative.
- self_influence: TracIn self-influence Σ_t η_t ‖∇ℓ_t(z)‖² (the paper's TracIn score).

Selection: `mode` "stratified" (the default through "auto", except for the target score), "top"
(highest score first), "bottom" (lowest first) or "middle" (after the drops, a seeded uniform draw
from what is left). `drop_easiest`/`drop_hardest` remove the lowest / highest fraction of scores
first, in every mode (the paper's hard cut-off prunes the easiest fraction). `balance="class"` splits
the budget over classes in proportion to their sizes and drops per class; "none" ranks the whole
pool; "ucb" is Quad-style (Zhang et al., ICLR 2025) cluster balancing, see `ucb_select`.

Departures from the paper's "keep the top by score" (defaults; each measured on the demo data,
7,040 rows, 1/5/10%, bench/results/influence.md):
- Stratified, not top-k. The old default kept the top 5% by EL2N per class, the hardest rows:
  macro-F1 0.918 and template coverage 0.93 against random's 0.971 and 1.00 at 5%. At low keep
  ratios the hardest rows are where pruning hurts (Sorscher et al. 2022: keep easy examples when
  data is scarce; Anand et al.: pruning by hard scores hurts for most scores, and hard rows carry
  label noise, here rows between pseudo-label clusters; Ayed & Hayou 2023: score-based pruning fails
  in the high-compression regime and needs randomisation). "stratified" is the stratified sampling
  of Coverage-centric Coreset Selection (Zheng et al., ICLR 2023) with one row per stratum: each
  class's band, sorted by score, is cut into `quota` equal-count strata and one seeded row is drawn
  from each, so the selection keeps easy, middle and hard rows in proportion and depends on the seed.
  CCS also drops the hardest β; drop_hardest 0.05 and 0.1 were measured and lowered macro-F1 at 10%
  (0.981 against 0.983-0.986) and coverage on the bundled corpus, so the default is 0.
- Near-duplicates skipped (`dedup_similarity` = 0.95, the reports' near-duplicate threshold): top-k
  on a smooth score takes near-duplicates together (near-duplicate rate 0.30 against random's 0.055
  at 5%). Rows are taken in mode order and one above that similarity to a row already taken in its
  class is skipped while other rows remain (`take_without_near_duplicates`). Not applied with UCB.
- More pseudo-label classes when the budget is large: k = max(round(sqrt(N/10)), ceil(budget/8)),
  clipped to 2..100, so the class balance stratifies the selection in embedding space at about 8
  rows per class (a coarser k = 30 at 5% left one of the 44 templates unselected in one of three seeds).
- The target score keeps the top (mode "auto" resolves to "top"): LESS keeps the top 5%.
"""

from .defaults import ROWS_PER_CLASS, classes_from_labels, default_batch_size, default_lr, default_pseudo_k, resolved_mode
from .gradients import layer_factors, linear_per_example_grads, per_example_grads
from .options import InfluenceOptions, ScoreName
from .proxy import CHUNK_ELEMENTS, PROXY_MEMORY_LIMIT, ProxyModel, predictions, proxy_logits, train_proxy
from .ranking import ranked_band, select_rows, take_without_near_duplicates, ucb_select
from .sampler import InfluenceSampler
from .scores import el2n, forgetting, forgetting_scores, grand, self_influence, vog
from .target import target_influence

__all__ = [
    "CHUNK_ELEMENTS", "InfluenceOptions", "InfluenceSampler", "PROXY_MEMORY_LIMIT", "ProxyModel", "ROWS_PER_CLASS",
    "ScoreName", "classes_from_labels", "default_batch_size", "default_lr", "default_pseudo_k", "el2n",
    "forgetting", "forgetting_scores", "grand", "layer_factors", "linear_per_example_grads", "per_example_grads",
    "predictions", "proxy_logits", "ranked_band", "resolved_mode", "select_rows", "self_influence",
    "take_without_near_duplicates", "target_influence", "train_proxy", "ucb_select", "vog",
]

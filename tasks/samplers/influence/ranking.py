"""From scores to rows: the band left after the drops, stratified / top / bottom / middle selection, near-duplicate skipping, and UCB ranking."""

import math

import numpy as np

from ...errors import ConfigError
from ..quotas import allocate_quotas


def ranked_band(scores: np.ndarray, drop_easiest: float, drop_hardest: float) -> np.ndarray:
    """Positions of `scores` in ascending score order (ties by position) after dropping the lowest
    floor(drop_easiest·n) and the highest floor(drop_hardest·n)."""
    n = len(scores)
    order = np.lexsort((np.arange(n), scores))
    lo = math.floor(drop_easiest * n)
    hi = n - math.floor(drop_hardest * n)
    return order[lo:max(lo, hi)]


def _order_band(
    scores: np.ndarray, band_ascending: np.ndarray, mode: str, *, rng: np.random.Generator, quota: int | None = None
) -> np.ndarray:
    """The band in selection order: top = highest first, bottom = lowest first, middle = seeded shuffle,
    stratified = one seeded draw from each of `quota` equal-count score strata (in shuffled stratum
    order), then the rest of the band shuffled (replacements for skipped near-duplicates). Stratified
    without a quota (UCB queues) is a shuffle."""
    if mode == "stratified" and quota:
        m = len(band_ascending)
        q = min(int(quota), m)
        edges = (np.arange(q + 1) * m) // q
        draws = edges[:-1] + np.floor(rng.random(q) * (edges[1:] - edges[:-1])).astype(np.int64)
        first = draws[rng.permutation(q)]
        rest = np.setdiff1d(np.arange(m), first)
        return band_ascending[np.concatenate([first, rest[rng.permutation(len(rest))]])]
    if mode == "top":
        # Highest first, ties by lower row index (reversing the ascending order would flip the ties).
        return band_ascending[np.lexsort((band_ascending, -scores[band_ascending]))]
    if mode == "bottom":
        return band_ascending
    return band_ascending[rng.permutation(len(band_ascending))]


def select_rows(
    scores: np.ndarray,
    budget: int,
    *, mode: str = "top",
    drop_easiest: float = 0.0,
    drop_hardest: float = 0.0,
    classes: np.ndarray | None = None,
    seed: int = 0,
    candidates: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    dedup_similarity: float | None = None,
) -> tuple[np.ndarray, dict]:
    """Rows in selection order for a score ranking, globally (classes None) or stratified by class.

    Drops apply within each class when stratified. Stratified quotas follow the class sizes left
    after the drops (`allocate_quotas`), and the result interleaves classes, largest quota first,
    so any prefix stays balanced. With `embeddings` and `dedup_similarity`, the band is walked in
    `mode` order and a row above that cosine similarity to a row already taken (in its class) is
    skipped while rows remain (`take_without_near_duplicates`).
    """
    scores = np.asarray(scores, dtype=np.float64)
    rng = np.random.default_rng(seed)
    pool = np.arange(len(scores)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    info: dict = {}
    dedup = embeddings is not None and dedup_similarity is not None and dedup_similarity < 1.0
    skipped = 0

    def take(ordered: np.ndarray, q: int) -> np.ndarray:
        nonlocal skipped
        if not dedup:
            return ordered[:q]
        rows, n_skipped = take_without_near_duplicates(ordered, q, embeddings, threshold=dedup_similarity)
        skipped += n_skipped
        return rows

    if classes is None:
        band = pool[ranked_band(scores[pool], drop_easiest, drop_hardest)]
        _check_band(len(band), budget, len(pool))
        rows = take(_order_band(scores, band, mode, rng=rng, quota=budget), budget)
        if dedup:
            info["near_duplicates_skipped"] = int(skipped)
        return rows, info
    classes = np.asarray(classes)
    labels = np.unique(classes[pool])
    bands = []
    for c in labels:
        members = pool[classes[pool] == c]
        bands.append(members[ranked_band(scores[members], drop_easiest, drop_hardest)])
    sizes = np.array([len(b) for b in bands], dtype=np.int64)
    _check_band(int(sizes.sum()), budget, len(pool))
    quotas = allocate_quotas(sizes, budget)
    info["class_quotas"] = {str(c): int(q) for c, q in zip(labels.tolist(), quotas.tolist())}
    if dedup:
        info["near_duplicates_skipped"] = 0
    # Round robin: rank 0 of every class (largest quota first), then rank 1, and so on.
    turn = np.empty(len(labels), dtype=np.int64)
    turn[np.lexsort((np.arange(len(labels)), -quotas))] = np.arange(len(labels))
    picked = np.concatenate(
        [take(_order_band(scores, b, mode, rng=rng, quota=int(q)), int(q)) if q else b[:0] for b, q in zip(bands, quotas)]
    )
    if dedup:
        info["near_duplicates_skipped"] = int(skipped)
    rank = np.concatenate([np.arange(q) for q in quotas])
    seat = np.repeat(turn, quotas)
    return picked[np.lexsort((seat, rank))], info


def take_without_near_duplicates(
    ordered: np.ndarray, quota: int, embeddings: np.ndarray, *, threshold: float, block: int = 1024
) -> tuple[np.ndarray, int]:
    """The first `quota` rows of `ordered` that have no cosine similarity above `threshold` to a row
    taken before them; if too few qualify, the skipped rows fill the rest in their order.

    Rows are examined in blocks (one matrix product against the rows taken so far, then the block in
    order), so the cost is O(quota² · D) and memory O(quota · D). Returns (rows, number skipped).
    """
    ordered = np.asarray(ordered, dtype=np.int64)
    quota = int(min(quota, len(ordered)))
    dim = embeddings.shape[1]
    kept = np.empty((quota, dim), dtype=np.float32)
    rows: list[int] = []
    skipped: list[int] = []
    pos = 0
    while len(rows) < quota and pos < len(ordered):
        batch = ordered[pos : pos + min(block, max(quota - len(rows), 64))]
        pos += len(batch)
        xb = np.ascontiguousarray(embeddings[batch], dtype=np.float32)
        blocked = (xb @ kept[: len(rows)].T).max(axis=1) > threshold if rows else np.zeros(len(batch), dtype=bool)
        within = xb @ xb.T
        for i, r in enumerate(batch):
            if len(rows) == quota:
                break
            if blocked[i]:
                skipped.append(int(r))
                continue
            kept[len(rows)] = xb[i]
            rows.append(int(r))
            blocked |= within[i] > threshold
    n_skipped = len(skipped)
    if len(rows) < quota:
        rows.extend(skipped[: quota - len(rows)])
    return np.asarray(rows, dtype=np.int64), n_skipped


def _check_band(available: int, budget: int, pool: int) -> None:
    if available < budget:
        raise ConfigError(
            f"After drop_easiest/drop_hardest only {available} of {pool} rows remain for a budget of {budget}; "
            "lower drop_easiest or drop_hardest, or the budget."
        )


def ucb_select(
    scores: np.ndarray,
    clusters: np.ndarray,
    budget: int,
    *, mode: str = "top",
    alpha: float = 0.5,
    batch: int | None = None,
    drop_easiest: float = 0.0,
    drop_hardest: float = 0.0,
    seed: int = 0,
    candidates: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Quad-style cluster balancing: clusters are bandit arms, drawn in rounds by upper confidence bound.

    CS_i = Ī_i + α·√(2 ln(1 + Σ_j T_j) / (1 + T_i)), where T_i counts the pulls of cluster i and Ī_i
    is the mean reward of the rows pulled from it; before its first pull, Ī_i is the mean reward of
    all its candidate rows (Quad estimates it from a 10-document probe; here every score is known).
    The +1 terms follow the Quad code (no separate initialisation round). A pull takes the cluster's
    next `batch` rows in `mode` order (after the drops); a row's reward is its score percentile among
    the candidates (1 − percentile for mode "bottom"), so α does not depend on the score's scale.
    Quad also takes a fixed 20,000 documents per accepted pull and spreads rewards to neighbouring
    clusters; neither is done here. Ties go to the lower cluster index.
    """
    scores = np.asarray(scores, dtype=np.float64)
    clusters = np.asarray(clusters, dtype=np.int64)
    rng = np.random.default_rng(seed)
    pool = np.arange(len(scores)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    band = pool[ranked_band(scores[pool], drop_easiest, drop_hardest)]
    _check_band(len(band), budget, len(pool))
    pct = np.zeros(len(scores))
    asc = pool[np.lexsort((pool, scores[pool]))]
    pct[asc] = (np.arange(len(asc)) + 0.5) / len(asc)
    reward = 1.0 - pct if mode == "bottom" else pct
    arm_ids = np.unique(clusters[band])
    queues = []
    for a in arm_ids:
        members = band[clusters[band] == a]  # still in ascending score order
        queues.append(_order_band(scores, members, mode, rng=rng))
    k = len(arm_ids)
    batch = batch or max(1, math.ceil(budget / (4 * k)))
    pulls = np.zeros(k)
    prior = np.array([reward[q].mean() for q in queues])
    reward_sum = np.zeros(k)
    rewarded_rows = np.zeros(k)
    heads = np.zeros(k, dtype=np.int64)
    lengths = np.array([len(q) for q in queues])
    picked: list[np.ndarray] = []
    pull_rewards: list[float] = []
    taken = 0
    while taken < budget:
        mean = np.divide(reward_sum, rewarded_rows, out=prior.copy(), where=rewarded_rows > 0)
        cs = mean + alpha * np.sqrt(2.0 * np.log1p(pulls.sum()) / (1.0 + pulls))
        cs[heads >= lengths] = -np.inf
        arm = int(np.argmax(cs))
        m = int(min(batch, lengths[arm] - heads[arm], budget - taken))
        rows = queues[arm][heads[arm] : heads[arm] + m]
        heads[arm] += m
        pulls[arm] += 1
        reward_sum[arm] += reward[rows].sum()
        rewarded_rows[arm] += m
        pull_rewards.append(float(reward[rows].mean()))
        picked.append(rows)
        taken += m
    info = {
        "ucb_arms": int(k),
        "ucb_batch": int(batch),
        "ucb_pulls": int(pulls.sum()),
        "ucb_arms_used": int((pulls > 0).sum()),
        "ucb_pull_rewards": pull_rewards,
    }
    return np.concatenate(picked), info

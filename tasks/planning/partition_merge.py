"""Partitioned selection, part 2: select inside one partition, merge the partitions' selections, IVF over shards.

select_in_partition   run a sampler on one partition's rows for quota + spares; write its ranked picks (one mapped task)
merge_partitions      one global selection of exactly the budget, border near-duplicates replaced by spares
build_ivf_from_shards an IVF (or IVF-PQ) index trained on a seeded sample, inverted lists filled shard by shard
                      (tested; the pipeline does not build one yet: each partition's sampler indexes its own
                      rows, and the report's corpus near-duplicate estimate is skipped in this mode)

The merge rule. Samplers return rows in selection order, rank 0 first (samplers/base.py `Selection.rows`), and
a prefix is meaningful for each of them (kMQ interleaves its clusters, greedy MIG/DPP/coverage add by gain,
sensitivity returns a random order whose prefixes stay unbiased). So each partition runs its sampler once
for quota + spares rows; the first `quota` rows are its picks and the rest, in rank order, its spares. (The
first q rows of a q+s run need not equal a q run's rows: kMQ's per-cluster quotas, for one, are drawn for
q+s; the spares are defined by this one run, which is deterministic for the partition's seed.)
The picks are laid out by interleaving partitions by rank, the largest quota first (rank 0 of every
partition, then rank 1, ...: as per-group merges and kMQ do, so any prefix stays spread out), and walked
in that order. A pick whose cosine to an already accepted pick of another partition is >= the threshold
(0.95, the project's near-duplicate definition) is a border duplicate: it takes, in its slot, its own
partition's next spare that is not itself a border duplicate of an accepted row; spares found to be
duplicates are skipped. Every accepted row is checked against all rows accepted before it, so no two
accepted rows of different partitions are near-duplicates, unless a partition ran out of spares: then the
pick is kept (the budget is exact by contract) and counted as unresolved. Duplicates inside one partition
are the sampler's own business and are not touched. Weights are kept as each partition's sampler gave them
(stratified by partition: Horvitz-Thompson weights of a partition estimate its size, their sum estimates N),
except the prefix rescaling of `PartitionRule.rescale_prefix_weights`. The cost: all quota+spares vectors on the merge
machine (B·D float32; 150 MB at 10M rows and 1%) and a FAISS range search among them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, InputError
from ..io.atomic import atomic_path
from ..samplers.base import SelectionInput
from .partitions import (DEFAULT_CHUNK_ROWS, Shard, _as_unit32, _open, _windows, load_partition, partition_rule,
                         partition_seed, sample_rows, shard_lengths)

NEAR_DUPLICATE = 0.95


def select_in_partition(*, partition_dir: str | Path, partition: int, n_shards: int, sampler: Any, quota: int,
                        spares: int, seed: int, out_path: str | Path, columns=None) -> str | Path:
    """Run `sampler` (a samplers.base.Sampler) on one partition for min(quota + spares, size) rows; write them ranked.

    `columns`, when given, maps the partition's global rows (ascending) to more SelectionInput fields (ids,
    quality, labels, groups of those rows only). The seed is `partition_seed(seed, partition)`. The .npz holds global `rows`, `scores`, `weights`,
    `clusters` (-1 when the sampler has none), the rows' float32 `embeddings` (for the merge's border check),
    `partition` and `quota` (the first `quota` rows are the picks, the rest spares in rank order).
    """
    data = load_partition(partition_dir, partition, n_shards)
    n = len(data.rows)
    if not 0 <= quota <= n:
        raise ConfigError(f"Partition {partition} has {n} rows; its quota of {quota} does not fit.")
    n_run = min(n, quota + max(0, int(spares)))
    d = data.embeddings.shape[1]
    if quota == 0:
        arrays = dict(rows=np.empty(0, np.int64), scores=np.empty(0), weights=np.empty(0),
                      clusters=np.empty(0, np.int64), embeddings=np.empty((0, d), np.float32))
    else:
        extra = columns(data.rows) if columns is not None else {}
        selection = sampler.select(SelectionInput(embeddings=data.embeddings, **extra), n_run, partition_seed(seed, partition))
        weights = selection.weights.copy()
        if partition_rule(getattr(sampler, "name", "")).rescale_prefix_weights:
            weights *= n_run / quota
        arrays = dict(rows=data.rows[selection.rows], scores=selection.scores, weights=weights,
                      clusters=selection.clusters if selection.clusters is not None else np.full(n_run, -1, np.int64),
                      embeddings=data.embeddings[selection.rows])
    with atomic_path(out_path, suffix=".npz") as tmp:  # a local path or an object-store URL
        with open(tmp, "wb") as fh:
            np.savez(fh, partition=np.int64(partition), quota=np.int64(quota), **arrays)
    return out_path


@dataclass
class MergeReport:
    threshold: float
    budget: int
    border_duplicates: int = 0  # picks (or their replacements) that were near-duplicates of another partition's accepted row
    replaced: int = 0  # of those, slots filled by a clean spare
    unresolved: int = 0  # slots whose partition ran out of clean spares: the pick was kept
    spares_skipped: int = 0  # spares that were border duplicates themselves
    per_partition: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MergedSelection:
    rows: np.ndarray  # (budget,) int64 global rows, in the interleaved order
    scores: np.ndarray
    weights: np.ndarray
    clusters: np.ndarray  # within-partition cluster, -1 where the sampler has none
    partitions: np.ndarray  # partition of each row
    report: MergeReport


def _load_selection(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(Path(path), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def border_pairs(embeddings: np.ndarray, partitions: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i < j) of rows from different partitions with cosine >= threshold (float64 recheck of FAISS's range search)."""
    import faiss

    from ..samplers.clustering import single_threaded_faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if len(x) < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    with single_threaded_faiss():
        lims, _, found = index.range_search(x, float(threshold) - 1e-4)
    lims, found = lims.astype(np.int64), found.astype(np.int64)
    left = np.repeat(np.arange(len(x), dtype=np.int64), np.diff(lims))
    keep = (left < found) & (partitions[left] != partitions[found])
    i, j = left[keep], found[keep]
    x64 = x.astype(np.float64)
    sims = np.einsum("ij,ij->i", x64[i], x64[j]) if len(i) else np.empty(0)
    ok = sims >= threshold
    i, j = i[ok], j[ok]
    order = np.lexsort((j, i))
    return i[order], j[order]


def merge_partitions(selection_paths: Sequence[str | Path], *, budget: int, threshold: float = NEAR_DUPLICATE) -> MergedSelection:
    """One global selection of exactly `budget` rows from the partitions' selection files (rule: module docstring)."""
    parts = [_load_selection(p) for p in selection_paths]
    quotas = np.array([int(p["quota"]) for p in parts], dtype=np.int64)
    if int(quotas.sum()) != budget:
        raise InputError(f"The partitions' quotas sum to {int(quotas.sum())}, not the budget of {budget}.")
    ids = np.array([int(p["partition"]) for p in parts], dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise InputError("Two selection files are for the same partition.")
    # Flatten every candidate (picks and spares); candidate c belongs to part part_of[c] at rank rank_of[c].
    part_of = np.concatenate([np.full(len(p["rows"]), g, np.int64) for g, p in enumerate(parts)])
    rank_of = np.concatenate([np.arange(len(p["rows"]), dtype=np.int64) for p in parts])
    start = np.concatenate([[0], np.cumsum([len(p["rows"]) for p in parts])])
    flat = {k: np.concatenate([p[k] for p in parts]) for k in ("rows", "scores", "weights", "clusters")}
    emb = np.concatenate([p["embeddings"] for p in parts]) if parts else np.empty((0, 0), np.float32)
    if len(np.unique(flat["rows"])) != len(flat["rows"]):
        raise InputError("A row appears in two partitions' selections: the partitions must not overlap.")
    i, j = border_pairs(emb, ids[part_of], threshold)
    # Symmetric adjacency (CSR) of the border pairs.
    a = np.concatenate([i, j])
    b = np.concatenate([j, i])
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    lims = np.searchsorted(a, np.arange(len(part_of) + 1))
    accepted = np.zeros(len(part_of), dtype=bool)
    next_spare = quotas.copy()  # rank of each part's next unused spare
    # Slots: rank 0 of every part (largest quota first, then lower partition id), then rank 1, ...
    part_order = np.lexsort((ids, -quotas))
    slot_rank = np.concatenate([np.arange(quotas[g], dtype=np.int64) for g in part_order] or [np.empty(0, np.int64)])
    slot_pos = np.repeat(np.arange(len(part_order), dtype=np.int64), quotas[part_order])
    slots = np.lexsort((slot_pos, slot_rank))
    report = MergeReport(threshold=float(threshold), budget=int(budget))
    per = {int(ids[g]): dict(quota=int(quotas[g]), spares=int(len(parts[g]["rows"]) - quotas[g]), border_duplicates=0,
                             replaced=0, unresolved=0) for g in range(len(parts))}
    chosen = []

    def clean(c: int) -> bool:
        return not accepted[b[lims[c] : lims[c + 1]]].any()

    for slot in slots:
        g = int(part_order[slot_pos[slot]])
        c = int(start[g] + slot_rank[slot])
        if not clean(c):
            report.border_duplicates += 1
            per[int(ids[g])]["border_duplicates"] += 1
            replacement = None
            while next_spare[g] < len(parts[g]["rows"]):
                s = int(start[g] + next_spare[g])
                next_spare[g] += 1
                if clean(s):
                    replacement = s
                    break
                report.spares_skipped += 1
            if replacement is None:
                report.unresolved += 1
                per[int(ids[g])]["unresolved"] += 1
            else:
                report.replaced += 1
                per[int(ids[g])]["replaced"] += 1
                c = replacement
        accepted[c] = True
        chosen.append(c)
    chosen = np.asarray(chosen, dtype=np.int64)
    report.per_partition = {str(k): v for k, v in sorted(per.items())}
    return MergedSelection(rows=flat["rows"][chosen], scores=flat["scores"][chosen], weights=flat["weights"][chosen],
                           clusters=flat["clusters"][chosen], partitions=ids[part_of[chosen]], report=report)


def build_ivf_from_shards(shards: Sequence[Shard], *, seed: int, nlist: int | None = None, nprobe: int | None = None,
                          pq_m: int | None = None, train_per_list: int = 64, chunk_rows: int = DEFAULT_CHUNK_ROWS):
    """(index, IndexParams): IVF-Flat (or IVF-PQ with `pq_m` sub-quantizers of 8 bits) over the shards, inner product.

    nlist/nprobe default to faiss_index.choose_params for N rows. Trained (one FAISS thread, `cp.seed = seed`)
    on a seeded sample of min(N, nlist·train_per_list) rows (faiss_index.build_index's 64 per list); vectors are
    added chunk by chunk, shard order, so FAISS ids are the global row positions. Save with faiss_index.save_index.
    """
    import faiss

    from ..embedding.faiss_index import IndexParams, choose_params
    from ..samplers.clustering import single_threaded_faiss

    n = int(shard_lengths(shards).sum())
    d = int(_open(shards[0]).shape[1])
    auto = choose_params(n, "ivf")
    nlist = int(nlist or auto.nlist)
    nprobe = int(nprobe or min(nlist, auto.nprobe))
    if not 1 <= nlist <= n:
        raise ConfigError(f"nlist={nlist} must be between 1 and the number of rows ({n}).")
    quantizer = faiss.IndexFlatIP(d)
    if pq_m:
        if d % pq_m:
            raise ConfigError(f"pq_m={pq_m} must divide the dimension {d}.")
        index = faiss.IndexIVFPQ(quantizer, d, nlist, int(pq_m), 8, faiss.METRIC_INNER_PRODUCT)
        n_train = min(n, max(nlist * train_per_list, 256 * 39))  # PQ codebooks want >= 39·256 points
    else:
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        n_train = min(n, nlist * train_per_list)
    _, train = sample_rows(shards, n_train, seed, chunk_rows=chunk_rows)
    index.cp.seed = int(seed)
    if pq_m:
        index.pq.cp.seed = int(seed)
    with single_threaded_faiss():
        index.train(train)
    del train
    for shard in shards:
        array = _open(shard)
        for a, b in _windows(int(array.shape[0]), chunk_rows):
            index.add(_as_unit32(array[a:b]))
    index.nprobe = nprobe
    return index, IndexParams("ivfpq" if pq_m else "ivf", nlist=nlist, nprobe=nprobe)

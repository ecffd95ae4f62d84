"""Candidates: rows with the same label set share one propagated unit vector e_hat."""

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ...errors import ResourceError


@dataclass
class Candidates:
    """Propagated label vectors per distinct label set, and the rows carrying each set.

    Row i's propagated vector is e_hat_i = scale_i * unit[g_i] (scale = quality, or quality / |L| with
    normalize_by_label_count). Both gains grow with the scale for a fixed label set and fixed x, so
    inside a group only its highest-scale remaining row can be the greedy's choice: a group is one
    candidate, offering its rows in order of (scale descending, row ascending).

    unit:         (G, K) CSR float64, A 1[L_g] for label set g.
    member_rows:  rows grouped by label set, in offer order inside a group.
    member_scale: scale of each entry of member_rows.
    member_ptr:   (G + 1,) offsets of each group in member_rows.
    group_of_row, scale_of_row: (N,) per row.
    tie_rank:     (N,) distinct ranks; among equal gains (and, inside a group, equal scales) the lower rank goes first.
    """

    unit: sp.csr_matrix
    member_rows: np.ndarray
    member_scale: np.ndarray
    member_ptr: np.ndarray
    group_of_row: np.ndarray
    scale_of_row: np.ndarray
    tie_rank: np.ndarray

    @classmethod
    def one_per_row(cls, ehat_rows: sp.csr_matrix, tie_rank: np.ndarray | None = None) -> "Candidates":
        """Every row its own candidate (no grouping): the plain per-row formulation, for reference runs."""
        n = ehat_rows.shape[0]
        return cls(
            tie_rank=np.arange(n, dtype=np.int64) if tie_rank is None else np.asarray(tie_rank, dtype=np.int64),
            unit=sp.csr_matrix(ehat_rows, dtype=np.float64),
            member_rows=np.arange(n, dtype=np.int64),
            member_scale=np.ones(n),
            member_ptr=np.arange(n + 1, dtype=np.int64),
            group_of_row=np.arange(n, dtype=np.int64),
            scale_of_row=np.ones(n),
        )

    def ehat_rows(self, rows: np.ndarray | None = None) -> sp.csr_matrix:
        """Per-row propagated vectors (N, K), or those of `rows`, scaled exactly as the greedy scales them."""
        rows = np.arange(len(self.group_of_row)) if rows is None else np.asarray(rows, dtype=np.int64)
        out = self.unit[self.group_of_row[rows]].tocsr()
        out.data = out.data * np.repeat(self.scale_of_row[rows], np.diff(out.indptr))
        return out


def build_candidates(
    indicator: sp.csr_matrix,
    set_ids: np.ndarray,
    quality: np.ndarray | None,
    *, propagation: sp.csr_matrix,
    normalize_by_label_count: bool,
    memory_budget_bytes: float,
    tie_rank: np.ndarray | None = None,
) -> Candidates:
    n = indicator.shape[0]
    tie_rank = np.arange(n, dtype=np.int64) if tie_rank is None else np.asarray(tie_rank, dtype=np.int64)
    indicator = indicator.tocsr()
    indicator.sort_indices()
    label_counts = np.diff(indicator.indptr)
    scale = np.ones(n) if quality is None else np.array(quality, dtype=np.float64)
    if normalize_by_label_count:
        scale = scale / np.maximum(label_counts, 1)
    _, first, group_of_row = np.unique(set_ids, return_index=True, return_inverse=True)
    group_of_row = group_of_row.ravel().astype(np.int64)
    n_groups = len(first)
    # nnz(unit) <= sum over a set's labels of that label's row count in A: check it before multiplying.
    per_label = np.diff(propagation.tocsr().indptr).astype(np.float64)
    nnz_bound = float((indicator[first] @ per_label).sum())
    needed = nnz_bound * 12 + n * 40
    if needed > memory_budget_bytes:
        raise ResourceError(
            f"MIG's propagated label vectors need about {needed / 2**30:.1f} GiB (over memory_budget_gib="
            f"{memory_budget_bytes / 2**30:g}); lower relative_degree (or target_degree) or cluster_levels, raise similarity_threshold, "
            "or raise memory_budget_gib if the machine has the memory."
        )
    unit = (sp.csr_matrix(indicator[first], dtype=np.float64) @ propagation.T).tocsr()
    unit.sum_duplicates()
    unit.eliminate_zeros()
    unit.sort_indices()
    order = np.lexsort((tie_rank, -scale, group_of_row))
    member_ptr = np.concatenate([[0], np.cumsum(np.bincount(group_of_row, minlength=n_groups))]).astype(np.int64)
    return Candidates(
        unit=unit,
        member_rows=order.astype(np.int64),
        member_scale=scale[order],
        member_ptr=member_ptr,
        group_of_row=group_of_row,
        scale_of_row=scale,
        tie_rank=tie_rank,
    )

"""Spatial order: rows that are close in embedding space are adjacent (PCA median splits, then nearest-neighbour matching)."""

import numpy as np

from .memory import _chunk_rows


def _segment_sums(x: np.ndarray, rows: np.ndarray, seg: np.ndarray, *, n_seg: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Σ_{i in segment s} w_i·x[rows_i] for every segment s, in row chunks (a sparse indicator product per chunk)."""
    import scipy.sparse

    d = x.shape[1]
    out = np.zeros((n_seg, d), dtype=np.float64)
    step = _chunk_rows(d)
    for start in range(0, len(rows), step):
        block = np.asarray(x[rows[start : start + step]], dtype=np.float32)
        s = seg[start : start + step]
        w = np.ones(len(s), dtype=np.float32) if weights is None else weights[start : start + step].astype(np.float32)
        indicator = scipy.sparse.csr_matrix((w, (s, np.arange(len(s)))), shape=(n_seg, len(s)))
        out += indicator @ block
    return out


def _segment_projection(x, rows, seg, *, mean, direction) -> np.ndarray:
    """(x[rows_i] − mean_s)·v_s for each row i of segment s, in row chunks."""
    offset = np.einsum("ij,ij->i", mean, direction)
    direction = direction.astype(np.float32)
    out = np.empty(len(rows), dtype=np.float64)
    step = _chunk_rows(x.shape[1])
    for start in range(0, len(rows), step):
        block = np.asarray(x[rows[start : start + step]], dtype=np.float32)
        s = seg[start : start + step]
        out[start : start + len(block)] = np.einsum("ij,ij->i", block, direction[s]) - offset[s]
    return out


def _principal_split(proj: np.ndarray, seg: np.ndarray, counts: np.ndarray, slack: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Sort each segment by its projection and cut it at the median: (permutation, upper-part flags).

    With slack > 0 the cut is the widest gap between consecutive projections among the ranks within
    slack·size of the median (close rows are cut apart less often). The default is the plain median:
    on the demo data even slack 0.05 raised the near-duplicate rate of the pivotal sample, because the
    pivotal rounds pair rows by position and assume a balanced tree.
    """
    within = np.lexsort((proj, seg))
    sorted_proj = proj[within]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(seg)) - starts[seg]
    size = counts[seg]
    # Cutting before rank r (1 <= r < size): gap to the previous row of the same segment.
    gap = np.full(len(seg), -np.inf)
    gap[1:] = sorted_proj[1:] - sorted_proj[:-1]
    lo = np.maximum(1, np.floor((0.5 - slack) * size))
    hi = np.minimum(size - 1, np.ceil((0.5 + slack) * size))
    allowed = (rank >= lo) & (rank <= hi)
    # Prefer the widest gap, then the rank closest to the median.
    best = np.lexsort((np.abs(rank - size / 2), -np.where(allowed, gap, -np.inf), seg))
    first_of_seg = np.concatenate([[True], seg[best][1:] != seg[best][:-1]])
    cut = np.zeros(len(counts), dtype=np.int64)
    cut[seg[best][first_of_seg]] = rank[best][first_of_seg]
    upper = rank >= cut[seg]
    return within, upper


def _matching_order(xs: np.ndarray, max_rounds: int = 8) -> np.ndarray:
    """Order the rows of one small segment so that nearest neighbours are adjacent, by recursive pairing.

    Each level pairs the current nodes greedily by cosine similarity (mutual nearest neighbours first,
    up to `max_rounds` rounds; what is left is paired in its current order), and a pair becomes a node
    whose vector is the normalised sum of its rows; levels repeat until one node is left. Sorting the
    rows by their node at every level, top level first, gives the depth-first order of that tree, so
    the closest pairs are siblings at the bottom. O(m²·D) time and O(m²) memory for m rows.
    """
    m = len(xs)
    if m <= 2:
        return np.arange(m)
    v = np.asarray(xs, dtype=np.float32)
    node_of_row = np.arange(m)
    keys = [node_of_row]
    while len(v) > 1:
        k = len(v)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        u = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
        sim = u @ u.T
        np.fill_diagonal(sim, -np.inf)
        partner = np.full(k, -1)
        idx = np.arange(k)
        nn = np.argmax(sim, axis=1)
        for _ in range(max_rounds):
            mutual = (partner < 0) & (nn[nn] == idx) & np.isfinite(sim[idx, nn])
            if not mutual.any():
                break
            partner[mutual] = nn[mutual]
            sim[mutual, :] = -np.inf
            sim[:, mutual] = -np.inf
            # Only rows whose nearest free neighbour was just matched need a new one.
            stale = np.flatnonzero((partner < 0) & (partner[nn] >= 0))
            if len(stale):
                nn[stale] = np.argmax(sim[stale], axis=1)
        rest = np.flatnonzero(partner < 0)
        even = len(rest) // 2 * 2
        partner[rest[0:even:2]] = rest[1:even:2]
        partner[rest[1:even:2]] = rest[0:even:2]
        lead = np.where(partner < 0, idx, np.minimum(idx, partner))
        parents, parent_of = np.unique(lead, return_inverse=True)
        # A parent has one or two children: its lead and, if any, the lead's partner.
        other = partner[parents]
        v = u[parents].copy()
        v[other >= 0] += u[other[other >= 0]]
        node_of_row = parent_of[node_of_row]
        keys.append(node_of_row)
    return np.lexsort(keys)


def _split_block_to_leaves(xs: np.ndarray, seg: np.ndarray, rng: np.random.Generator, *, leaf_size: int, power_iters: int) -> np.ndarray:
    """Finish the tree inside one block of whole segments (rows already gathered): the block's permutation."""
    import scipy.sparse

    n = len(xs)
    perm = np.arange(n)
    seg = np.unique(seg, return_inverse=True)[1].astype(np.int64)
    while True:
        counts = np.bincount(seg)
        split = counts > leaf_size
        if not split.any():
            break
        pos = np.flatnonzero(split[seg])
        local = np.unique(seg[pos], return_inverse=True)[1]
        n_seg = int(local.max()) + 1
        block = xs[pos]
        local_counts = np.bincount(local, minlength=n_seg)
        indicator = scipy.sparse.csr_matrix((np.ones(len(pos), dtype=np.float32), (local, np.arange(len(pos)))), shape=(n_seg, len(pos)))
        mean = (indicator @ block) / local_counts[:, None].astype(np.float32)
        block = block - mean[local]
        direction = rng.standard_normal((n_seg, xs.shape[1])).astype(np.float32)
        for _ in range(power_iters):
            p = np.einsum("ij,ij->i", block, direction[local])
            direction = indicator @ (block * p[:, None])
            norms = np.linalg.norm(direction, axis=1, keepdims=True)
            direction = np.divide(direction, norms, out=np.zeros_like(direction), where=norms > 0)
        proj = np.einsum("ij,ij->i", block, direction[local])
        within, upper = _principal_split(proj, local, local_counts)
        xs[pos] = xs[pos[within]]
        perm[pos] = perm[pos[within]]
        key = seg * 2
        key[pos] += upper
        seg = np.unique(key, return_inverse=True)[1].astype(np.int64)
    counts = np.bincount(seg)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    for s in np.flatnonzero(counts > 2):
        a, b = int(bounds[s]), int(bounds[s + 1])
        perm[a:b] = perm[a:b][_matching_order(xs[a:b])]
    return perm


def spatial_order(
    x: np.ndarray,
    rng: np.random.Generator,
    *, groups: np.ndarray | None = None,
    leaf_size: int = 1024,
    power_iters: int = 2,
) -> np.ndarray:
    """A permutation of the rows in which rows close in embedding space are adjacent.

    The rows of each group (e.g. a k-means cluster; all rows when None) are split recursively at the
    median of their projection on the segment's principal direction, down to segments of at most
    `leaf_size` rows: the PCA tree of Shimizu et al. (ICLR 2024, Alg. 2) on which they run the pivotal
    method. The principal direction is approximated by `power_iters` power iterations from a seeded
    random start. Levels whose segments exceed a chunk of rows are processed together over the whole
    data in row chunks (one pass per power iteration); below that, each chunk of whole segments is
    gathered once and finished in memory. Time O(N·D·power_iters·log2(largest group)), extra memory
    one chunk. Groups keep their sorted order; rows are shuffled first, so ties and the rows inside a
    leaf are in seeded random order.
    """
    n = x.shape[0]
    groups = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups)
    order = np.lexsort((rng.random(n), groups))
    seg = np.unique(groups[order], return_inverse=True)[1].astype(np.int64)
    chunk = _chunk_rows(x.shape[1])
    while True:
        counts = np.bincount(seg)
        big = counts > max(chunk, leaf_size)
        if not big.any():
            break
        # A level over segments larger than a chunk: several passes over the rows of those segments.
        pos = np.flatnonzero(big[seg])
        local = np.unique(seg[pos], return_inverse=True)[1].astype(np.int64)
        n_seg = int(local.max()) + 1
        rows = order[pos]
        local_counts = np.bincount(local, minlength=n_seg)
        mean = _segment_sums(x, rows, local, n_seg=n_seg) / local_counts[:, None]
        direction = rng.standard_normal((n_seg, x.shape[1]))
        for _ in range(power_iters):
            p = _segment_projection(x, rows, local, mean=mean, direction=direction)
            direction = _segment_sums(x, rows, local, n_seg=n_seg, weights=p) - mean * np.bincount(local, weights=p, minlength=n_seg)[:, None]
            norms = np.linalg.norm(direction, axis=1, keepdims=True)
            direction = np.divide(direction, norms, out=np.zeros_like(direction), where=norms > 0)
        proj = _segment_projection(x, rows, local, mean=mean, direction=direction)
        within, upper = _principal_split(proj, local, local_counts)
        order[pos] = rows[within]
        key = seg * 2
        key[pos] += upper
        seg = np.unique(key, return_inverse=True)[1].astype(np.int64)
    # Every segment now fits in a chunk: pack whole segments into chunks and finish each in memory.
    counts = np.bincount(seg)
    seg_start = np.concatenate([[0], np.cumsum(counts)])
    lo = 0
    while lo < len(counts):
        hi = int(np.searchsorted(seg_start, seg_start[lo] + chunk, side="right")) - 1
        hi = max(hi, lo + 1)
        a, b = int(seg_start[lo]), int(seg_start[hi])
        if (counts[lo:hi] > 2).any():
            xs = np.asarray(x[order[a:b]], dtype=np.float32)
            perm = _split_block_to_leaves(xs, seg[a:b], rng, leaf_size=leaf_size, power_iters=power_iters)
            order[a:b] = order[a:b][perm]
        lo = hi
    return order

"""The memory the sensitivity sampler allows itself, and the row chunks that keep its passes within it."""

from ...errors import ResourceError


# Memory this sampler allows itself on top of the embeddings (the goal machine has 8 GiB in all).
MEMORY_LIMIT_BYTES = 6 * 2**30


# Rows per chunk are chosen so a float64 chunk takes about this many bytes.
CHUNK_BYTES = 64 * 2**20


def _chunk_rows(n_cols: int) -> int:
    return int(max(256, CHUNK_BYTES // (8 * max(n_cols, 1))))


def _check_dense_memory(n_rows: int, n_cols: int) -> None:
    needed = 6 * n_cols * n_cols * 8 + 3 * _chunk_rows(n_cols) * n_cols * 8 + 64 * n_rows
    if needed > MEMORY_LIMIT_BYTES:
        raise ResourceError(
            f"Leverage scores on {n_cols}-dimensional embeddings need about {needed / 2**30:.1f} GiB "
            f"(D×D matrices); use method='kmeans-coreset' or 'lightweight', which need no D×D matrix."
        )

"""Single-threaded BLAS for the many small products of greedy MAP and k-DPP draws, and the cores available to run partitions side by side."""

import os
from contextlib import contextmanager


def _available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@contextmanager
def single_threaded_blas():
    """Run BLAS single-threaded: greedy makes thousands of small matrix-vector products, where OpenBLAS
    threads cost more than they give (5-8x slower on a busy 2-core machine); parallelism comes from
    running partitions side by side instead (as scikit-learn's KMeans does). threadpoolctl ships with
    scikit-learn; without it this does nothing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield

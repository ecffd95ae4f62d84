"""Retry policy of the idempotent tasks: encode-unit (finished shards are skipped on a re-run) and select
(same input, options and seed give the same selection; a finished one is read from the cache).

A failed run is retried RETRIES times, after BACKOFF_SECONDS, then twice that, and so on (exponential backoff,
with jitter so that units failing together do not retry together). User errors (SelectflowError: bad input or
options) are not retried: they would fail the same way.
"""

from prefect.tasks import exponential_backoff

from .errors import SelectflowError

RETRIES = 2
BACKOFF_SECONDS = 2.0
RETRY_DELAYS = exponential_backoff(backoff_factor=BACKOFF_SECONDS)(RETRIES)  # [2.0, 4.0]
JITTER = 0.5


def retryable(task, task_run, state) -> bool:
    """retry_condition_fn: retry anything but a user error."""
    error = getattr(state, "data", None)
    return not isinstance(error, SelectflowError)


RETRY_OPTIONS = dict(retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_jitter_factor=JITTER,
                     retry_condition_fn=retryable)

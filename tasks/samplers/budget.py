"""Budget semantics shared by the CLI, the flows and every sampler."""

import math

from ..errors import ConfigError


def resolve_budget(budget: float | int, n_usable: int) -> int:
    """Turn a user budget into a row count.

    A value strictly between 0 and 1 is a fraction of the usable rows (rounded half up, at least one
    row); a whole number >= 1 is a count. Anything else (0, negatives, 1.5, NaN, more rows than
    exist) is an error that says what to pass instead.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget):
        raise ConfigError(f"Budget must be a fraction in (0, 1) or a whole number of rows; got {budget!r}.")
    if n_usable <= 0:
        raise ConfigError("There are no usable rows to select from.")
    if 0 < budget < 1:
        count = math.floor(budget * n_usable + 0.5)
        if count < 1:
            raise ConfigError(
                f"Budget fraction {budget} of {n_usable} usable rows rounds to 0 rows; "
                f"pass a fraction of at least {1 / n_usable:.2g} or a row count."
            )
        return count
    if budget >= 1 and float(budget).is_integer():
        count = int(budget)
        if count > n_usable:
            raise ConfigError(
                f"Budget of {count} rows is larger than the {n_usable} usable rows; "
                "pass a smaller count or a fraction below 1."
            )
        return count
    if budget <= 0:
        raise ConfigError(f"Budget must be positive; got {budget!r}. Pass a fraction in (0, 1) or a row count.")
    raise ConfigError(
        f"Budget {budget!r} is neither a fraction below 1 nor a whole number of rows; "
        "pass e.g. 0.05 for 5% or 500 for 500 rows."
    )

"""Budget semantics shared by the CLI, the flows and every sampler."""

import math
from typing import Annotated, Union

from pydantic import Field, TypeAdapter, ValidationError

from ..errors import ConfigError

# The one declaration of a budget: the flow parameters, the CLI, the Run form and the evaluation use it.
Budget = Union[
    Annotated[int, Field(ge=1, title="rows", description="A whole number of rows.")],
    Annotated[float, Field(gt=0, lt=1, title="fraction", description="A fraction of the rows to select from (the usable rows; in an evaluation, the pool).")],
]

_BUDGET = TypeAdapter(Budget)


def parse_budget(value) -> Union[int, float]:
    """A budget written as text ('0.05', '500', '5e2'), checked against `Budget`: a whole number is a row count,
    anything else must be a fraction in (0, 1). Raises ValueError with a message that says what to pass."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"budget {value!r} is not a number; pass e.g. 0.05 or 500") from None
    try:
        return _BUDGET.validate_python(int(number) if number.is_integer() else number)
    except ValidationError:
        raise ValueError(f"budget {value} is neither a fraction between 0 and 1 nor a whole number of rows; "
                         "pass e.g. 0.05 or 500") from None


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

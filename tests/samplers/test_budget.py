import pytest

from selectflow.tasks.errors import ConfigError
from selectflow.tasks.samplers import resolve_budget


@pytest.mark.parametrize("budget,n,expected", [(0.05, 2400, 120), (0.5, 3, 2), (1, 10, 1), (10, 10, 10), (1.0, 5, 1), (0.999, 1000, 999)])
def test_fractions_and_counts(budget, n, expected):
    assert resolve_budget(budget, n) == expected


@pytest.mark.parametrize("budget", [0, -1, -0.5, 1.5, 11, float("nan"), float("inf"), "10", True])
def test_invalid_budgets_are_errors(budget):
    with pytest.raises(ConfigError):
        resolve_budget(budget, 10)


def test_fraction_that_rounds_to_zero_says_what_to_pass():
    with pytest.raises(ConfigError, match="rounds to 0 rows"):
        resolve_budget(0.001, 100)

"""What an evaluation runs: the samplers, budgets, seeds, the test split and the proxy classifier
(`EvaluationConfig`), and the checks that need the sampler registry, made before any work is done.

Plain code: no Prefect import.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError
from ..samplers import SAMPLERS, get_sampler
from ..samplers.budget import Budget

BASELINE = "random"
# Strong baselines beside random: coverage methods a sampler should be compared with, not only random.
BASELINES = ("kmeans-medoids", "facility-location")

def default_samplers() -> list[str]:
    """Every registered sampler except the random baseline (which always runs)."""
    return [name for name in SAMPLERS if name != BASELINE]


def uses_labels(name: str) -> bool:
    """Whether a sampler reads a labels column (it then also runs with `sampler_label_column`, as a separate row)."""
    return "label_source" in SAMPLERS[name].Options.model_fields


def labelled_name(name: str, column: str) -> str:
    return f"{name} + labels {column}"


class EvaluationConfig(BaseModel):
    """What to evaluate: samplers, budgets, seeds, the test split and the proxy classifier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    samplers: list[str] = Field(default_factory=default_samplers, description="Samplers to compare with random. Empty: every registered sampler except random.")
    budgets: list[Budget] = Field(default=[0.01, 0.02, 0.05, 0.1], min_length=1, description="Budgets: fractions below 1 of the pool (the non-test rows) or whole row counts.")
    seeds: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(default=[0, 1, 2], min_length=1, description="Sampler seeds; every sampler (random included) runs once per seed and budget.")
    test_fraction: float = Field(default=0.2, gt=0, lt=1, description="Share of each label's rows held out as the test split.")
    split_seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the stratified split (one split for the whole evaluation).")
    sampler_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Options per sampler name, e.g. {\"kmeans\": {\"k\": 16}}.")
    # Unit-norm embeddings have a small feature scale: at C = 1 a 19-row model mostly predicts the class
    # prior (macro-F1 0.24 for random at 1% of the bundled corpus, 0.44 at C = 10, 0.49 at C = 100).
    classifier_c: float = Field(default=10.0, gt=0, description="Inverse L2 regularisation strength of the proxy logistic regression.")
    classifier_max_iter: int = Field(default=1000, ge=10, description="L-BFGS iterations of the proxy logistic regression.")
    random_draws: int = Field(
        default=10, ge=1, le=1000, description="Random selections per budget (seeds 0..n-1, or the given seeds if more): "
                                               "random's mean is the reference every selection is held to, so it gets more draws than one seed list.")
    baselines: list[Literal["kmeans-medoids", "facility-location"]] = Field(
        default=list(BASELINES), description="Coverage baselines run beside random: k-means medoids (k = budget) and facility location.")
    fine_label_column: str | None = Field(
        default=None, description="A finer label column (e.g. template): its coverage is reported, and the test split is stratified by it.")
    sampler_label_column: str | None = Field(
        default=None, description="Give this column to the samplers that use labels, as `select --labels` would; "
                                  "those runs are extra rows named 'NAME + labels COLUMN'. None: samplers never see labels.")

    def sampler_names(self) -> list[str]:
        """The random baseline first, then the compared samplers in the order given (without repeats)."""
        names = [BASELINE]
        for name in self.samplers or default_samplers():
            if name not in names:
                names.append(name)
        return names

    def baseline_seeds(self) -> list[int]:
        """The seeds of the random baseline: the given seeds, extended with 0, 1, ... to `random_draws` draws."""
        seeds = list(dict.fromkeys(self.seeds))
        extra = (s for s in range(2**31) if s not in seeds)
        while len(seeds) < self.random_draws:
            seeds.append(next(extra))
        return seeds

    def selection_names(self) -> list[str]:
        """Every row of the results: random, the coverage baselines, the samplers, then the labelled variants."""
        names = [BASELINE] + [b for b in self.baselines if b not in self.sampler_names()]
        names += [n for n in self.sampler_names() if n != BASELINE]
        if self.sampler_label_column:
            names += [labelled_name(n, self.sampler_label_column) for n in self.sampler_names()
                      if n in SAMPLERS and uses_labels(n)]
        return names


def check_config(config: EvaluationConfig) -> None:
    """Checks that need the registry: known samplers and valid options, before any work is done."""
    for name in config.sampler_names():
        if name not in SAMPLERS:
            raise ConfigError(f"Unknown sampler {name!r} in --samplers; choose from: {', '.join(SAMPLERS)}.")
    for name, options in config.sampler_options.items():
        if name not in config.sampler_names():
            raise ConfigError(f"Options were given for sampler {name!r}, which is not evaluated; add it to --samplers or drop its options.")
        try:
            get_sampler(name, options)
        except ValidationError as exc:  # unknown option or value out of bounds
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"Invalid option {name}.{where} (from -o): {first['msg']}; "
                              f"`selectflow select --help` lists {name}'s options.") from None


def check_request(config: EvaluationConfig, label_column: str | None) -> None:
    """Everything that can be checked before embedding: a label column is set, samplers and options are valid."""
    if not label_column:
        raise ConfigError("The evaluation needs a label column: pass --labels COL (e.g. --labels source for the bundled corpus).")
    check_config(config)


"""The one registry of samplers. A new sampler is one module or package in this folder and one line here."""

from ..errors import ConfigError
from .base import Sampler
from .coverage import CoverageSampler
from .dpp import DPPSampler
from .influence import InfluenceSampler
from .kmq import KMeansSampler
from .mig import MIGSampler
from .random import RandomSampler
from .sensitivity import SensitivitySampler

SAMPLERS: dict[str, type[Sampler]] = {
    RandomSampler.name: RandomSampler,
    KMeansSampler.name: KMeansSampler,
    MIGSampler.name: MIGSampler,
    SensitivitySampler.name: SensitivitySampler,
    InfluenceSampler.name: InfluenceSampler,
    DPPSampler.name: DPPSampler,
    CoverageSampler.name: CoverageSampler,
}


def get_sampler(name: str, options=None) -> Sampler:
    """Build the sampler registered under `name` with validated options (a dict or its Options model)."""
    try:
        cls = SAMPLERS[name]
    except KeyError:
        raise ConfigError(f"Unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}.") from None
    return cls(options)

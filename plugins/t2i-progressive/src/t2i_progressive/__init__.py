"""Progressive growing (Karras et al. 2018) for t2i: generator and discriminator ``progressive``."""

from .models import (
    EqualizedConv2d,
    EqualizedLinear,
    ProgressiveDiscriminator,
    ProgressiveDiscriminatorConfig,
    ProgressiveGenerator,
    ProgressiveGeneratorConfig,
)
from .schedule import FULLY_GROWN, GrowthClock, GrowthSchedule, stage_resolutions

__all__ = [
    "ProgressiveGenerator",
    "ProgressiveGeneratorConfig",
    "ProgressiveDiscriminator",
    "ProgressiveDiscriminatorConfig",
    "GrowthSchedule",
    "GrowthClock",
    "FULLY_GROWN",
    "stage_resolutions",
    "EqualizedConv2d",
    "EqualizedLinear",
]

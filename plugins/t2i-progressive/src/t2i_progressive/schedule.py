"""The growth schedule: images seen -> (stage, fade-in alpha), and the clock a network keeps it in.

Stages are the resolutions ``start_resolution, 2 * start_resolution, ..., R``: stage 0 trains at
``start_resolution`` and stage ``n = log2(R / start_resolution)`` is the fully grown network. With
``P = images_per_phase`` the timeline is, in real images shown to the discriminator::

    [0, P)                  stage 0, stable (alpha = 1)
    [(2k-1) P, 2k P)        stage k, fade-in: alpha = (images_seen - (2k-1) P) / P, from 0 up to 1
    [2k P, (2k+1) P)        stage k, stable (alpha = 1)                               for k = 1 .. n
    [2n P, ...)             stage n, stable: fully grown

so the network is fully grown after ``2 n P`` images (:meth:`GrowthSchedule.grown_after`).

The schedule is a pure function of ``images_seen``, which the engine passes to ``on_train_step`` and
restores on resume, so a run resumed in the middle of a fade-in continues the same schedule without
any state of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from t2i.options import require_positive

__all__ = ["GrowthSchedule", "GrowthClock", "FULLY_GROWN", "stage_resolutions"]

FULLY_GROWN = 2**62
"""The clock of a network that no engine drives (freshly built, or in a test): past every schedule."""


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass
class GrowthSchedule:
    """When the network grows. Generator and discriminator must be given the same values."""

    start_resolution: int = field(
        default=8,
        metadata={"help": "resolution of the first stage (power of two >= 4, <= the target); 0: no growing"},
    )
    images_per_phase: int = field(
        default=16000,
        metadata={"help": "real images per phase: the first stable phase, then per doubling a fade-in and a stable phase"},
    )

    def __post_init__(self) -> None:
        s = self.start_resolution
        if isinstance(s, bool) or not isinstance(s, int) or not (s == 0 or (s >= 4 and _is_power_of_two(s))):
            raise ValueError(f"start_resolution must be 0 or a power of two >= 4, got {s!r}")
        require_positive(self, "images_per_phase")

    def start(self, resolution: int) -> int:
        """The first stage's resolution for target ``resolution``; ValueError when it cannot grow to it."""
        start = self.start_resolution or resolution
        if start > resolution:
            raise ValueError(f"start_resolution {start} is above the target resolution {resolution}")
        return start

    def n_stages(self, resolution: int) -> int:
        """Number of stages: 1 + the doublings from the start resolution to ``resolution``."""
        return int(math.log2(resolution // self.start(resolution))) + 1

    def grown_after(self, resolution: int) -> int:
        """Images after which the network is fully grown (0 when it does not grow)."""
        return 2 * (self.n_stages(resolution) - 1) * self.images_per_phase

    def at(self, images_seen: int, resolution: int) -> tuple[int, float]:
        """``(stage, alpha)`` after ``images_seen`` real images; alpha < 1 only during a fade-in."""
        if images_seen < 0:
            raise ValueError(f"images_seen must be >= 0, got {images_seen}")
        last = self.n_stages(resolution) - 1
        p = self.images_per_phase
        if last == 0 or images_seen < p:
            return 0, 1.0
        k, into = divmod(images_seen - p, 2 * p)
        if k >= last:
            return last, 1.0
        return k + 1, min(into / p, 1.0)


def stage_resolutions(schedule: GrowthSchedule, resolution: int) -> list[int]:
    """The resolution of each stage, first to last (``[8, 16, 32]`` for 8 -> 32)."""
    start = schedule.start(resolution)
    return [start * 2**k for k in range(schedule.n_stages(resolution))]


class GrowthClock:
    """The images seen by a growing network and the ``(stage, alpha)`` they give, shared with its deep copies.

    A network reads its stage from its clock, which ``on_train_step`` sets. ``forward`` reads only
    ``stage`` (an int that changes once per stage) and ``alpha`` (a float), never ``images_seen``, so
    ``torch.compile`` builds one graph per stage instead of one per step. ``copy.deepcopy`` of the
    network keeps the *same* clock, so the engine's EMA copy of the generator (``AveragedModel`` deep-copies
    G and never receives ``on_train_step``) is always at G's stage: sample grids and evaluations during
    training show the current resolution. The clock is saved in the network's ``state_dict`` (as its
    ``_extra_state``, an int64 scalar), so a checkpoint of a run stopped mid-growth samples at the stage
    the run was at. It is not a buffer on purpose: the EMA averages buffers, which would corrupt it.
    """

    __slots__ = ("images_seen", "stage", "alpha")

    def __init__(self, images_seen: int, stage: int, alpha: float):
        self.images_seen, self.stage, self.alpha = int(images_seen), int(stage), float(alpha)

    def __deepcopy__(self, memo: dict) -> "GrowthClock":
        return self

    def state(self) -> torch.Tensor:
        return torch.tensor(self.images_seen, dtype=torch.int64)

    def __repr__(self) -> str:
        return f"GrowthClock(images_seen={self.images_seen}, stage={self.stage}, alpha={self.alpha})"

"""The global random streams of every process (dropout, DiffAugment, gradient-penalty mixing, ...).

The engine's own draws (data order, captions, noise) have their own generators in the data feed; what
remains uses torch's global RNG (and CUDA's). Rank 0 keeps the stream seeded by ``train.seed``; rank
``r > 0`` reseeds once its networks are built (they must start identical), so dropout and the like differ
between ranks. A checkpoint keeps every rank's state, so each rank continues its own stream on resume.
"""

from __future__ import annotations

from typing import Any

import torch

from . import distributed

__all__ = ["ProcessRNG", "RANK_SEED_STRIDE"]

RANK_SEED_STRIDE = 7_919  # rank r > 0 reseeds torch's global RNG with train.seed + r * this


class ProcessRNG:
    """Stateful view of the global RNG states of all ranks. :meth:`state_dict` is a collective: every rank
    calls it at the same step, and each gets ``{"world_size": W, "ranks": [state of rank 0, ...]}``."""

    def __init__(self, device: torch.device, rank: int = 0, world_size: int = 1):
        self.device, self.rank, self.world_size = device, rank, world_size

    def seed_rank(self, seed: int) -> None:
        """Give ranks other than 0 their own global stream (call once the networks are built)."""
        if self.rank > 0:
            torch.manual_seed(seed + self.rank * RANK_SEED_STRIDE)

    def local_state(self) -> dict[str, torch.Tensor]:
        state = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def state_dict(self) -> dict[str, Any]:
        ranks = distributed.all_gather_object(self.local_state()) if self.world_size > 1 else [self.local_state()]
        return {"world_size": self.world_size, "ranks": ranks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        own = state["ranks"][self.rank]
        torch.set_rng_state(own["torch"].cpu())
        if own.get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(own["cuda"].cpu(), self.device)

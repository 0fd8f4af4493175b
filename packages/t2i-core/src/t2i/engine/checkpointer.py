"""Saving and restoring a run's stateful parts: whatever it is given, nothing listed by hand.

A part is anything with ``state_dict()`` / ``load_state_dict()``. Networks (``nn.Module`` parts) are
written as ``<name>.safetensors`` (readable without unpickling, by ``t2i sample`` and ``t2i eval``); every
other part is ``state.pt[name]``. Restoring loads each part from the entry of its name, so a part added to
a run is checkpointed and resumed without touching this file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Protocol

import torch
from torch import nn

from ..errors import UsageError
from . import distributed
from .checkpoint import Checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint

__all__ = ["Stateful", "Checkpointer"]


class Stateful(Protocol):
    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> Any: ...


class Checkpointer:
    """Checkpoints under ``folder`` every ``every`` steps (0: only at the end), keeping the last ``keep``.

    Every rank calls :meth:`save` at the same step (a part may gather state from all ranks); only the
    ``writer`` (rank 0) writes.
    """

    def __init__(self, folder: str | os.PathLike, *, every: int, keep: int, writer: bool = True):
        self.folder = Path(folder)
        self.every, self.keep, self.writer = every, keep, writer
        self.saved_step: int | None = None  # the step of this session's last save, the same on every rank
        self.saved: Path | None = None  # its folder (rank 0; None elsewhere)

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def save(self, step: int, parts: Mapping[str, Stateful], meta: Mapping[str, Any]) -> Path | None:
        """Write checkpoint ``step`` of ``parts``; its folder on rank 0, ``None`` elsewhere."""
        states = {name: part.state_dict() for name, part in parts.items()}
        self.saved_step = step
        if not self.writer:
            return None
        weights = {name: s for name, s in states.items() if isinstance(parts[name], nn.Module)}
        state = {name: s for name, s in states.items() if name not in weights}
        self.saved = save_checkpoint(self.folder, step, weights, state, meta, keep=self.keep)
        return self.saved

    def latest(self) -> Path | None:
        """The newest complete checkpoint, as rank 0 sees it (every rank loads that one)."""
        return distributed.broadcast_object(latest_checkpoint(self.folder) if self.writer else None)

    def load(self, path: str | os.PathLike, map_location: torch.device | str = "cpu") -> Checkpoint:
        """Read a checkpoint, its state in the per-part layout whatever version of t2i wrote it."""
        ckpt = load_checkpoint(path, map_location=map_location)
        ckpt.state = upgrade_state(ckpt.state)
        return ckpt

    @staticmethod
    def restore(ckpt: Checkpoint, parts: Mapping[str, Stateful]) -> None:
        """Load every part from the entry of its name; a part the checkpoint lacks is a usage error."""
        for name, part in parts.items():
            source = ckpt.weights if isinstance(part, nn.Module) else ckpt.state
            if name not in source:
                raise UsageError(f"checkpoint {ckpt.path} has no '{name}'; it was written for other settings")
            part.load_state_dict(source[name])


def upgrade_state(state: dict[str, Any]) -> dict[str, Any]:
    """The state of a checkpoint written before it was kept per part (one flat dict), in the per-part form."""
    if "epoch" not in state or "feed" in state:
        return state
    ranks = state.get("rank_rng") or [
        {"torch": state["torch_rng"], **({"cuda": state["cuda_rng"]} if "cuda_rng" in state else {})}
    ]
    return {
        **{k: state[k] for k in ("opt_g", "opt_d", "sched_g", "sched_d", "scaler") if k in state},
        "feed": {k: state.get(k) for k in ("epoch", "position", "rng", "noise_rng")},
        "stopping": {"elapsed": state["elapsed"]},
        "ema": {"n_averaged": state.get("ema_n_averaged", torch.tensor(0))},
        "random": {"world_size": int(state.get("world_size", 1)), "ranks": ranks},
    }

"""Checkpoints: weights in safetensors, training state beside them, written so a kill never corrupts one.

A checkpoint is a folder ``checkpoints/step_00001000/`` holding ``<network>.safetensors`` files, a
``state.pt`` (optimisers, schedulers, grad scaler, RNG states, data position; loaded with
``weights_only=True``) and ``meta.json`` (step, JSON-able extras such as a text encoder's vocabulary).
It is assembled in a hidden temporary folder (unique to the writer) and renamed into place, so a
``step_*`` folder is always complete; the newest one is the latest checkpoint. Only the last ``keep`` are
kept. :class:`t2i.engine.checkpointer.Checkpointer` decides what goes in and when.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping

import torch
from safetensors.torch import load_file, save_file

from ..errors import UsageError

__all__ = [
    "Checkpoint", "save_checkpoint", "list_checkpoints", "latest_checkpoint", "load_checkpoint", "sampling_weights",
]

_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class Checkpoint:
    path: Path
    step: int
    weights: dict[str, dict[str, torch.Tensor]]
    state: dict[str, Any]
    meta: dict[str, Any]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_checkpoint(
    folder: str | os.PathLike,
    step: int,
    weights: Mapping[str, Mapping[str, torch.Tensor]],
    state: Mapping[str, Any],
    meta: Mapping[str, Any],
    keep: int = 3,
) -> Path:
    """Write checkpoint ``step`` under ``folder`` atomically and prune to the newest ``keep``."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        for name, tensors in weights.items():
            # clone: safetensors refuses tensors that share storage (tied weights, views)
            save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(tmp / f"{name}.safetensors"))
        torch.save(dict(state), tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps({"step": step, **meta}, indent=2))
        for f in tmp.iterdir():
            _fsync_file(f)
        _fsync_dir(tmp)
        if final.exists():  # re-saving the same step (e.g. Ctrl-C right after a scheduled save)
            old = tmp.with_name(tmp.name.replace(".tmp-", ".old-", 1))
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    finally:
        if tmp.exists():  # the write failed (or was interrupted): leave no half-built folder behind
            shutil.rmtree(tmp, ignore_errors=True)
    _fsync_dir(root)
    for stale in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``folder``, oldest first."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint folder (``step_*``); a missing or unreadable one is a :class:`UsageError`."""
    p = Path(path)
    if not (p / "meta.json").is_file():
        raise UsageError(f"{p} is not a t2i checkpoint (no meta.json); expected a runs/<name>/checkpoints/step_* folder")
    try:
        meta = json.loads((p / "meta.json").read_text())
        weights = {f.name[: -len(".safetensors")]: load_file(str(f), device=str(map_location)) for f in p.glob("*.safetensors")}
        state = torch.load(p / "state.pt", map_location=map_location, weights_only=True) if (p / "state.pt").exists() else {}
    except (OSError, ValueError, RuntimeError) as exc:
        raise UsageError(f"checkpoint {p} cannot be read: {exc}") from None
    return Checkpoint(p, int(meta["step"]), weights, state, meta)


def sampling_weights(saved: Collection[str], *, ema: bool = True) -> str:
    """Which saved generator to sample from: ``generator_ema`` when ``ema`` is asked for and the run kept an
    EMA, else ``generator``. ``saved``: the names of a checkpoint's weights."""
    return "generator_ema" if ema and "generator_ema" in saved else "generator"

"""Choosing the torch device from a user's setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``).

Its own module so that metrics, the CLI and the engine share one rule without importing one another.
"""

from __future__ import annotations

import torch

from .errors import ConfigError

__all__ = ["pick_device"]


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else mps, else cpu. An unavailable explicit device is a user error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    if device.type == "mps" and not _mps_available():
        raise ConfigError("train.device: mps was asked for but is not available; use --device cpu or auto")
    return device


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())

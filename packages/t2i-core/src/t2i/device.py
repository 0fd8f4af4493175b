"""Choosing the torch device from a user's setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``).

Its own module so that metrics, the CLI and the engine share one rule without importing one another.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

from .errors import ConfigError

__all__ = ["pick_device", "fast_bf16", "cpu_bf16_flags"]

# CPU features that make bf16 matmuls and convolutions faster than fp32 (oneDNN uses them under autocast)
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


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


def fast_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether bf16 autocast runs faster than fp32 on ``device``, and why (for the run banner).

    CUDA: the GPU supports bf16 (Ampere or newer). CPU: the processor has native bf16 instructions
    (AVX512-BF16 or AMX-BF16, read from ``/proc/cpuinfo`` on Linux); without them bf16 is emulated and
    slower than fp32. Other devices: no.
    """
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, "CUDA GPU with bf16" if ok else "this CUDA GPU has no fast bf16"
    if device.type == "cpu":
        flags = cpu_bf16_flags()
        if flags:
            return True, "CPU with " + " and ".join(f.upper().replace("_", "-") for f in flags)
        return False, "this CPU has no AVX512-BF16 or AMX-BF16"
    return False, f"bf16 is not known to be faster on {device.type}"


@functools.cache
def cpu_bf16_flags() -> tuple[str, ...]:
    """The CPU's native bf16 features among AVX512-BF16 and AMX-BF16 (empty off Linux/x86 or when unknown)."""
    if platform.system() != "Linux":
        return ()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ()
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return tuple(f for f in _BF16_CPU_FLAGS if f in flags)

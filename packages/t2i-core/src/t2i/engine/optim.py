"""Optimisers, learning-rate schedules and mixed precision, from :class:`TrainConfig`."""

from __future__ import annotations

import contextlib
import math
from typing import ContextManager, Iterable

import torch

from ..config import TrainConfig
from ..device import fast_bf16
from ..errors import ConfigError

__all__ = ["learning_rates", "make_optimizer", "make_scheduler", "Precision", "steps_for_epochs"]


def learning_rates(cfg: TrainConfig, world_size: int) -> tuple[float, float]:
    """The learning rates of G and D a run uses. They are taken as given whatever the number of processes
    (``train.batch_size`` is the global batch, the same on any number of them); ``train.scale_lr`` multiplies
    them by the number of processes (the linear scaling rule, for recipes that grow the batch with them)."""
    scale = world_size if cfg.scale_lr else 1
    return cfg.lr_g * scale, cfg.lr_d * scale


def make_optimizer(params: Iterable[torch.nn.Parameter], lr: float, cfg: TrainConfig) -> torch.optim.Adam:
    return torch.optim.Adam([p for p in params if p.requires_grad], lr=lr, betas=cfg.betas)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int | None) -> torch.optim.lr_scheduler.LRScheduler:
    """One scheduler step per generator step. ``linear`` decays to 0 at ``total_steps``."""
    if cfg.schedule == "cosine_restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=cfg.t0, T_mult=cfg.t_mult)
    if cfg.schedule == "linear":
        if total_steps is None:
            raise ConfigError("train.schedule = linear needs a known length: set train.steps or train.epochs")
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1.0 - step / total_steps))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


class Precision:
    """Autocast context and grad scaler for ``train.precision`` on ``device``.

    bf16 works on CPU and recent CUDA GPUs; fp16 needs CUDA and uses a grad scaler; ``auto`` picks bf16
    where it is faster than fp32 (CUDA GPUs with bf16; CPUs with AVX512-BF16 or AMX: :func:`t2i.device.fast_bf16`)
    and fp32 elsewhere (emulated bf16 is slower than fp32). ``reason`` says why, for the run banner.
    """

    def __init__(self, precision: str, device: torch.device):
        self.reason = "asked for"
        if precision == "auto":
            fast, why = fast_bf16(device)
            precision, self.reason = ("bf16", f"auto: {why}") if fast else ("fp32", f"auto: {why}")
        if precision == "fp16" and device.type != "cuda":
            raise ConfigError(f"train.precision = fp16 needs a CUDA device (this run uses {device.type}); use bf16 or fp32")
        self.name = precision
        self.device = device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")

    @property
    def described(self) -> str:
        """``"bf16 (auto: CPU with AVX512-BF16)"``, or just the name when it was asked for."""
        return self.name if self.reason == "asked for" else f"{self.name} ({self.reason})"

    def autocast(self) -> ContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], clip: float) -> float | None:
        """Backward, optional gradient clipping (on unscaled gradients), optimiser step. Returns the grad norm if clipped."""
        opt.zero_grad(set_to_none=True)
        self.backward(loss)
        return self.update(opt, params, clip)

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate the gradient of ``loss`` (scaled by fp16's grad scaler): once per micro-batch. The scale
        only changes in :meth:`update`, so every micro-batch of an optimiser step is scaled alike."""
        self.scaler.scale(loss).backward()

    def update(self, opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], clip: float) -> float | None:
        """Once per optimiser step, after the micro-batches' :meth:`backward`: unscale, optionally clip the
        accumulated gradient's norm, step (skipped by fp16's scaler on inf/NaN) and update the scale."""
        norm = None
        if clip > 0:
            self.scaler.unscale_(opt)
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
        self.scaler.step(opt)
        self.scaler.update()
        return norm

def steps_for_epochs(epochs: float, batches_per_epoch: int, d_steps: int) -> int:
    """Generator steps in ``epochs`` passes when each generator step consumes ``d_steps`` batches."""
    return max(1, math.ceil(epochs * batches_per_epoch / d_steps))


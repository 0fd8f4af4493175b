"""Differentiable augmentation of everything D sees (DiffAugment) with an optional adaptive probability (ADA).

DiffAugment (Zhao et al. 2020) augments real *and* generated images, in the D step and in the G step,
with transformations that are differentiable, so G is trained through them; D then cannot memorise a small
training set, and G is not taught to produce augmented-looking images (both sides of D's decision see the
same distribution of augmentations). The three policies are the paper's:

- ``color``: brightness ``+U(-0.5, 0.5)``, saturation ``x (U(0, 2))`` around each pixel's channel mean,
  contrast ``x (U(0.5, 1.5))`` around the image mean (images in ``[-1, 1]``);
- ``translation``: an integer shift of up to 1/8 of the image side in each direction, zeros shifted in;
- ``cutout``: a square of half the image side (centre anywhere in the image) set to zero.

One call augments several batches of the same size with the *same* transformation per sample index
(``augment(real, fake)``: real[i] and fake[i] get the same shift, colour change and hole); parameters are
drawn per sample from torch's global RNG, which the engine checkpoints.

Each policy is applied to each sample with probability ``p``. With ``ada_target > 0`` (ADA, Karras et al.
2020) ``p`` adapts: D's real logits are watched, ``r = E[sign(D(real))]`` over the last ``ada_interval``
generator steps, and ``p`` moves by ``sign(r - ada_target) * images / ada_speed`` (so it can go from 0 to
1 in ``ada_speed`` real images), clamped to ``[0, 1]``: up while D is confident on real images (it
overfits), down otherwise. ADA's paper uses target 0.6 and 500k images. ``p`` and the running statistics
are buffers of this module, so a checkpoint of its ``state_dict`` resumes exactly; under
``torch.distributed`` the statistics are summed over processes so every process keeps the same ``p``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .config import AugmentConfig, parse_policy

__all__ = ["DiffAugment", "OPS", "adjust_color", "translate", "cutout", "parse_policy"]


# -- the transformations, with explicit parameters (one value per sample) ------------------------------


def adjust_color(x: Tensor, brightness: Tensor, saturation: Tensor, contrast: Tensor) -> Tensor:
    """DiffAugment's colour op: ``x + brightness``, then saturation and contrast scales; parameters ``(B,)``."""
    shape = (-1, 1, 1, 1)
    x = x + brightness.view(shape).to(x.dtype)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * saturation.view(shape).to(x.dtype) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast.view(shape).to(x.dtype) + mean


def translate(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Shift sample ``b`` down by ``rows[b]`` and right by ``cols[b]`` pixels (negative: up / left); zeros fill in."""
    b, _, h, w = x.shape
    i = torch.arange(h, device=x.device).view(1, h, 1) - rows.view(b, 1, 1)  # source row of each output row
    j = torch.arange(w, device=x.device).view(1, 1, w) - cols.view(b, 1, 1)
    inside = ((i >= 0) & (i < h) & (j >= 0) & (j < w)).unsqueeze(1)
    flat = (i.clamp(0, h - 1) * w + j.clamp(0, w - 1)).view(b, 1, h * w).expand(-1, x.shape[1], -1)
    moved = x.flatten(2).gather(2, flat).view_as(x)
    return moved * inside.to(x.dtype)


def cutout(x: Tensor, top: Tensor, left: Tensor, size: tuple[int, int]) -> Tensor:
    """Zero a ``size`` rectangle starting at ``(top[b], left[b])`` (clipped to the image) in each sample."""
    b, _, h, w = x.shape
    i = torch.arange(h, device=x.device).view(1, h, 1)
    j = torch.arange(w, device=x.device).view(1, 1, w)
    t, l = top.view(b, 1, 1), left.view(b, 1, 1)
    hole = (i >= t) & (i < t + size[0]) & (j >= l) & (j < l + size[1])
    return x * (~hole).unsqueeze(1).to(x.dtype)


# -- random parameters, as in DiffAugment_pytorch.py ------------------------------------------------------


def _color(b: int, h: int, w: int, device: torch.device) -> Callable[[Tensor], Tensor]:
    brightness = torch.rand(b, device=device) - 0.5
    saturation = torch.rand(b, device=device) * 2.0
    contrast = torch.rand(b, device=device) + 0.5
    return lambda x: adjust_color(x, brightness, saturation, contrast)


def _translation(b: int, h: int, w: int, device: torch.device, ratio: float = 0.125) -> Callable[[Tensor], Tensor]:
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    rows = torch.randint(-sh, sh + 1, (b,), device=device)
    cols = torch.randint(-sw, sw + 1, (b,), device=device)
    return lambda x: translate(x, rows, cols)


def _cutout(b: int, h: int, w: int, device: torch.device, ratio: float = 0.5) -> Callable[[Tensor], Tensor]:
    size = (int(h * ratio + 0.5), int(w * ratio + 0.5))
    top = torch.randint(0, h + (1 - size[0] % 2), (b,), device=device) - size[0] // 2
    left = torch.randint(0, w + (1 - size[1] % 2), (b,), device=device) - size[1] // 2
    return lambda x: cutout(x, top, left, size)


# the code of each name in AUGMENT_OPS (the config checks policies against those names)
OPS: dict[str, Callable[..., Callable[[Tensor], Tensor]]] = {"color": _color, "translation": _translation, "cutout": _cutout}


class DiffAugment(nn.Module):
    """``augment(*batches)`` -> the batches augmented alike; identity (no RNG draws) when the policy is empty."""

    def __init__(self, cfg: AugmentConfig | None = None):
        super().__init__()
        self.cfg = cfg or AugmentConfig()
        self.ops = parse_policy(self.cfg.policy)
        self.adaptive = self.cfg.ada_target > 0
        self.register_buffer("p", torch.tensor(float(self.cfg.p)))
        self.register_buffer("sign_sum", torch.tensor(0.0))  # sum of sign(D(real)) since the last adjustment
        self.register_buffer("sign_count", torch.tensor(0.0))  # real images counted there

    @property
    def enabled(self) -> bool:
        return bool(self.ops)

    def forward(self, *batches: Tensor) -> tuple[Tensor, ...]:
        if not self.ops:
            return batches
        first = batches[0]
        if any(x.shape != first.shape for x in batches):
            raise ValueError(f"augment: batches of different shapes {[tuple(x.shape) for x in batches]}")
        b, _, h, w = first.shape
        out = list(batches)
        for name in self.ops:
            op = OPS[name](b, h, w, first.device)
            gate = (torch.rand(b, device=first.device) < self.p).view(b, 1, 1, 1)
            out = [torch.where(gate, op(x), x) for x in out]
        return tuple(out)

    @torch.no_grad()
    def observe(self, real_logits: Tensor) -> None:
        """Count the signs of D's logits on (augmented) real images; a no-op unless adaptive."""
        if self.adaptive and self.ops:
            self.sign_sum += real_logits.detach().float().sign().sum()
            self.sign_count += real_logits.numel()

    @torch.no_grad()
    def adjust(self) -> None:
        """Move ``p`` from the signs observed since the last call (ADA's heuristic); a no-op unless adaptive."""
        if not (self.adaptive and self.ops):
            return
        stats = torch.stack([self.sign_sum, self.sign_count])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        r = stats[0] / stats[1].clamp_min(1.0)
        step = torch.sign(r - self.cfg.ada_target) * stats[1] / self.cfg.ada_speed
        self.p.copy_((self.p + step).clamp(0.0, 1.0))
        self.sign_sum.zero_()
        self.sign_count.zero_()

    def update(self, step: int) -> None:
        """Called by the engine after the D steps of generator step ``step``: adjust every ``ada_interval`` steps."""
        if self.adaptive and (step + 1) % self.cfg.ada_interval == 0:
            self.adjust()

    def extra_repr(self) -> str:
        return f"policy={','.join(self.ops) or 'off'}, p={self.cfg.p}, ada_target={self.cfg.ada_target}"

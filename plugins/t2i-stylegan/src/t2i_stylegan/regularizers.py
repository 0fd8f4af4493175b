"""StyleGAN2's path-length regularisation (Karras et al., CVPR 2020, section 3.2), as the G term
``path_length``, written after StyleGAN2-ADA's ``training/loss.py`` (``StyleGAN2Loss``, phase ``Greg``).

A fixed-size step in W should move the image by a fixed amount, whatever the w: for ``ws = mapping(z, text)``
and ``img = synthesis(ws)``, with ``y ~ N(0, I) / sqrt(H W)`` an image-space direction,

    ``a = sqrt(mean_over_ws(sum_over_w_dim((d (img . y) / d ws)^2)))``  per sample,
    ``pl_mean <- pl_mean + pl_decay * (mean(a) - pl_mean)``  (a running mean, kept as a buffer),
    ``penalty = mean((a - pl_mean)^2)``.

As in StyleGAN2 it is lazy: computed only at steps ``step % every == 0`` (``every`` 4, the paper's
``G_reg_interval``) and then multiplied by ``every``; on a batch ``pl_batch_shrink`` (2) times smaller than
the step's. The term's weight is the paper's ``pl_weight`` (2): ``--term path_length=2``. It needs a generator
that exposes ``mapping(z, text)`` and ``synthesis(ws)`` (``stylegan``) and refuses any other in one line.

What differs from StyleGAN2-ADA: the penalty is added to the step's G loss (no separate optimiser step, no
lr/betas rescaling by ``every / (every + 1)``); fresh ``z`` are drawn for it from the global RNG (checkpointed
by the engine), without style mixing; it runs in fp32 whatever the run's precision; with micro-batches each
micro-batch updates ``pl_mean``. ``pl_mean`` is a buffer, saved with the term in the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from t2i.errors import UsageError
from t2i.interfaces import LossTerm, StepOutputs
from t2i.options import require_positive

__all__ = ["PathLengthConfig", "PathLengthTerm", "path_lengths"]


@dataclass
class PathLengthConfig:
    every: int = field(default=4, metadata={
        "help": "lazy regularisation: computed at steps where step % every == 0, times every (StyleGAN2: 4)"})
    pl_decay: float = field(default=0.01, metadata={"help": "rate of pl_mean's running average (StyleGAN2: 0.01)"})
    pl_batch_shrink: int = field(default=2, metadata={
        "help": "the penalty's batch is the step's batch divided by this (at least 1 sample; StyleGAN2: 2)"})

    def __post_init__(self) -> None:
        require_positive(self, "every", "pl_batch_shrink")
        if not 0.0 < self.pl_decay <= 1.0:
            raise ValueError(f"pl_decay must be in (0, 1], got {self.pl_decay}")


def path_lengths(images: Tensor, ws: Tensor) -> Tensor:
    """Per-sample path length ``a`` of ``images = synthesis(ws)``: the norm of the Jacobian-vector product with a
    random image direction ``y ~ N(0, I) / sqrt(H W)``, averaged over the ``ws`` (``create_graph``, so it trains)."""
    noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
    (grads,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
    return grads.float().square().sum(dim=2).mean(dim=1).sqrt()


class PathLengthTerm(LossTerm):
    """G term: StyleGAN2's lazy path-length penalty ``mean((a - pl_mean)^2) * every`` (module docstring)."""

    per_scale: ClassVar[bool] = False  # it regenerates its own images: once per step, not per D scale
    stateful: ClassVar[bool] = True  # pl_mean goes into the checkpoint (term_path_length.safetensors)

    def __init__(self, cfg: PathLengthConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or PathLengthConfig()
        self.register_buffer("pl_mean", torch.zeros(()))

    def active(self, step: int) -> bool:
        return step % self.cfg.every == 0

    def g_loss(self, out: StepOutputs) -> Tensor | None:
        if not self.active(out.step):
            return None
        G = _style_generator(out.generator)
        n = max(out.text.shape[0] // self.cfg.pl_batch_shrink, 1)
        text = out.text[:n].detach()
        z = torch.randn(n, G.z_dim, device=text.device)
        if self.pl_mean.device != text.device:  # the engine does not move terms: follow the generator
            self.pl_mean = self.pl_mean.to(text.device)
        with torch.autocast(text.device.type, enabled=False):
            ws = G.mapping(z, text.float())
            lengths = path_lengths(G.synthesis(ws), ws)
            pl_mean = self.pl_mean.lerp(lengths.detach().mean(), self.cfg.pl_decay)
            self.pl_mean.copy_(pl_mean)
            penalty = (lengths - pl_mean).square().mean()
        return penalty * self.cfg.every


def _style_generator(G: nn.Module | None) -> nn.Module:
    """``G`` when it has ``mapping(z, text)`` and ``synthesis(ws)``; else a one-line usage error."""
    if G is None or not (callable(getattr(G, "mapping", None)) and callable(getattr(G, "synthesis", None))):
        name = "none" if G is None else type(G).__name__
        raise UsageError(f"loss term 'path_length' needs a StyleGAN-like generator with mapping(z, text) and "
                         f"synthesis(ws) (--generator stylegan); generator {name} has none")
    return G

"""The networks as a run trains them: on the device, wrapped for several processes, compiled, averaged.

:func:`place_networks` moves G, D and the text encoder to the device (channels-last, SyncBatchNorm when
asked), wraps them in DistributedDataParallel on several processes and in ``torch.compile`` when
``train.compile`` is on, and makes the EMA copy of G. :class:`GeneratorEMA` is that copy; its decay per
step is ``train.ema``, or StyleGAN's half-life ``train.ema_kimg`` (:func:`half_life_decay`).

A trainable text encoder is wrapped through :class:`EncoderPasses`, one module whose ``forward`` runs either
of the encoder's passes: DistributedDataParallel synchronises gradients of what goes through ``forward``,
so the word pass (:meth:`~t2i.interfaces.TextEncoder.forward_words`) must be reached that way too, not on
the bare encoder (its gradients would then stay per-process and the ranks' encoders drift apart).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import TrainConfig
from ..interfaces import Discriminator, Generator, TextEncoder, WordFeatures
from . import distributed

__all__ = ["Networks", "GeneratorEMA", "EncoderPasses", "half_life_decay", "ema_decay", "place_networks"]


def half_life_decay(batch: int, ema_kimg: float, rampup: float = 0.0, images: int = 0) -> float:
    """StyleGAN's EMA decay for one update after ``batch`` images: the average forgets half of its weight
    over ``ema_kimg`` thousand images, ``0.5 ** (batch / (ema_kimg * 1000))`` (StyleGAN2: ``ema_kimg = 10``
    at batch 32, 0.99778). With StyleGAN2-ADA's ``rampup`` (e.g. 0.05), the half-life is at most ``rampup``
    times the ``images`` seen so far, so the early average follows G closely (0 images: decay 0, a copy)."""
    half_life = ema_kimg * 1000
    if rampup > 0:
        half_life = min(half_life, images * rampup)
    return 0.5 ** (batch / max(half_life, 1e-8))


def ema_decay(t: TrainConfig) -> float | Callable[[int], float] | None:
    """The decay :class:`GeneratorEMA` applies: ``t.ema``; or from ``t.ema_kimg`` per global batch (a function
    of the number of updates so far when ``t.ema_rampup`` is on); ``None`` when the run keeps no EMA."""
    if t.ema_kimg > 0:
        if t.ema_rampup > 0:
            return lambda updates: half_life_decay(t.batch_size, t.ema_kimg, t.ema_rampup, updates * t.batch_size)
        return half_life_decay(t.batch_size, t.ema_kimg)
    return t.ema if t.ema > 0 else None


class GeneratorEMA:
    """An exponential moving average of G's parameters; buffers (BN running statistics, counters) are
    copied, not averaged. ``module`` is the averaged generator; :meth:`state_dict` is the count of
    averages (the weights are saved as the ``generator_ema`` network).

    ``decay``: a number, or a function of the number of updates so far (a ramp); the decay depends on nothing
    else, so a resumed run, which restores the count, averages exactly as an uninterrupted one."""

    def __init__(self, generator: nn.Module, decay: float | Callable[[int], float]):
        self.decay = decay
        average = get_ema_multi_avg_fn(decay) if not callable(decay) else self._ramped
        self.averaged = AveragedModel(generator, multi_avg_fn=average, use_buffers=False)
        self.module: nn.Module = self.averaged.module

    def _ramped(self, averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        assert callable(self.decay)
        get_ema_multi_avg_fn(self.decay(int(updates)))(averaged, current, updates)

    def update(self, generator: nn.Module) -> None:
        self.averaged.update_parameters(generator)
        with torch.no_grad():
            for ema_buffer, buffer in zip(self.module.buffers(), generator.buffers()):
                ema_buffer.copy_(buffer)

    @property
    def n_averaged(self) -> torch.Tensor:
        return self.averaged.n_averaged

    def state_dict(self) -> dict[str, Any]:
        return {"n_averaged": self.averaged.n_averaged.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.n_averaged.copy_(state["n_averaged"])


class EncoderPasses(nn.Module):
    """A text encoder's two passes behind one ``forward``, for DistributedDataParallel to wrap: ``(tokens)``
    -> the sentence embeddings, ``(tokens, words=True)`` -> ``(sentence, WordFeatures)`` (one pass). It
    holds the encoder itself, so the parameters are the encoder's (not copies)."""

    def __init__(self, encoder: TextEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, tokens: torch.Tensor, words: bool = False) -> torch.Tensor | tuple[torch.Tensor, WordFeatures]:
        return self.encoder.forward_words(tokens) if words else self.encoder(tokens)


@dataclass
class Networks:
    """``G``, ``D``, ``encoder``: the plain modules (saved, sampled, handed to terms). ``G_train``,
    ``D_train``, ``encoder_train``: the same as called in training (DDP / compiled). ``D_frozen``: D as
    called in the G step; ``encoder_train`` is an :class:`EncoderPasses` (``words=True``: the word pass) for a
    trainable encoder, the plain frozen one otherwise. ``G_params`` / ``D_params``: what each optimiser updates
    (a trainable text encoder learns with D)."""

    G: Generator
    D: Discriminator
    encoder: TextEncoder
    G_train: nn.Module
    D_train: nn.Module
    D_frozen: nn.Module
    encoder_train: nn.Module
    ema: GeneratorEMA | None
    G_params: list[nn.Parameter]
    D_params: list[nn.Parameter]

    def sampling_generator(self) -> nn.Module:
        """The network samples and metrics come from: the EMA of G once it has averaged, else G."""
        ema = self.ema
        return ema.module if ema is not None and int(ema.n_averaged) > 0 else self.G


def place_networks(G: Generator, D: Discriminator, encoder: TextEncoder, t: TrainConfig, device: torch.device,
                   world_size: int) -> Networks:
    """Move the networks to ``device`` and wrap them for training as ``t`` asks."""
    G, D, encoder = G.to(device), D.to(device), encoder.to(device)
    if t.channels_last:
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
    if t.sync_bn and world_size > 1:
        distributed.check_sync_bn(device, world_size)
        distributed.convert_sync_batchnorm(G)
        distributed.convert_sync_batchnorm(D)
    G_params = [p for p in G.parameters() if p.requires_grad]
    D_params = [p for p in D.parameters() if p.requires_grad]
    if encoder.trainable:
        D_params += [p for p in encoder.parameters() if p.requires_grad]

    def ddp(module: nn.Module) -> nn.Module:
        if world_size == 1:
            return module
        return distributed.wrap(module, device, find_unused_parameters=bool(getattr(module, "progressive", False)))

    G_ddp, D_ddp = ddp(G), ddp(D)  # before the EMA copies G: rank 0's weights
    # a trainable encoder's gradients are averaged like D's, for both of its passes
    encoder_train = ddp(EncoderPasses(encoder)) if encoder.trainable else encoder
    decay = ema_decay(t)
    ema = GeneratorEMA(G, decay) if decay is not None else None
    G_train = torch.compile(G_ddp) if t.compile else G_ddp
    D_train = torch.compile(D_ddp) if t.compile else D_ddp
    # D in the G step. D is frozen there (requires_grad off) and must not take part in DDP's gradient
    # reduction: through the DDP wrapper, its reducer would wait for gradients that never come (or, with
    # find_unused_parameters, all-reduce nothing every step). So the G step calls the plain module: G's
    # gradient flows through D's (identical) weights as usual and only G's wrapper reduces. D's buffers
    # stay consistent: spectral norm's power iteration depends on the weights only, which are equal on
    # every rank, and rank 0's buffers are broadcast again at D's next forward through the wrapper.
    if world_size > 1:
        D_frozen = torch.compile(D) if t.compile else D
    else:
        D_frozen = D_train
    return Networks(G, D, encoder, G_train, D_train, D_frozen, encoder_train, ema, G_params, D_params)

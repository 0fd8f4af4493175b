"""The networks as a run trains them: on the device, wrapped for several processes, compiled, averaged.

:func:`place_networks` moves G, D and the text encoder to the device (channels-last, SyncBatchNorm when
asked), wraps them in DistributedDataParallel on several processes and in ``torch.compile`` when
``train.compile`` is on, and makes the EMA copy of G. :class:`GeneratorEMA` is that copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import TrainConfig
from ..interfaces import Discriminator, Generator, TextEncoder
from . import distributed

__all__ = ["Networks", "GeneratorEMA", "place_networks"]


class GeneratorEMA:
    """An exponential moving average of G's parameters; buffers (BN running statistics, counters) are
    copied, not averaged. ``module`` is the averaged generator; :meth:`state_dict` is the count of
    averages (the weights are saved as the ``generator_ema`` network)."""

    def __init__(self, generator: nn.Module, decay: float):
        self.averaged = AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
        self.module: nn.Module = self.averaged.module

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


@dataclass
class Networks:
    """``G``, ``D``, ``encoder``: the plain modules (saved, sampled, handed to terms). ``G_train``,
    ``D_train``, ``encoder_train``: the same as called in training (DDP / compiled). ``D_frozen``: D as
    called in the G step. ``G_params`` / ``D_params``: what each optimiser updates (a trainable text
    encoder learns with D)."""

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
    encoder_train = ddp(encoder) if encoder.trainable else encoder  # its gradients are averaged like D's
    ema = GeneratorEMA(G, t.ema) if t.ema > 0 else None
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

"""One discriminator update and one generator update: ``adversarial loss + sum(weight * term)``.

What the terms need (mismatched captions, D on real images during the G step, gradients with respect to
the real images or the text embeddings, the caption strings) is declared by the terms (:data:`t2i.interfaces.NEEDS`) and
computed here once, so a new regulariser is a registered term, not a branch in this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..augment import DiffAugment
from ..interfaces import AdversarialLoss, LossTerm, StepOutputs
from .optim import Precision

__all__ = ["GANStep", "weighted_losses"]

Losses = dict[str, torch.Tensor]


def weighted_losses(
    adversarial: AdversarialLoss, terms: list[tuple[str, float, LossTerm]], out: StepOutputs, side: str
) -> tuple[Losses, torch.Tensor]:
    """``{"adv": ..., <term>: ...}`` for one side (``"d"`` or ``"g"``) and their total, ``adv + sum(w * term)``.
    A term that returns ``None`` for this side is left out."""
    loss_of = "d_loss" if side == "d" else "g_loss"
    losses = {"adv": getattr(adversarial, loss_of)(out)}
    total = losses["adv"]
    for name, weight, term in terms:
        value = getattr(term, loss_of)(out)
        if value is not None:
            losses[name] = value
            total = total + weight * value
    return losses, total


@dataclass
class GANStep:
    """The two updates of a training step, given the networks as they are called while training.

    ``G_train`` / ``D_train``: the networks as trained (DistributedDataParallel and ``torch.compile``
    wrappers when configured); ``D_frozen``: D as called in the G step, where it takes no part in gradient
    reduction (see :func:`t2i.engine.networks.place_networks`); ``G`` / ``D``: the plain modules, handed to
    the terms. ``noise(n)`` draws the generator's input.
    """

    G: nn.Module
    D: nn.Module
    G_train: nn.Module
    D_train: nn.Module
    D_frozen: nn.Module
    adversarial: AdversarialLoss
    terms: list[tuple[str, float, LossTerm]]
    needs: frozenset[str]
    augment: DiffAugment
    precision: Precision
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    G_params: list[nn.Parameter]
    D_params: list[nn.Parameter]
    noise: Callable[[int], torch.Tensor]
    grad_clip: float = 0.0

    def discriminator(self, real: torch.Tensor, text: torch.Tensor, step: int, captions: list[str] | None) -> Losses:
        """One D update on ``real`` images with their caption embeddings ``text``; the ``d/...`` losses."""
        mismatched = text.roll(1, 0) if "mismatched" in self.needs else None
        z = self.noise(real.shape[0])
        with torch.no_grad(), self.precision.autocast():
            fake = self.G_train(z, text.detach())
        if "real_grad" in self.needs:
            real = real.detach().requires_grad_(True)
        if "text_grad" in self.needs and not text.requires_grad:
            # a frozen encoder's embeddings become a leaf that requires grad; a trainable encoder's already do.
            # Either way D's real pass below is the one the terms differentiate: no second pass
            text = text.detach().requires_grad_(True)
        # DiffAugment (identity when off): D sees augmented images; terms get the originals, so R1's gradient
        # with respect to the real images flows back through the augmentation
        real_seen, fake_seen = self.augment(real, fake)
        with self.precision.autocast():
            real_out = self.D_train(real_seen, text, mismatched)
            fake_out = self.D_train(fake_seen, text)
        self.augment.observe(real_out.logits)
        out = StepOutputs(real=real_out, fake=fake_out, real_images=real, fake_images=fake, text=text,
                          adversarial=self.adversarial, discriminator=self.D, generator=self.G, step=step,
                          captions=captions)
        losses, total = weighted_losses(self.adversarial, self.terms, out, "d")
        self.precision.step(total, self.opt_d, self.D_params, self.grad_clip)
        losses["total"] = total
        losses["real_logit"] = real_out.logits.float().mean()
        losses["fake_logit"] = fake_out.logits.float().mean()
        return {f"d/{k}": v.detach() for k, v in losses.items()}

    def generator(self, real: torch.Tensor, text: torch.Tensor, step: int, captions: list[str] | None) -> Losses:
        """One G update against the frozen D, on the captions of the last D batch; the ``g/...`` losses."""
        text = text.detach()
        z = self.noise(real.shape[0])
        for p in self.D_params:
            p.requires_grad_(False)
        try:
            with self.precision.autocast():
                fake = self.G_train(z, text)
                fake_seen, real_seen = self.augment(fake, real)  # the same augmentations as in the D step
                fake_out = self.D_frozen(fake_seen, text)
                real_out = None
                if "real_in_g_step" in self.needs:
                    with torch.no_grad():
                        real_out = self.D_frozen(real_seen, text)
            out = StepOutputs(real=real_out, fake=fake_out, real_images=real, fake_images=fake, text=text,
                              adversarial=self.adversarial, discriminator=self.D, generator=self.G, step=step,
                              captions=captions)
            losses, total = weighted_losses(self.adversarial, self.terms, out, "g")
            self.precision.step(total, self.opt_g, self.G_params, self.grad_clip)
        finally:
            for p in self.D_params:
                p.requires_grad_(True)
        losses["total"] = total
        return {f"g/{k}": v.detach() for k, v in losses.items()}

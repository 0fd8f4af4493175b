"""The core's adversarial losses and loss terms.

An adversarial loss spells the GAN objective as three functions of logits (``d_real``, ``d_fake``,
``g_fake``); terms reuse them, so the matching-aware term works with BCE and hinge alike. The total
discriminator loss is ``adversarial.d_loss + sum(weight_i * term_i.d_loss)``, and the same for G.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import UsageError
from .interfaces import AdversarialLoss, LossTerm, StepOutputs

__all__ = ["BCEConfig", "BCELoss", "HingeLoss", "MatchingAwareTerm", "ConditioningAugmentationKL"]


@dataclass
class BCEConfig:
    label_smoothing: float = field(
        default=0.0,
        metadata={"help": "one-sided label smoothing: D's target for real images is 1 - label_smoothing (e.g. 0.1)"},
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


class BCELoss(AdversarialLoss):
    """Binary cross-entropy on logits (the original GAN loss; numerically safe under mixed precision).

    G uses the non-saturating form: maximise log D(G(z)).
    """

    def __init__(self, cfg: BCEConfig | None = None):
        super().__init__()
        self.real_target = 1.0 - (cfg or BCEConfig()).label_smoothing

    def d_real(self, logits: Tensor) -> Tensor:
        logits = logits.float()
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, self.real_target))

    def d_fake(self, logits: Tensor) -> Tensor:
        return F.softplus(logits.float()).mean()

    def g_fake(self, logits: Tensor) -> Tensor:
        return F.softplus(-logits.float()).mean()


class HingeLoss(AdversarialLoss):
    """Hinge loss (Lim & Ye 2017; SAGAN, BigGAN, DF-GAN): D minimises relu(1 - real) + relu(1 + fake), G -fake."""

    def d_real(self, logits: Tensor) -> Tensor:
        return F.relu(1.0 - logits.float()).mean()

    def d_fake(self, logits: Tensor) -> Tensor:
        return F.relu(1.0 + logits.float()).mean()

    def g_fake(self, logits: Tensor) -> Tensor:
        return -logits.float().mean()


class MatchingAwareTerm(LossTerm):
    """Real images scored against mismatched captions count as fakes for D (GAN-INT-CLS, DF-GAN).

    The mismatched caption of image i is the caption of image i-1 in the batch (the batch rolled by one),
    so no extra data is loaded. Uses the run's adversarial loss: with hinge, relu(1 + D(real, wrong text)).
    """

    needs = frozenset({"mismatched"})

    def d_loss(self, out: StepOutputs) -> Tensor:
        assert out.real is not None and out.real.mismatched_logits is not None
        return out.adversarial.d_fake(out.real.mismatched_logits)


class ConditioningAugmentationKL(LossTerm):
    """G term: KL(N(mu, sigma^2) || N(0, I)) of conditioning augmentation (StackGAN, Zhang et al. 2017).

    Reads ``(mu, logvar)``, each ``(B, ca_dim)``, from the generator's ``ca_stats``; the engine builds the
    G step's outputs after G's forward pass, so they belong to the current fake batch. The KL of each
    sample (summed over the ca_dim dimensions) is averaged over the batch. StackGAN's released code
    averages over the dimensions too, so its weight 2.0 corresponds to ``2.0 / ca_dim`` here.
    """

    def g_loss(self, out: StepOutputs) -> Tensor:
        stats = getattr(out.generator, "ca_stats", None)
        if stats is None:
            raise UsageError(
                "loss term 'ca_kl' needs a generator with conditioning augmentation (e.g. -G ca_dim=128)"
            )
        mu, logvar = stats[0].float(), stats[1].float()
        return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1).mean()

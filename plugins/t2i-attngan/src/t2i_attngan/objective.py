"""AttnGAN's adversarial objective, composed from registered parts.

The authors' ``discriminator_loss`` (``code/miscc/losses.py``), per stage, with BCE on D's probabilities::

    (uncond_real + cond_real) / 2 + (uncond_fake + cond_fake + cond_wrong) / 3

and their ``generator_loss`` per stage ``cond_fake + uncond_fake`` (the non-saturating BCE), plus, on the last
stage, ``LAMBDA * (words_loss + sent_loss)`` (DAMSM), plus the CA's KL. In t2i::

    --loss attngan --term unconditional=1 --term matching_aware=0.3333333333333333 \
    --term damsm=5 --term ca_kl=0.0033333333333333335

- ``attngan`` (:class:`AttnGANLoss`) wraps a registered adversarial loss (``base``, default ``bce``) and weights
  D's conditional terms: ``real_weight * d_real(cond real) + fake_weight * d_fake(cond fake)`` (1/2 and 1/3);
  G's loss is the base's ``g_fake(cond fake)``;
- ``unconditional`` (:class:`UnconditionalTerm`) is the same on :attr:`DiscOutput.uncond_logits`, with the same
  default weights for D and weight 1 for G; its term weight (1) multiplies both;
- the core's ``matching_aware`` term at 1/3 is ``cond_wrong``;
- ``damsm`` (:mod:`t2i_attngan.damsm`) at LAMBDA (5 birds, 50 COCO), on the last stage only;
- the core's ``ca_kl`` at ``1 / (stages * condition_dim)``: the authors' KL is a mean over the code's dimensions
  (the core's a sum), and t2i's engine averages every loss over the stages where the authors sum them, which
  scales the whole objective by ``1 / stages`` except a term it computes at every stage with the same value,
  as ``ca_kl``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from t2i.errors import UsageError
from t2i.interfaces import LossTerm, StepOutputs
from t2i.losses import WeightedLoss

__all__ = ["AttnGANLossConfig", "AttnGANLoss", "UnconditionalConfig", "UnconditionalTerm"]


def _check_weights(cfg: object) -> None:
    for name in ("real_weight", "fake_weight"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(cfg, name)}")


@dataclass
class AttnGANLossConfig:
    base: str = field(default="bce", metadata={
        "help": "the registered adversarial loss whose real/fake functions are used (AttnGAN: bce)"})
    real_weight: float = field(default=0.5, metadata={
        "help": "weight of D's loss on real images with their captions (AttnGAN: 1/2, shared with the unconditional logit)"})
    fake_weight: float = field(default=1 / 3, metadata={
        "help": "weight of D's loss on generated images (AttnGAN: 1/3, shared with the unconditional and mismatched terms)"})

    def __post_init__(self) -> None:
        if not isinstance(self.base, str) or not self.base:
            raise ValueError(f"base must name a registered adversarial loss, got {self.base!r}")
        if self.base == "attngan":
            raise ValueError("base: 'attngan' cannot wrap itself; name an adversarial loss such as bce")
        _check_weights(self)


class AttnGANLoss(WeightedLoss):
    """``base``'s loss with D's conditional terms weighted: D ``real_weight * d_real(real) + fake_weight *
    d_fake(fake)``, G ``g_fake(fake)``. ``d_real`` / ``d_fake`` / ``g_fake`` are the base's, unweighted, so the
    terms that reuse them (``matching_aware``, ``unconditional``) weight themselves."""

    def __init__(self, cfg: AttnGANLossConfig | None = None):
        cfg = cfg or AttnGANLossConfig()
        super().__init__(cfg.base, cfg.real_weight, cfg.fake_weight, name="attngan")
        self.cfg = cfg


@dataclass
class UnconditionalConfig:
    real_weight: float = field(default=0.5, metadata={
        "help": "weight of D's loss on the real images' unconditional logits (AttnGAN: 1/2)"})
    fake_weight: float = field(default=1 / 3, metadata={
        "help": "weight of D's loss on the generated images' unconditional logits (AttnGAN: 1/3); G's is 1"})

    def __post_init__(self) -> None:
        _check_weights(self)


class UnconditionalTerm(LossTerm):
    """D and G term on the caption-free logits (:attr:`DiscOutput.uncond_logits`) of a joint D (AttnGAN's
    ``UNCOND_DNET``), with the run's adversarial functions: D ``real_weight * d_real(real) + fake_weight *
    d_fake(fake)``, G ``g_fake(fake)``."""

    def __init__(self, cfg: UnconditionalConfig | None = None):
        super().__init__()
        self.cfg = cfg or UnconditionalConfig()

    @staticmethod
    def _logits(out: StepOutputs) -> tuple[Tensor | None, Tensor]:
        fake = out.fake.uncond_logits
        if fake is None:
            raise UsageError("loss term 'unconditional' needs a discriminator with unconditional logits "
                             "(DiscOutput.uncond_logits), such as attngan's")
        return (None if out.real is None else out.real.uncond_logits), fake

    def d_loss(self, out: StepOutputs) -> Tensor:
        real, fake = self._logits(out)
        assert real is not None
        adv = out.adversarial
        return self.cfg.real_weight * adv.d_real(real) + self.cfg.fake_weight * adv.d_fake(fake)

    def g_loss(self, out: StepOutputs) -> Tensor:
        return out.adversarial.g_fake(self._logits(out)[1])

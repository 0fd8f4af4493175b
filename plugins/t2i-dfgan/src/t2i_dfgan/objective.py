"""DF-GAN's discriminator objective, composed from registered parts.

DF-GAN trains D on ``hinge_real(real, text) + ½ (hinge_fake(fake, text) + hinge_fake(real, wrong text)) +
MA-GP``, and G on ``-D(fake, text)``. In t2i that is::

    --loss dfgan --term matching_aware=0.5 --term ma_gp=1

``dfgan`` (:class:`DFGANLoss`) is another registered adversarial loss (``base``, default ``hinge``) whose
fake term, on generated images, is weighted ``fake_weight`` (½); the core's ``matching_aware`` term, at
weight ½, adds the base's fake loss on real images scored against the batch's captions rolled by one; the
core's ``ma_gp`` term (k = 2, p = 6, on the real images and their sentence embeddings, from D's one real
pass) is DF-GAN's MA-GP. G's loss is the base's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from t2i.losses import WeightedLoss

__all__ = ["DFGANLossConfig", "DFGANLoss"]


@dataclass
class DFGANLossConfig:
    base: str = field(default="hinge", metadata={
        "help": "the registered adversarial loss whose real/fake functions are used (DF-GAN: hinge)"})
    fake_weight: float = field(default=0.5, metadata={
        "help": "weight of D's loss on generated images (DF-GAN: 0.5; add --term matching_aware=0.5 for the "
                "other half of (fake + mismatched) / 2)"})

    def __post_init__(self) -> None:
        if not isinstance(self.base, str) or not self.base:
            raise ValueError(f"base must name a registered adversarial loss, got {self.base!r}")
        if self.base == "dfgan":
            raise ValueError("base: 'dfgan' cannot wrap itself; name an adversarial loss such as hinge")
        if self.fake_weight <= 0:
            raise ValueError(f"fake_weight must be positive, got {self.fake_weight}")


class DFGANLoss(WeightedLoss):
    """``base``'s loss with D's term on generated images weighted ``fake_weight``:
    D ``d_real(real) + fake_weight * d_fake(fake)``, G ``g_fake(fake)``.

    ``d_real`` / ``d_fake`` / ``g_fake`` are the base's, so terms that reuse them (``matching_aware``) score
    with the base's functions, unweighted; their own weight says how much they count.
    """

    def __init__(self, cfg: DFGANLossConfig | None = None):
        cfg = cfg or DFGANLossConfig()
        super().__init__(cfg.base, 1.0, cfg.fake_weight, name="dfgan")
        self.cfg = cfg

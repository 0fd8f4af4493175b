"""The core's adversarial losses and loss terms.

An adversarial loss spells the GAN objective as three functions of logits (``d_real``, ``d_fake``,
``g_fake``); terms reuse them, so the matching-aware term works with BCE and hinge alike. The total
discriminator loss is ``adversarial.d_loss + sum(weight_i * term_i.d_loss)``, and the same for G.

Gradient penalties take gradients of D's logits with respect to its inputs and compute their norms in
float32, so they are safe under bf16 autocast. R1 and MA-GP differentiate the logits of D's real pass of
the step (``needs`` ``real_grad``, and ``text_grad`` for MA-GP); they are called outside the engine's
autocast context, so a penalty that re-runs D (``wgan_gp``) runs it in float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import UsageError
from .interfaces import AdversarialLoss, LossTerm, StepOutputs

__all__ = [
    "WeightedLoss",
    "BCEConfig",
    "BCELoss",
    "HingeLoss",
    "LSGANConfig",
    "LSGANLoss",
    "MatchingAwareTerm",
    "ConditioningAugmentationKL",
    "FeatureMatchingConfig",
    "FeatureMatchingTerm",
    "R1Config",
    "R1Penalty",
    "MAGPConfig",
    "MatchingAwareGradientPenalty",
    "WGANGradientPenalty",
]


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


@dataclass
class LSGANConfig:
    a: float = field(default=0.0, metadata={"help": "D's target for fake images (Mao et al.'s a)"})
    b: float = field(default=1.0, metadata={"help": "D's target for real images (b)"})
    c: float = field(default=1.0, metadata={"help": "G's target for its images (c)"})

    def __post_init__(self) -> None:
        if not self.b > self.a:
            raise ValueError(f"the real target b must exceed the fake target a, got a={self.a}, b={self.b}")


class LSGANLoss(AdversarialLoss):
    """Least squares GAN (Mao et al. 2017): D minimises ½(D(real) - b)² + ½(D(fake) - a)², G ½(D(fake) - c)².

    The default a, b, c = 0, 1, 1 is the paper's common choice; a, b, c = -1, 1, 1 is the variant it
    derives from the Pearson chi² divergence (b - c = 1, b - a = 2).
    """

    def __init__(self, cfg: LSGANConfig | None = None):
        super().__init__()
        cfg = cfg or LSGANConfig()
        self.a, self.b, self.c = cfg.a, cfg.b, cfg.c

    def d_real(self, logits: Tensor) -> Tensor:
        return 0.5 * (logits.float() - self.b).pow(2).mean()

    def d_fake(self, logits: Tensor) -> Tensor:
        return 0.5 * (logits.float() - self.a).pow(2).mean()

    def g_fake(self, logits: Tensor) -> Tensor:
        return 0.5 * (logits.float() - self.c).pow(2).mean()


class WeightedLoss(AdversarialLoss):
    """Another registered adversarial loss (``base``) with D's two terms weighted: D ``real_weight * d_real(real) +
    fake_weight * d_fake(fake)``, G ``g_fake(fake)``. The base for papers whose objective weights the parts of the
    same functions (DF-GAN's ``(fake + mismatched) / 2``, AttnGAN's ``/ 2`` and ``/ 3``): ``d_real`` / ``d_fake`` /
    ``g_fake`` stay the base's, unweighted, so the terms that reuse them (``matching_aware``) weight themselves."""

    def __init__(self, base: str, real_weight: float, fake_weight: float, *, name: str):
        super().__init__()
        from .plugins import registry  # the registry holds this module's classes too

        if not isinstance(base, str) or not base or base == name:
            raise ValueError(f"base must name another registered adversarial loss such as hinge, got {base!r}")
        for what, weight in (("real_weight", real_weight), ("fake_weight", fake_weight)):
            if weight <= 0:
                raise ValueError(f"{what} must be positive, got {weight}")
        try:
            made = registry("losses").create(base)
        except UsageError as exc:  # an unknown name says what was meant
            raise ValueError(f"base: {exc}") from None
        if not isinstance(made, AdversarialLoss):
            raise ValueError(f"base '{base}' is not an adversarial loss (it is a {type(made).__name__})")
        self.base, self.real_weight, self.fake_weight = made, float(real_weight), float(fake_weight)
        self.needs = frozenset(made.needs)

    def on_train_step(self, step: int, images_seen: int) -> None:
        self.base.on_train_step(step, images_seen)

    def d_real(self, logits: Tensor) -> Tensor:
        return self.base.d_real(logits)

    def d_fake(self, logits: Tensor) -> Tensor:
        return self.base.d_fake(logits)

    def g_fake(self, logits: Tensor) -> Tensor:
        return self.base.g_fake(logits)

    def d_loss(self, out: StepOutputs) -> Tensor:
        assert out.real is not None
        return self.real_weight * self.d_real(out.real.logits) + self.fake_weight * self.d_fake(out.fake.logits)


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


@dataclass
class FeatureMatchingConfig:
    layers: tuple[int, ...] = field(
        default=(),
        metadata={"help": "indices into the discriminator's features, shallow to deep (negative allowed); empty = all"},
    )


class FeatureMatchingTerm(LossTerm):
    """G term: feature matching (Salimans et al. 2016), normalised per layer.

    For each chosen layer of D's features, with ``r`` and ``f`` the batch means of the real and fake
    features (every non-batch dimension flattened into one vector of ``n`` entries)::

        mean_n((r - f)²) / (mean_n(r²) + 1e-8)

    and the term is the average over the layers. It is 0 when the fake feature means equal the real
    ones and about 1 when the fake means are 0, whatever the layer's width or the scale of its
    activations (scaling a layer's features by a constant leaves it unchanged), so a weight such as 0.01
    means the same thing for any discriminator. Real features are detached: the engine computes them
    under ``no_grad`` in the G step.
    """

    needs = frozenset({"real_in_g_step", "features"})
    eps = 1e-8

    def __init__(self, cfg: FeatureMatchingConfig | None = None):
        super().__init__()
        self.layers = tuple((cfg or FeatureMatchingConfig()).layers)

    def g_loss(self, out: StepOutputs) -> Tensor:
        assert out.real is not None, "feature matching needs D's real outputs in the G step"
        real, fake = out.real.features, out.fake.features
        if not fake or len(real) != len(fake):
            raise UsageError(
                "loss term 'feature_matching' needs a discriminator that returns intermediate features "
                f"(got {len(real)} real and {len(fake)} fake feature tensors)"
            )
        layers = self.layers or tuple(range(len(fake)))
        for i in layers:
            if not -len(fake) <= i < len(fake):
                raise UsageError(
                    f"feature_matching layer {i} is out of range: the discriminator returns {len(fake)} features"
                )
        values = []
        for i in layers:
            r = real[i].detach().float().flatten(1).mean(0)
            f = fake[i].float().flatten(1).mean(0)
            values.append((r - f).pow(2).mean() / (r.pow(2).mean() + self.eps))
        return torch.stack(values).mean()


def _input_grad_norms(logits: Tensor, inputs: tuple[Tensor, ...]) -> Tensor:
    """Per-sample L2 norm, in float32, of the gradient of ``logits.sum()`` with respect to all ``inputs``
    together (``create_graph``, so the penalty trains D)."""
    grads = torch.autograd.grad(logits.float().sum(), inputs, create_graph=True)
    squared = sum(g.float().flatten(1).pow(2).sum(dim=1) for g in grads)
    return squared.sqrt()


def _real_images_with_grad(out: StepOutputs, name: str) -> Tensor:
    if not out.real_images.requires_grad or out.real is None:
        raise UsageError(f"loss term '{name}' needs real images that require grad (needs = {{'real_grad'}})")
    return out.real_images


@dataclass
class R1Config:
    every: int = field(default=1, metadata={
        "help": "lazy regularisation (StyleGAN2): apply R1 only on steps where step % every == 0, times every "
                "(StyleGAN2: 16); 1 = every step"})

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"every must be a positive integer, got {self.every!r}")


class R1Penalty(LossTerm):
    """D term: R1 (Mescheder et al. 2018), ``E ||grad_x D(x_real, text)||²`` over the real batch.

    The gradient is taken with respect to the real images only (the caption held fixed). R1 is usually
    written ``gamma/2 * E||grad||²``; here the term's weight multiplies ``E||grad||²``, so gamma = 2 * weight
    (StyleGAN2's gamma 10 is weight 5).

    Lazy R1 (``every = k``, StyleGAN2's ``D_reg_interval`` 16): the penalty is computed only at training steps
    ``step % k == 0`` (:meth:`active`; every D update of such a step when ``d_steps > 1``) and multiplied by
    ``k``, so its average weight is unchanged; on the other steps ``d_loss`` is ``None`` and the engine does
    not make the real images require grad. Unlike StyleGAN2 it is added to that step's D loss (no separate
    optimiser step), and the optimiser's lr and betas are not rescaled by ``k / (k + 1)``.
    """

    needs = frozenset({"real_grad"})

    def __init__(self, cfg: R1Config | None = None):
        super().__init__()
        self.every = (cfg or R1Config()).every

    def active(self, step: int) -> bool:
        return step % self.every == 0

    def d_loss(self, out: StepOutputs) -> Tensor | None:
        if not self.active(out.step):
            return None
        real = _real_images_with_grad(out, "r1")
        penalty = _input_grad_norms(out.real.logits, (real,)).pow(2).mean()
        return penalty * self.every if self.every != 1 else penalty


@dataclass
class MAGPConfig:
    k: float = field(default=2.0, metadata={"help": "scale of the penalty (DF-GAN: 2, tuned for DF-GAN's D)"})
    p: float = field(default=6.0, metadata={"help": "power of the gradient norm (DF-GAN: 6; the penalty grows as norm^p)"})

    def __post_init__(self) -> None:
        if self.k <= 0 or self.p <= 0:
            raise ValueError(f"k and p must be positive, got k={self.k}, p={self.p}")


class MatchingAwareGradientPenalty(LossTerm):
    """D term: DF-GAN's matching-aware zero-centred gradient penalty, ``k * E[||grad_(x, e) D(x, e)||^p]``.

    ``x`` are the real images and ``e`` their own (matched) caption embeddings; the gradient is taken with
    respect to both, concatenated per sample, as in DF-GAN (k = 2, p = 6). The term's weight multiplies the
    whole (DF-GAN: weight 1).

    One definition, whatever the text encoder: the logits are those of D's real pass of the step, the one
    the adversarial loss scores (with DiffAugment, on the augmented images; the gradient is with respect to
    the un-augmented ones, through the augmentation, as for R1). DF-GAN computes it on the same real batch
    D scored, and so D runs once on it. The engine provides the gradient path (``needs = {"real_grad",
    "text_grad"}``): the real images, and the text embeddings of a frozen encoder, require grad before that
    pass (a trainable encoder's embeddings already do).

    Scale: k = 2 and p = 6 were tuned for DF-GAN's discriminator, whose input-gradient norms stay near 1,
    where ``norm^6`` is mild. With a discriminator whose gradient norms are larger (a DCGAN or SAGAN D
    without DF-GAN's design: 3 to 30 at initialisation) the penalty is ``2 * 3^6`` to ``2 * 30^6`` (1e3 to
    1e9) and the run explodes. Hence ``tuned_for = {"dfgan"}``: with another discriminator the run warns
    before step 1; lower the weight, k or p (p = 2 is R1-like) for those networks.
    """

    needs = frozenset({"real_grad", "text_grad"})
    tuned_for = frozenset({"dfgan"})

    def __init__(self, cfg: MAGPConfig | None = None):
        super().__init__()
        cfg = cfg or MAGPConfig()
        self.k, self.p = cfg.k, cfg.p

    def d_loss(self, out: StepOutputs) -> Tensor:
        real = _real_images_with_grad(out, "ma_gp")
        if not out.text.requires_grad:
            raise UsageError("loss term 'ma_gp' needs text embeddings that require grad in D's real pass "
                             "(needs = {'text_grad'})")
        return self.k * _input_grad_norms(out.real.logits, (real, out.text)).pow(self.p).mean()


class WGANGradientPenalty(LossTerm):
    """D term: WGAN-GP (Gulrajani et al. 2017), ``E[(||grad_x D(x_hat, text)|| - 1)²]``.

    ``x_hat = u * real + (1 - u) * fake`` with ``u ~ U(0, 1)`` per sample, drawn with ``torch.rand`` (the
    global RNG, which the engine checkpoints); D is re-run on ``x_hat`` with the batch's captions held
    fixed. The term's weight is WGAN-GP's lambda (the paper: 10).
    """

    def d_loss(self, out: StepOutputs) -> Tensor:
        if out.discriminator is None:
            raise UsageError("loss term 'wgan_gp' needs the discriminator in the step's outputs")
        real, fake = out.real_images.detach().float(), out.fake_images.detach().float()
        u = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device)
        x_hat = (u * real + (1.0 - u) * fake).requires_grad_(True)
        logits = out.discriminator(x_hat, out.text).logits
        return (_input_grad_norms(logits, (x_hat,)) - 1.0).pow(2).mean()

"""One discriminator update and one generator update: ``adversarial loss + sum(weight * term)``.

What the terms need (mismatched captions, D on real images during the G step, gradients with respect to
the real images or the text embeddings, the caption strings, the word features) is declared by the terms
(:data:`t2i.interfaces.NEEDS`) and computed here once, so a new regulariser is a registered term, not a
branch in this file.

Gradient accumulation (``train.micro_batch``): each update splits the process's batch, and the noise drawn
for all of it, into micro-batches; each micro-batch's loss is scaled by its share of the batch and
back-propagated, and the optimiser steps once. Losses are means over the batch, so the accumulated
gradient is the whole batch's, up to float rounding, with one exception: terms that compare the samples
of a batch with each other, above all the matching-aware term whose mismatched captions are the batch
rolled by one, compare within each micro-batch (as they compare within each process's share under DDP).
DiffAugment also draws its random transformations per micro-batch. The feed, the random streams and the
checkpoint do not depend on the split. Under DDP, the micro-batches but the last accumulate gradients
locally (``no_sync``) and the last one all-reduces their sum. A trainable text encoder is run once for the
batch (by the trainer); its embeddings' gradients are collected over the micro-batches and sent through
it in one backward pass at the end.

Several scales (:mod:`t2i.engine.scales`): D judges one image per scale of its own, from G's outputs or
downsampled; the adversarial loss and every term are computed per scale and combined as the weighted mean
``sum_k w_k L_k / sum_k w_k`` with D's ``scale_weights``, so ``d/adv``, ``d/total``, ... read on the scale
of a single-scale run (the health checks' thresholds apply) and each scale is logged too (``d/adv@64``).
``d/real_logit`` / ``d/fake_logit`` are the final scale's. A term whose class sets ``per_scale = False``
(one that does not look at the images) is computed once, at the final scale. DiffAugment augments each
scale's real and fake images alike, with draws of their own per scale.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.utils.parametrizations import _SpectralNorm
from torch.nn.utils.spectral_norm import SpectralNorm as SpectralNormHook

from ..augment import DiffAugment
from ..interfaces import AdversarialLoss, DiscOutput, LossTerm, StepOutputs, WordFeatures
from .distributed import gradient_sync
from .optim import Precision
from .scales import ScalePairing

__all__ = ["GANStep", "weighted_losses", "micro_batches"]

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


def micro_batches(n: int, micro_batch: int) -> list[slice]:
    """The slices of a batch of ``n`` that are its micro-batches (one slice of all when ``micro_batch`` is 0)."""
    size = micro_batch or n
    return [slice(start, start + size) for start in range(0, n, size)]


@dataclass
class GANStep:
    """The two updates of a training step, given the networks as they are called while training.

    ``G_train`` / ``D_train``: the networks as trained (DistributedDataParallel and ``torch.compile``
    wrappers when configured); ``D_frozen``: D as called in the G step, where it takes no part in gradient
    reduction (see :func:`t2i.engine.networks.place_networks`); ``G`` / ``D``: the plain modules, handed to
    the terms. ``noise(n)`` draws the generator's input. ``micro_batch``: images per forward/backward pass
    (0: the whole batch at once).
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
    micro_batch: int = 0
    scales: ScalePairing = field(init=False)

    def __post_init__(self) -> None:
        self.scales = ScalePairing(self.G, self.D)
        self._normed = _spectral_norms(self.G, self.D)

    # -- the two updates ---------------------------------------------------------------------------------------
    def discriminator(self, real: torch.Tensor, text: torch.Tensor, step: int, captions: list[str] | None,
                      words: WordFeatures | None = None) -> Losses:
        """One D update on ``real`` images with their caption embeddings ``text`` (and word features); the
        ``d/...`` losses, means over the batch."""
        z = self.noise(real.shape[0])  # drawn for the whole batch, whatever the micro-batches
        # a trainable encoder's outputs: leaves that collect the micro-batches' gradients (sent on at the end)
        text_in, words_in = text, words
        if text.requires_grad:
            text = text.detach().requires_grad_(True)
        if words is not None and words.features.requires_grad:
            words = WordFeatures(words.features.detach().requires_grad_(True), words.mask)
        self.opt_d.zero_grad(set_to_none=True)
        logs = self._accumulate(real.shape[0], self.D_train, lambda part: self._d_micro(
            real[part], text[part], z[part], step, _part(captions, part), None if words is None else words[part]))
        # the encoder's one backward pass, with the gradients its embeddings collected
        sent = [(a, b.grad) for a, b in ((text_in, text), (_feat(words_in), _feat(words)))
                if a is not None and a.requires_grad and b.grad is not None]
        if sent:
            torch.autograd.backward([a for a, _ in sent], [g for _, g in sent])
        self.precision.update(self.opt_d, self.D_params, self.grad_clip)
        return {f"d/{k}": v for k, v in logs.items()}

    def generator(self, real: torch.Tensor, text: torch.Tensor, step: int, captions: list[str] | None,
                  words: WordFeatures | None = None) -> Losses:
        """One G update against the frozen D, on the captions of the last D batch; the ``g/...`` losses."""
        text = text.detach()
        words = None if words is None else words.detach()
        z = self.noise(real.shape[0])
        for p in self.D_params:
            p.requires_grad_(False)
        try:
            self.opt_g.zero_grad(set_to_none=True)
            logs = self._accumulate(real.shape[0], self.G_train, lambda part: self._g_micro(
                real[part], text[part], z[part], step, _part(captions, part), None if words is None else words[part]))
            self.precision.update(self.opt_g, self.G_params, self.grad_clip)
        finally:
            for p in self.D_params:
                p.requires_grad_(True)
        return {f"g/{k}": v for k, v in logs.items()}

    # -- one micro-batch ---------------------------------------------------------------------------------------
    def _d_micro(self, real: torch.Tensor, text: torch.Tensor, z: torch.Tensor, step: int,
                 captions: list[str] | None, words: WordFeatures | None) -> tuple[torch.Tensor, Losses]:
        needs = self.needs_at(step)  # a lazy term's off steps pay for no input gradient
        mismatched = text.roll(1, 0) if "mismatched" in needs else None
        with torch.no_grad(), self.precision.autocast():
            fake = self.G_train(z, text.detach(), **self._g_words(None if words is None else words.detach()))
        if "real_grad" in needs:
            real = real.detach().requires_grad_(True)
        if "text_grad" in needs and not text.requires_grad:
            # a frozen encoder's embeddings become a leaf that requires grad; a trainable encoder's already do.
            # Either way D's real pass below is the one the terms differentiate: no second pass
            text = text.detach().requires_grad_(True)
        # each of D's scales, downsampled from the real batch (which may require grad) and G's output(s)
        reals, fakes = self.scales.reals(real), self.scales.fakes(fake)
        # DiffAugment (identity when off): D sees augmented images; terms get the originals, so R1's gradient
        # with respect to the real images flows back through the augmentation
        seen = [self.augment(r, f) for r, f in zip(reals, fakes)]
        d_words = self._d_words(words, mismatched is not None)
        with self.precision.autocast():
            real_outs = self.scales.judge(self.D_train, [r for r, _ in seen], text, mismatched, **d_words)
            fake_outs = self.scales.judge(self.D_train, [f for _, f in seen], text, **self._d_words(words, False))
        self.augment.observe(real_outs[-1].logits)
        total, losses = self._combine("d", real_outs, fake_outs, reals, fakes, text, step, captions, words)
        losses["real_logit"] = real_outs[-1].logits.float().mean()
        losses["fake_logit"] = fake_outs[-1].logits.float().mean()
        return total, losses

    def _g_micro(self, real: torch.Tensor, text: torch.Tensor, z: torch.Tensor, step: int,
                 captions: list[str] | None, words: WordFeatures | None) -> tuple[torch.Tensor, Losses]:
        with self.precision.autocast():
            fake = self.G_train(z, text, **self._g_words(words))
            reals, fakes = self.scales.reals(real), self.scales.fakes(fake)
            seen = [self.augment(f, r) for f, r in zip(fakes, reals)]  # the same augmentations as in the D step
            d_words = self._d_words(words, False)
            fake_outs = self.scales.judge(self.D_frozen, [f for f, _ in seen], text, **d_words)
            real_outs: list[DiscOutput | None] = [None] * len(fake_outs)
            if "real_in_g_step" in self.needs:
                with torch.no_grad():
                    real_outs = self.scales.judge(self.D_frozen, [r for _, r in seen], text, **d_words)
        return self._combine("g", real_outs, fake_outs, reals, fakes, text, step, captions, words)

    # -- helpers -----------------------------------------------------------------------------------------------
    def needs_at(self, step: int) -> frozenset[str]:
        """:attr:`needs` at ``step``, less what only terms inactive at that step ask for
        (:meth:`~t2i.interfaces.LossTerm.active`: a lazy R1 between its steps needs no real images with grad)."""
        inactive = [term for _, _, term in self.terms if not term.active(step)]
        if not inactive:
            return self.needs
        active = [self.adversarial] + [term for _, _, term in self.terms if term.active(step)]
        wanted = frozenset().union(*(term.needs for term in active))
        return self.needs - (frozenset().union(*(term.needs for term in inactive)) - wanted)

    def _accumulate(self, n: int, network: nn.Module,
                    micro: Callable[[slice], tuple[torch.Tensor, Losses]]) -> Losses:
        """Run ``micro`` on each micro-batch of ``n`` and back-propagate its loss scaled by its share; the
        logged losses, averaged the same way. ``network``'s DDP gradient reduction waits for the last one."""
        parts = micro_batches(n, self.micro_batch)
        logs: Losses = {}
        for i, part in enumerate(parts):
            share = (part.stop - part.start) / n if len(parts) > 1 else 1.0
            with gradient_sync(network, sync=i == len(parts) - 1), _power_iteration(self._normed, i == 0):
                total, losses = micro(part)
                self.precision.backward(total * share if share != 1.0 else total)
            losses["total"] = total
            for k, v in losses.items():
                v = v.detach() * share if share != 1.0 else v.detach()
                logs[k] = logs[k] + v if k in logs else v
        return logs

    def _combine(self, side: str, real_outs: list, fake_outs: list[DiscOutput], reals: list[torch.Tensor],
                 fakes: list[torch.Tensor], text: torch.Tensor, step: int, captions: list[str] | None,
                 words: WordFeatures | None) -> tuple[torch.Tensor, Losses]:
        """The loss of one side over D's scales: the weighted mean of each scale's ``adv + sum(w * term)``, and
        the logged values (combined, and per scale when there are several)."""
        names, weights = self.scales.names, self.scales.weights
        per_scale = [t for t in self.terms if getattr(t[2], "per_scale", True)]
        once = [t for t in self.terms if not getattr(t[2], "per_scale", True)]
        total: Any = 0.0
        combined: Losses = {}
        for k, (real_out, fake_out) in enumerate(zip(real_outs, fake_outs)):
            out = StepOutputs(real=real_out, fake=fake_out, real_images=reals[k], fake_images=fakes[k], text=text,
                              adversarial=self.adversarial, discriminator=self.D, generator=self.G, step=step,
                              captions=captions, words=words)
            losses, scale_total = weighted_losses(self.adversarial, per_scale, out, side)
            w = weights[k] / sum(weights)  # 1.0 for a single scale: the sums below are then exact
            total = total + w * scale_total
            for name, value in losses.items():
                combined[name] = combined[name] + w * value if name in combined else w * value
                if names[k]:
                    combined[f"{name}{names[k]}"] = value
            if names[k]:
                combined[f"total{names[k]}"] = scale_total
        for name, weight, term in once:  # terms that do not look at the images: once, at the final scale
            value = getattr(term, "d_loss" if side == "d" else "g_loss")(out)
            if value is not None:
                combined[name] = value
                total = total + weight * value
        return total, combined

    def _g_words(self, words: WordFeatures | None) -> dict[str, Any]:
        return {"words": words} if getattr(self.G, "uses_words", False) else {}

    def _d_words(self, words: WordFeatures | None, mismatched: bool) -> dict[str, Any]:
        if not getattr(self.D, "uses_words", False):
            return {}
        rolled = words.roll(1) if mismatched and words is not None else None
        return {"words": words, "mismatched_words": rolled}


def _spectral_norms(*networks: nn.Module) -> list[nn.Module]:
    """The modules whose ``training`` flag runs a spectral norm's power iteration: parametrizations, and the
    layers carrying the older hook (:func:`torch.nn.utils.spectral_norm`)."""
    found = []
    for network in networks:
        for m in network.modules():
            hooks = m._forward_pre_hooks.values()
            if isinstance(m, _SpectralNorm) or any(isinstance(h, SpectralNormHook) for h in hooks):
                found.append(m)
    return found


@contextlib.contextmanager
def _power_iteration(modules: list[nn.Module], run: bool) -> Iterator[None]:
    """Spectral norm's power iteration advances on the first micro-batch of an update only (its forwards run it
    as an unsplit batch's do); the later ones use the vectors it left, so the split does not add iterations."""
    training = [m.training for m in modules]
    if not run:
        for m in modules:
            m.training = False
    try:
        yield
    finally:
        for m, was in zip(modules, training):
            m.training = was


def _part(captions: list[str] | None, part: slice) -> list[str] | None:
    return None if captions is None else captions[part]


def _feat(words: WordFeatures | None) -> torch.Tensor | None:
    return None if words is None else words.features


"""The discriminator check: a :class:`~t2i.interfaces.DiscOutput` of the right shapes, gradients to every
weight and to the image, captions and images that matter, reproducible builds and checkpoints, bf16
and ``channels_last`` input."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..engine.scales import downsample, scales_of
from ..interfaces import DiscOutput, Discriminator, WordFeatures
from ._common import (
    _DIFFERS,
    Report,
    _assert_finite,
    _assert_gradients,
    _bf16,
    _comparable,
    _config,
    _declared_resolutions,
    _max_diff,
    _perturbed,
    _randn,
    _restores_rng,
    _set_phase,
    _start,
)
from .networks import (
    _assert_bf16_backward,
    _builder,
    _check_refuses_undeclared,
    _check_reproducible,
    _final,
    _first_build,
    _phases,
    _pick_resolutions,
    _check_words,
    _where,
    _words_for,
)


@_restores_rng
def check_discriminator(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    resolutions: Sequence[int] | None = None,
    batch: int = 2,
    text_dim: int = 16,
) -> Report:
    """Check registered discriminator ``name`` (built with ``options`` over its ``test_options``).

    Every option has help; a resolution it does not declare is refused with a one-line ``ValueError``.
    At each resolution: a :class:`DiscOutput` with finite ``(B,)`` logits, a list of features (non-empty
    when ``provides_features``), ``mismatched_logits`` exactly when mismatched text is given; gradients
    reach every trainable parameter and the input image; the text and the image change the logits;
    determinism under a seed; state-dict round trip; a batch of one in eval mode; CPU bf16 autocast;
    ``channels_last`` input.
    """
    report = _start("discriminators", name)
    cfg = _config("discriminators", name, options)
    declared = _declared_resolutions("discriminators", name)
    _check_refuses_undeclared(report, "discriminators", name, cfg, declared, text_dim)
    for r in _pick_resolutions(report, declared, resolutions):
        _discriminator_at(report, name, cfg, r, batch, text_dim)
    report.raise_for_failures()
    return report


def _discriminator_at(report: Report, name: str, cfg: Any, r: int, b: int, text_dim: int) -> None:
    build = _builder("discriminators", name, cfg, r, text_dim)
    d = _first_build(report, build, "d", r, text_dim)
    if d is None:
        return

    image = torch.tanh(_randn((b, 3, r, r), 1))
    image2 = torch.tanh(_randn((b, 3, r, r), 2))
    text, text2 = _randn((b, text_dim), 3), _randn((b, text_dim), 4)
    mismatched = text.roll(1, 0)
    w_logits, w_mismatched = _randn((b,), 5), _randn((b,), 6)
    words, words2 = _words_for(d, b, text_dim, 21), _words_for(d, b, text_dim, 22)

    def run(m: nn.Module, x: Tensor, t_: Tensor, mismatched_text: Tensor | None = None,
            w: WordFeatures | None = None) -> DiscOutput:
        """``m(x, text[, mismatched_text])``, with word features (rolled for the mismatched text, as the engine
        rolls the captions) for a discriminator that uses them."""
        scales = scales_of(m)
        x_in: Any = x if len(scales) == 1 else [downsample(x, s) for s in scales]  # an image pyramid
        if words is None:
            out = m(x_in, t_, mismatched_text=mismatched_text)
        else:
            w = (words if w is None else w)[: len(x)]
            out = m(x_in, t_, mismatched_text=mismatched_text, words=w,
                    mismatched_words=None if mismatched_text is None else w.roll(1))
        return out if len(scales) == 1 else _merged(out, len(scales))

    def objective_on(x: Tensor) -> Callable[[nn.Module], Tensor]:
        def objective(m: nn.Module) -> Tensor:
            out = run(m, x, text, mismatched)
            total = (out.logits.float() * w_logits).sum() + (
                out.mismatched_logits.float() * w_mismatched
            ).sum()
            if out.uncond_logits is not None:
                total = total + (out.uncond_logits.float() * _randn((b,), 7)).sum()
            for i, f in enumerate(out.features):
                total = total + (f.float() * _randn(f.shape, 100 + i)).sum() / math.sqrt(f.numel())
            return total

        return objective

    with report.check(f"output at {r} px"):
        d.train()
        for seen in _phases(d):
            _set_phase(d, seen)
            with torch.no_grad():
                where = _where(d, seen)
                _assert_disc_output(run(d, image, text), b, d, where, mismatched=False)
                _assert_disc_output(run(d, image, text, mismatched), b, d, where, mismatched=True)
        d.eval()
        _set_phase(d, 0)
        with torch.no_grad():
            out = run(d, image, text, mismatched)
        _assert_disc_output(out, b, d, " in eval mode", mismatched=True)

    with report.check(f"gradients at {r} px"):
        x = image.clone().requires_grad_(True)
        _assert_gradients(_perturbed(d).train(), objective_on(x), _phases(d))
        assert x.grad is not None and x.grad.abs().sum() > 0, (
            "no gradient reaches the input image (gradient penalties and G's updates need it)"
        )
        _assert_finite(x.grad, "the gradient w.r.t. the input image")

    with report.check(f"text and image change the logits at {r} px"):
        m = _perturbed(d).eval()
        for seen in sorted({0, _final(m)}):
            _set_phase(m, seen)
            with torch.no_grad():
                out = run(m, image, text, mismatched)
                other_text, other_image = run(m, image, text2, w=words2).logits, run(m, image2, text).logits
            _comparable(out.logits, out.mismatched_logits, other_text, other_image)
            assert _max_diff(out.logits, other_text) > _DIFFERS, (
                f"the logits do not depend on the text embedding{_where(m, seen)} (the caption is ignored)"
            )
            assert _max_diff(out.logits, out.mismatched_logits) > _DIFFERS, (
                f"mismatched_logits equal the logits{_where(m, seen)}: mismatched_text is ignored"
            )
            assert _max_diff(out.logits, other_image) > _DIFFERS, (
                f"the logits do not depend on the image{_where(m, seen)}"
            )

    def both_logits(m: nn.Module) -> dict[str, Tensor]:
        out = run(m, image, text, mismatched)
        return {"logits": out.logits, "mismatched_logits": out.mismatched_logits}

    _check_reproducible(report, r, build, lambda m: {"logits": run(m, image, text).logits}, both_logits)

    with report.check(f"a batch of one in eval mode at {r} px"):
        m = copy.deepcopy(d).eval()
        for seen in sorted({0, _final(m)}):
            _set_phase(m, seen)
            with torch.no_grad():
                out = run(m, image[:1], text[:1], mismatched[:1])
            _assert_disc_output(out, 1, m, f" for a batch of one{_where(m, seen)}", mismatched=True)

    with report.check(f"CPU bf16 autocast at {r} px"):
        m = copy.deepcopy(d).eval()
        with torch.no_grad(), _bf16():
            out = run(m, image, text, mismatched)
        _assert_disc_output(out, b, m, " under bf16 autocast", mismatched=True)
        _assert_bf16_backward(m.train(), objective_on(image.clone().requires_grad_(True)))

    with report.check(f"channels_last at {r} px"):
        ref = copy.deepcopy(d).eval()
        cl = copy.deepcopy(d).to(memory_format=torch.channels_last).eval()
        x_cl = image.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            a_out, b_out = run(ref, image, text).logits, run(cl, x_cl, text).logits
        _comparable(a_out, b_out)
        # a layout bug (a view that assumes contiguous memory) moves outputs by O(1); fp32 convolution kernels that
        # sum in another order for the other layout differ by up to ~1e-4 in deep networks on some CPUs
        assert torch.allclose(a_out, b_out, rtol=1e-3, atol=1e-3), (
            f"a channels_last input changes the logits (max difference {_max_diff(a_out, b_out):.3g})"
        )
        objective_on(x_cl.clone().requires_grad_(True))(cl.train()).backward()

    def logits_with(m: nn.Module, w: WordFeatures) -> Tensor:
        return run(m, image, text, w=w).logits

    _check_words(report, r, copy.deepcopy(d), text_dim, b, logits_with,
                 lambda out, where: _assert_finite(out, f"logits{where}"))


def _merged(outs: Any, n: int) -> Any:
    """A multi-scale discriminator's outputs (one :class:`DiscOutput` per scale) as one, for the checks: the
    logits summed over the scales, the features of every scale; anything else is returned as it is."""
    if not isinstance(outs, (list, tuple)) or len(outs) != n or not all(isinstance(o, DiscOutput) for o in outs):
        return outs

    def total(name: str) -> Tensor | None:
        values = [getattr(o, name) for o in outs]
        return None if any(v is None for v in values) else sum(values[1:], values[0])

    return DiscOutput(logits=total("logits"), features=[f for o in outs for f in o.features],
                      mismatched_logits=total("mismatched_logits"), uncond_logits=total("uncond_logits"))


def _assert_disc_output(out: Any, b: int, d: Discriminator, where: str, mismatched: bool) -> None:
    assert isinstance(out, DiscOutput), f"returned {type(out).__name__}{where}, expected a t2i DiscOutput"
    logits = out.logits
    assert isinstance(logits, Tensor), f"logits are a {type(logits).__name__}{where}, expected a Tensor"
    assert tuple(logits.shape) == (b,), (
        f"logits shape {tuple(logits.shape)}{where}, expected ({b},): one logit per image"
    )
    assert logits.is_floating_point(), f"logits dtype {logits.dtype}{where}, expected a float dtype"
    _assert_finite(logits, f"logits{where}")
    assert isinstance(out.features, list), (
        f"features is a {type(out.features).__name__}{where}, expected a list"
    )
    if d.provides_features:
        assert out.features, (
            f"features is empty{where} but the discriminator declares provides_features = True"
        )
    for i, f in enumerate(out.features):
        assert isinstance(f, Tensor) and f.shape[:1] == (b,), f"features[{i}]{where} is not a (B, ...) tensor"
        _assert_finite(f, f"features[{i}]{where}")
    if not mismatched:
        assert out.mismatched_logits is None, (
            f"mismatched_logits is set{where} although no mismatched_text was given"
        )
        return
    m = out.mismatched_logits
    assert m is not None, f"mismatched_logits is None{where} although mismatched_text was given"
    assert isinstance(m, Tensor) and tuple(m.shape) == (b,), (
        f"mismatched_logits shape {tuple(getattr(m, 'shape', ()))}{where}, expected ({b},)"
    )
    _assert_finite(m, f"mismatched_logits{where}")

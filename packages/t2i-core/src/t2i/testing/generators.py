"""The generator check: images of the right shape and range, gradients to every weight, captions and
noise that matter, reproducible builds and checkpoints, bf16 and ``channels_last``."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..interfaces import Generator, WordFeatures, final_image
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
def check_generator(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    resolutions: Sequence[int] | None = None,
    batch: int = 2,
    text_dim: int = 16,
) -> Report:
    """Check registered generator ``name`` (built with ``options`` over its ``test_options``).

    Every option has help; a resolution it does not declare is refused with a one-line ``ValueError``.
    At each resolution: shape ``(B, 3, R, R)``, float, finite, in ``[-1, 1]``; gradients reach every
    trainable parameter; the text and the noise change the output; determinism under a seed; state-dict
    round trip; a batch of one in eval mode; CPU bf16 autocast (forward and backward); ``channels_last``.
    """
    report = _start("generators", name)
    cfg = _config("generators", name, options)
    declared = _declared_resolutions("generators", name)
    _check_refuses_undeclared(report, "generators", name, cfg, declared, text_dim)
    for r in _pick_resolutions(report, declared, resolutions):
        _generator_at(report, name, cfg, r, batch, text_dim)
    report.raise_for_failures()
    return report


def _generator_at(report: Report, name: str, cfg: Any, r: int, b: int, text_dim: int) -> None:
    build = _builder("generators", name, cfg, r, text_dim)
    g = _first_build(report, build, "g", r, text_dim, _assert_z_dim)
    if g is None:
        return

    shape = (b, 3, r, r)
    z, text = _randn((b, g.z_dim), 1), _randn((b, text_dim), 2)
    z2, text2 = _randn((b, g.z_dim), 3), _randn((b, text_dim), 4)
    weights = _randn(shape, 5)
    words, words2 = _words_for(g, b, text_dim, 21), _words_for(g, b, text_dim, 22)

    def run(m: nn.Module, z_: Tensor, t_: Tensor, w: WordFeatures | None = None) -> Tensor:
        """``m(z, text)``, with word features for a generator that uses them; its full-resolution image."""
        if words is None:
            return final_image(m(z_, t_))
        w = words if w is None else w
        return final_image(m(z_, t_, words=w[: len(z_)]))

    def objective(m: nn.Module) -> Tensor:
        """A random projection of every output (every scale of a multi-scale generator)."""
        out = m(z, text) if words is None else m(z, text, words=words)
        outs = [out] if isinstance(out, Tensor) else list(out)
        return sum(((o.float() * (weights if i == len(outs) - 1 else _randn(o.shape, 50 + i))).sum()
                    for i, o in enumerate(outs)), torch.zeros(()))

    with report.check(f"output at {r} px"):
        g.train()
        for seen in _phases(g):
            _set_phase(g, seen)
            with torch.no_grad():
                _assert_image(run(g, z, text), shape, z.dtype, _where(g, seen))
        g.eval()
        _set_phase(g, 0)
        with torch.no_grad():
            _assert_image(run(g, z, text), shape, z.dtype, " in eval mode")
            # large inputs saturate the last layer: a generator in range by luck of its init is caught here
            big = run(g.train(), z * 10, text * 10).detach().float()
        _assert_range(big[torch.isfinite(big)], " for large inputs (z and text x 10)")

    with report.check(f"gradients at {r} px"):
        _assert_gradients(_perturbed(g).train(), objective, _phases(g))

    with report.check(f"text and noise change the output at {r} px"):
        m = _perturbed(g).eval()
        for seen in sorted({0, _final(m)}):
            _set_phase(m, seen)
            with torch.no_grad():
                base, other_text, other_noise = run(m, z, text), run(m, z, text2, words2), run(m, z2, text)
            _comparable(base, other_text, other_noise)
            assert _max_diff(base, other_text) > _DIFFERS, (
                f"the output does not depend on the text embedding{_where(m, seen)} (the caption is ignored)"
            )
            assert _max_diff(base, other_noise) > _DIFFERS, (
                f"the output does not depend on the noise z{_where(m, seen)}"
            )

    def outputs(m: nn.Module) -> dict[str, Tensor]:
        return {"outputs": run(m, z, text)}

    _check_reproducible(report, r, build, outputs, outputs)

    with report.check(f"a batch of one in eval mode at {r} px"):
        m = copy.deepcopy(g).eval()
        for seen in sorted({0, _final(m)}):
            _set_phase(m, seen)
            with torch.no_grad():
                out = run(m, z[:1], text[:1])
            _assert_image(out, (1, 3, r, r), z.dtype, f" for a batch of one{_where(m, seen)}")

    with report.check(f"CPU bf16 autocast at {r} px"):
        m = copy.deepcopy(g).eval()
        with torch.no_grad(), _bf16():
            out = run(m, z, text)
        _assert_image(out, shape, None, " under bf16 autocast", tol=1e-2)
        _assert_bf16_backward(m.train(), objective)

    with report.check(f"channels_last at {r} px"):
        ref = copy.deepcopy(g).eval()
        cl = copy.deepcopy(g).to(memory_format=torch.channels_last).eval()
        with torch.no_grad():
            a_out, b_out = run(ref, z, text), run(cl, z, text)
        _comparable(a_out, b_out)
        _assert_image(b_out, shape, z.dtype, " with channels_last weights")
        # a layout bug (a view that assumes contiguous memory) moves outputs by O(1); fp32 convolution kernels that
        # sum in another order for the other layout differ by up to ~1e-4 in deep networks on some CPUs
        assert torch.allclose(a_out, b_out, rtol=1e-3, atol=1e-3), (
            f"channels_last weights change the output (max difference {_max_diff(a_out, b_out):.3g})"
        )
        objective(cl.train()).backward()

    _check_words(report, r, copy.deepcopy(g), text_dim, b,
                 lambda m, w: final_image(m(z, text, words=w)),
                 lambda out, where: _assert_image(out, shape, z.dtype, where))


def _assert_z_dim(g: Generator) -> None:
    z_dim = getattr(g, "z_dim", None)
    what = "it has none" if not hasattr(g, "z_dim") else f"got {z_dim!r}"
    assert isinstance(z_dim, int) and not isinstance(z_dim, bool) and z_dim >= 1, (
        f"g.z_dim must be a positive int, the size of the noise vector the engine draws ({what}): set "
        f"self.z_dim in __init__ (usually from the config, e.g. self.z_dim = cfg.z_dim)"
    )


def _assert_range(values: Tensor, where: str, tol: float = 1e-5) -> None:
    if values.numel():
        lo, hi = values.detach().float().min().item(), values.detach().float().max().item()
        assert lo >= -1 - tol and hi <= 1 + tol, (
            f"output range [{lo:.3g}, {hi:.3g}]{where} exceeds [-1, 1] (finish with tanh or a clamp)"
        )


def _assert_image(
    out: Any, shape: tuple[int, ...], dtype: torch.dtype | None, where: str, tol: float = 1e-5
) -> None:
    assert isinstance(out, Tensor), f"returned {type(out).__name__}{where}, expected a Tensor"
    assert tuple(out.shape) == shape, f"output shape {tuple(out.shape)}{where}, expected {shape}"
    assert out.is_floating_point(), f"output dtype {out.dtype}{where}, expected a float dtype"
    if dtype is not None:
        assert out.dtype == dtype, (
            f"output dtype {out.dtype}{where}, expected {dtype} (the dtype of its inputs)"
        )
    _assert_finite(out, f"the output{where}")
    _assert_range(out, where, tol)

"""What the generator and discriminator checks share: which resolutions to check, where a progressive
network is probed along its growth, building at a resolution, and the properties that only differ in
what is called (determinism, state-dict round trip, bf16 gradients), and the word-feature checks of a network
that ``uses_words``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..engine.generate import uses_words
from ..engine.preflight import random_words
from ..errors import UsageError
from ..interfaces import WordFeatures
from ._common import (
    _NETWORKS,
    Report,
    _assert_same_weights,
    _bf16,
    _build,
    _comparable,
    _max_diff,
    _names,
    _one_line,
    _round_trip,
    _same_under_seed,
    _set_phase,
    _DIFFERS,
)

# images_seen values at which progressive networks are checked: every half decade from 10 to 1e12,
# so every phase and fade-in of any plausible growth schedule is visited at least once.
_PHASE_POINTS = (0, *(int(10 ** (k / 2)) for k in range(2, 25)))

_Outputs = Callable[[nn.Module], dict[str, Tensor]]  # a network's named outputs on the check's inputs


def _pick_resolutions(report: Report, declared: Sequence[int], wanted: Sequence[int] | None) -> list[int]:
    if wanted is None:
        chosen = [r for r in declared if r <= 64] + [r for r in declared if r == 128]
    else:
        chosen = [r for r in declared if r in set(wanted)]
    if not chosen:  # always check something: the smallest resolution the component declares
        chosen = [min(declared)]
        report.skipped.append(
            f"none of the resolutions asked for ({', '.join(map(str, wanted or ()))}) is declared "
            f"({', '.join(map(str, declared))}); checked {chosen[0]} px instead"
        )
    return chosen


def _undeclared_resolutions(declared: Sequence[int]) -> list[int]:
    """Resolutions a network declaring ``declared`` must refuse: half its smallest (when >= 4), twice its
    largest, and 48 (not a power of two) unless it declares it."""
    below, above = min(declared) // 2, max(declared) * 2
    return [r for r in (below, 48, above) if r >= 4 and r not in declared]


def _check_refuses_undeclared(
    report: Report, kind: str, name: str, cfg: Any, declared: Sequence[int], text_dim: int
) -> None:
    """Built at a resolution it does not declare, the network raises a one-line ``ValueError``."""
    with report.check("refuses the resolutions it does not declare"):
        for r in _undeclared_resolutions(declared):
            try:
                _build(kind, name, cfg, 0, _NETWORKS[kind], resolution=r, text_dim=text_dim)
            except (ValueError, UsageError) as exc:
                message = str(exc).strip()
                assert "\n" not in message, f"the refusal at {r} px is not one line: {_one_line(exc)}"
                continue
            raise AssertionError(
                f"builds at {r} px, which it does not declare ({', '.join(map(str, declared))}): raise "
                f"ValueError for a resolution not in `resolutions` (t2i.nn.check_context does)"
            )


def _phases(model: nn.Module) -> tuple[int, ...]:
    return _PHASE_POINTS if getattr(model, "progressive", False) else (0,)


def _final(model: nn.Module) -> int:
    return _phases(model)[-1]


def _where(model: nn.Module, seen: int) -> str:
    return f" after {seen:,} images" if getattr(model, "progressive", False) else ""


def _builder(kind: str, name: str, cfg: Any, r: int, text_dim: int) -> Callable[[int], Any]:
    """``build(seed)``: the network at ``r`` px, built under ``seed``, at the start of its growth."""
    base = _NETWORKS[kind]

    def build(seed: int) -> Any:
        net = _build(kind, name, cfg, seed, base, resolution=r, text_dim=text_dim)
        _set_phase(net, 0)
        return net

    return build


def _first_build(
    report: Report,
    build: Callable[[int], Any],
    who: str,
    r: int,
    text_dim: int,
    *more: Callable[[Any], None],
) -> Any:
    """The network built under seed 0, or ``None`` when it does not build or lacks an attribute it must
    set (the other checks would only fail on the same missing attribute)."""
    net = None
    with report.check(f"builds at {r} px"):
        built = build(0)
        for attr, expected in (("resolution", r), ("text_dim", text_dim)):
            value = getattr(built, attr, None)
            assert value == expected, (
                f"{who}.{attr} is {value!r}, expected {expected} (set self.{attr} in __init__ from the "
                f"{attr} it is built with)"
            )
        for check in more:
            check(built)
        net = built
    if net is None:
        report.skipped.append(f"the other checks at {r} px (it does not build, or lacks an attribute)")
    return net


def _check_reproducible(
    report: Report, r: int, build: Callable[[int], Any], outputs: _Outputs, restored: _Outputs
) -> None:
    """Two builds under one seed agree on ``outputs``; a state-dict round trip keeps ``restored``."""
    with report.check(f"deterministic under a seed at {r} px"):
        a, c = build(7), build(7)
        _assert_same_weights(a, c, 7)
        out_a, out_c = _same_under_seed(lambda: outputs(a), lambda: outputs(c), 11)
        for what in out_a:
            _comparable(out_a[what], out_c[what])
            assert torch.equal(out_a[what], out_c[what]), (
                f"two builds under torch.manual_seed(7), called under torch.manual_seed(11) on the same "
                f"input, give different {what} (max difference {_max_diff(out_a[what], out_c[what]):.3g}): "
                f"draw randomness from torch's RNG, not from random, numpy or the clock"
            )

    with report.check(f"state-dict round trip at {r} px"):
        src, dst = build(3), build(4)
        _set_phase(src, _final(src))
        with torch.no_grad():
            restored(src.train())  # move running statistics (and spectral-norm vectors) off their init
        _set_phase(dst, _final(dst))
        _round_trip(src, dst)
        src.eval(), dst.eval()
        out_src, out_dst = _same_under_seed(lambda: restored(src), lambda: restored(dst), 13)
        for what in out_src:
            _comparable(out_src[what], out_dst[what])
            assert torch.allclose(out_src[what], out_dst[what], rtol=1e-5, atol=1e-6), (
                f"a fresh instance loaded with the state_dict gives different {what} in eval mode "
                f"(max difference {_max_diff(out_src[what], out_dst[what]):.3g}): state that changes "
                f"the output is not in state_dict (register it as a buffer)"
            )


def _assert_bf16_backward(model: nn.Module, objective: Callable[[nn.Module], Tensor]) -> None:
    with _bf16():
        loss = objective(model)
    loss.backward()
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients under bf16 autocast: {_names(bad)}"


def _words_for(net: nn.Module, b: int, dim: int, seed: int, length: int = 6) -> WordFeatures | None:
    """Random word features for ``net`` (rows ``length``, ``length - 1``, ... tokens long), or ``None`` when
    it does not use words."""
    if not uses_words(net):
        return None
    return random_words(b, length, dim, torch.Generator().manual_seed(seed))


def _check_words(report: Report, r: int, net: nn.Module, dim: int, b: int,
                 outputs: Callable[[nn.Module, WordFeatures], Tensor], check: Callable[[Tensor, str], None]) -> None:
    """For a network that ``uses_words``: word features of several lengths work (``check`` each output), other
    words change the output, and, unless it declares ``masks_words = False``, what lies at padding positions
    does not (the mask is honoured)."""
    if not uses_words(net):
        report.skipped.append(f"word features at {r} px (uses_words = False)")
        return
    net = net.eval()
    with report.check(f"word features of several lengths at {r} px"):
        for length in (1, 3, 9):
            with torch.no_grad():
                check(outputs(net, random_words(b, length, dim, torch.Generator().manual_seed(length))),
                      f" with {length}-token word features")
    with report.check(f"word features change the output at {r} px"):
        words = random_words(b, 4, dim, torch.Generator().manual_seed(31))
        other = random_words(b, 4, dim, torch.Generator().manual_seed(32))
        with torch.no_grad():
            a, c = outputs(net, words), outputs(net, other)
        assert _max_diff(a, c) > _DIFFERS, "the output does not depend on the word features (they are ignored)"
    if not getattr(net, "masks_words", True):
        report.skipped.append(f"padding invariance at {r} px (masks_words = False)")
        return
    with report.check(f"padding positions do not change the output at {r} px"):
        words = random_words(b, 4, dim, torch.Generator().manual_seed(33))
        noise = torch.randn(b, 9, dim, generator=torch.Generator().manual_seed(34)) * 10
        mask = torch.zeros(b, 9, dtype=torch.bool)
        mask[:, :4] = words.mask
        features = torch.where(mask[..., None], torch.nn.functional.pad(words.features, (0, 0, 0, 5)), noise)
        with torch.no_grad():
            a, c = outputs(net, words), outputs(net, WordFeatures(features, mask))
        _comparable(a, c)
        assert torch.allclose(a, c, rtol=1e-4, atol=1e-5), (
            f"values at padding positions (mask False) change the output (max difference {_max_diff(a, c):.3g}): "
            "mask the padding out of attention and pooling, or declare masks_words = False"
        )

"""The pre-flight check: every network run once on a tiny batch before step 1, against its contract.

A generator that returns channels-last images, an unbounded output or the wrong size would otherwise fail
deep inside the discriminator (or train silently on values outside [-1, 1]). :func:`check_networks` runs
the text encoder, the generator and the discriminator once on two samples and raises a one-line
:class:`~t2i.errors.UsageError` naming the component and what it returned::

    generator 'mine' returned (2, 32, 32, 3) float32; expected (2, 3, 32, 32) images in [-1, 1]
    (channels last: permute to (B, 3, H, W))

The contract (:mod:`t2i.interfaces`): the generator returns floating ``(B, 3, R, R)`` in ``[-1, 1]``
(tolerance :data:`RANGE_TOLERANCE`), finite; the discriminator returns :class:`~t2i.interfaces.DiscOutput`
with finite ``(B,)`` logits, a non-empty list of feature tensors when it declares ``provides_features``,
and finite ``(B,)`` mismatched logits when asked for them; the text encoder returns finite ``(B, dim)``, and
``(B, L, word_dim)`` word features with a ``(B, L)`` mask when the run needs them (a network that
``uses_words`` is called with them; a multi-scale generator's last image is checked).

The check leaves a run exactly as it was: it runs under ``no_grad`` in the networks' current mode, puts
every buffer back (batch-norm statistics, spectral norm's vectors) and draws its inputs from a private
generator with the global random streams forked, so a checked run is bit-identical to an unchecked one.
:func:`check_component` builds one registered component with a tiny partner (``t2i describe ... --check``).
:func:`tuning_warnings` names loss terms used with a discriminator they were not tuned for.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import UsageError
from ..interfaces import DiscOutput, Discriminator, Generator, LossTerm, TextEncoder, WordFeatures, final_image
from .generate import uses_words
from .scales import downsample, scales_of

__all__ = [
    "RANGE_TOLERANCE",
    "PREFLIGHT_BATCH",
    "check_networks",
    "check_generator",
    "check_discriminator",
    "check_text_encoder",
    "check_words",
    "random_words",
    "check_component",
    "tuning_warnings",
    "untouched",
]

RANGE_TOLERANCE = 1e-3  # how far outside [-1, 1] a generated pixel may be (float rounding of tanh and the like)
PREFLIGHT_BATCH = 2
SAMPLE_CAPTIONS = ("a small red circle on a white background", "a large blue square on a black background")


@contextlib.contextmanager
def untouched(modules: Sequence[nn.Module], device: torch.device | None = None) -> Iterator[None]:
    """Run the body under ``no_grad`` and undo what it did to ``modules`` and the random streams: every
    buffer is put back as it was and the global CPU (and ``device``'s CUDA) generators are forked."""
    saved = [(buf, buf.detach().clone()) for m in modules for buf in m.buffers()]
    cuda = [device] if device is not None and device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def _describe(value: Any) -> str:
    """``(2, 32, 32, 3) float32``, or the type of something that is not a tensor."""
    if isinstance(value, Tensor):
        return f"({', '.join(map(str, value.shape))}) {str(value.dtype).removeprefix('torch.')}"
    return f"a {type(value).__name__}"


def _shape(*dims: int) -> str:
    return f"({', '.join(map(str, dims))})"


def check_generator(G: nn.Module, name: str, z: Tensor, text: Tensor, resolution: int,
                    words: WordFeatures | None = None) -> Tensor:
    """Run ``G(z, text)`` (``G(z, text, words=words)`` for a generator that uses words); return its
    full-resolution images (the last of a multi-scale list), or raise a one-line UsageError naming ``name``."""
    if uses_words(G) and words is None:
        raise UsageError(f"generator '{name}' uses word features but none were given")
    out = G(z, text, words=words) if uses_words(G) else G(z, text)
    images = final_image(out) if isinstance(out, (list, tuple)) and out and isinstance(out[-1], Tensor) else out
    b = z.shape[0]
    want = f"expected {_shape(b, 3, resolution, resolution)} images in [-1, 1]"
    said = f"generator '{name}' returned {_describe(images)}"
    if not isinstance(images, Tensor):
        raise UsageError(f"{said}; {want}")
    if tuple(images.shape) != (b, 3, resolution, resolution):
        hint = ""
        if tuple(images.shape) == (b, resolution, resolution, 3):
            hint = " (channels last: permute to (B, 3, H, W), e.g. x.permute(0, 3, 1, 2))"
        raise UsageError(f"{said}; {want}{hint}")
    if not images.is_floating_point():
        raise UsageError(f"{said}; {want} (a floating dtype)")
    if not bool(images.isfinite().all()):
        raise UsageError(f"{said} with non-finite values (NaN or inf); {want}")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise UsageError(f"{said} with values in [{lo:.3g}, {hi:.3g}]; {want} (end with tanh, or clamp)")
    return images


def _check_logits(value: Any, what: str, said: str, b: int) -> None:
    if not isinstance(value, Tensor) or tuple(value.shape) != (b,):
        raise UsageError(f"{said} {what} {_describe(value)}; expected ({b},) logits, one per image")
    if not value.is_floating_point() or not bool(value.isfinite().all()):
        raise UsageError(f"{said} {what} {_describe(value)} that are not finite floats; expected ({b},) finite logits")


def check_discriminator(D: nn.Module, name: str, images: Tensor, text: Tensor, *,
                        mismatched: bool = False, words: WordFeatures | None = None) -> DiscOutput:
    """Run ``D(images, text[, text rolled by one])`` (with ``words=`` and ``mismatched_words=`` for a
    discriminator that uses words); return its output, or raise a one-line UsageError."""
    b = images.shape[0]
    scales = scales_of(D)
    x: Tensor | list[Tensor] = images if len(scales) == 1 else [downsample(images, s) for s in scales]
    if uses_words(D):
        if words is None:
            raise UsageError(f"discriminator '{name}' uses word features but none were given")
        out = (D(x, text, text.roll(1, 0), words=words, mismatched_words=words.roll(1)) if mismatched
               else D(x, text, words=words))
    else:
        out = D(x, text, text.roll(1, 0)) if mismatched else D(x, text)
    if len(scales) > 1:  # a multi-scale discriminator: one DiscOutput per scale, each checked
        if not isinstance(out, (list, tuple)) or len(out) != len(scales):
            raise UsageError(f"discriminator '{name}' judges scales {scales} but returned {_describe(out)}; "
                             f"expected a list of {len(scales)} DiscOutput, one per scale")
        for one in out:
            _check_disc_output(D, f"discriminator '{name}' returned", one, b, mismatched)
        return out[-1]
    _check_disc_output(D, f"discriminator '{name}' returned", out, b, mismatched)
    return out


def _check_disc_output(D: nn.Module, said: str, out: Any, b: int, mismatched: bool) -> None:
    if not isinstance(out, DiscOutput):
        raise UsageError(f"{said} {_describe(out)}; expected a t2i.interfaces.DiscOutput")
    _check_logits(out.logits, "logits", said, b)
    if getattr(D, "provides_features", False):
        features = out.features
        if not isinstance(features, (list, tuple)) or not features or not all(isinstance(f, Tensor) for f in features):
            got = f"{len(features)} features" if isinstance(features, (list, tuple)) else _describe(features)
            raise UsageError(f"{said} {got} but declares provides_features = True; return a non-empty list of "
                             "feature tensors in DiscOutput.features, or set provides_features = False")
    if mismatched:
        if out.mismatched_logits is None:
            raise UsageError(f"{said} no mismatched_logits when given mismatched_text; score the images against "
                             "mismatched_text too (Discriminator.forward does)")
        _check_logits(out.mismatched_logits, "mismatched_logits", said, b)


def check_text_encoder(encoder: TextEncoder, name: str, captions: Sequence[str], device: torch.device) -> Tensor:
    """Run the encoder on ``captions``; return ``(B, dim)`` embeddings, or raise a one-line UsageError."""
    tokens = encoder.tokenize(list(captions))
    text = encoder(tokens.to(device) if isinstance(tokens, Tensor) else tokens)
    return check_embeddings(text, name, len(captions), getattr(encoder, "dim", None))


def check_words(words: Any, name: str, b: int, dim: int | None) -> WordFeatures:
    """``words`` must be a :class:`WordFeatures` of ``(b, L, dim)`` finite features and a ``(b, L)`` bool mask with
    a real token in every row; else a one-line UsageError naming the encoder."""
    said = f"text encoder '{name}' returned word features"
    if not isinstance(words, WordFeatures):
        raise UsageError(f"{said} as {_describe(words)}; expected a t2i.interfaces.WordFeatures")
    f, m = words.features, words.mask
    if f.dim() != 3 or tuple(f.shape[::2]) != (b, dim) or not f.is_floating_point() or not bool(f.isfinite().all()):
        raise UsageError(f"{said} {_describe(f)}; expected ({b}, L, {dim}) finite floats (its word_dim = {dim})")
    if m.dtype != torch.bool or tuple(m.shape) != tuple(f.shape[:2]) or not bool(m.any(1).all()):
        raise UsageError(f"{said} with a mask {_describe(m)}; expected a ({b}, {f.shape[1]}) bool mask, True at "
                         "real tokens, at least one per caption")
    return words


def random_words(batch: int, length: int, dim: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> WordFeatures:
    """Random word features ``(batch, length, dim)`` whose captions are 1 to ``length`` tokens long (row ``i``
    has ``length - i`` real tokens, at least one), zeros at padding: partners for a network that uses words."""
    lengths = (length - torch.arange(batch)).clamp_min(1)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    features = torch.randn(batch, length, dim, generator=generator) * mask[..., None]
    return WordFeatures(features.to(device), mask.to(device))


def check_embeddings(text: Any, name: str, b: int, dim: int | None) -> Tensor:
    """``text`` must be ``(b, dim)`` finite float embeddings; else a one-line UsageError naming the encoder."""
    said = f"text encoder '{name}' returned {_describe(text)}"
    if not isinstance(text, Tensor) or tuple(text.shape) != (b, dim):
        raise UsageError(f"{said}; expected ({b}, {dim}) embeddings (one row of its dim = {dim} per caption)")
    if not text.is_floating_point() or not bool(text.isfinite().all()):
        raise UsageError(f"{said} that are not finite floats; expected ({b}, {dim}) finite embeddings")
    return text


def check_networks(G: Generator, D: Discriminator, encoder: TextEncoder, *, resolution: int,
                   names: Mapping[str, str], captions: Sequence[str] = (), needs: frozenset[str] = frozenset(),
                   device: torch.device | None = None, batch: int = PREFLIGHT_BATCH,
                   text: Tensor | None = None) -> None:
    """Run the text encoder, G and D once on ``batch`` samples and check each against its contract.

    ``text``: the embeddings the run already holds for ``batch`` of its captions (a frozen encoder's table,
    perhaps read from the on-disk cache); checked like the encoder's output, without running the encoder.

    ``names``: the registered names, ``{"generator": ..., "discriminator": ..., "text_encoder": ...}``.
    ``captions``: captions to encode (the first ``batch`` are used; made up when fewer). ``needs``: what the
    run's losses need (``"mismatched"`` checks the mismatched logits). Leaves the networks' buffers and the
    global random streams as they were (:func:`untouched`). Raises a one-line :class:`UsageError`.
    """
    device = device or next(G.parameters(), torch.empty(0)).device
    chosen = list(dict.fromkeys(captions))[:batch]
    chosen += list(SAMPLE_CAPTIONS[: batch - len(chosen)])
    chosen += [chosen[-1]] * (batch - len(chosen))
    gen = torch.Generator().manual_seed(0)
    with untouched([G, D, encoder], device):
        if text is None:
            text = check_text_encoder(encoder, names.get("text_encoder", "?"), chosen, device)
        else:
            check_embeddings(text, names.get("text_encoder", "?"), batch, getattr(encoder, "dim", None))
        text = text.detach().float()
        if text.shape[1] != getattr(G, "text_dim", text.shape[1]):
            raise UsageError(f"text encoder '{names.get('text_encoder', '?')}' returns {text.shape[1]} dimensions "
                             f"but generator '{names.get('generator', '?')}' was built for text_dim = {G.text_dim}")
        words = None
        if uses_words(G) or uses_words(D) or "words" in needs:
            name = names.get("text_encoder", "?")
            if getattr(encoder, "word_dim", None) is None:
                raise UsageError(f"the run needs word features; text encoder '{name}' has none")
            own = next(encoder.parameters(), torch.empty(0)).device
            _, words = encoder.forward_words(encoder.tokenize(chosen).to(own))
            words = check_words(words, name, batch, encoder.word_dim).detach().to(device)
            words = WordFeatures(words.features.float(), words.mask)
        z = torch.randn(batch, G.z_dim, generator=gen).to(device)
        images = check_generator(G, names.get("generator", "?"), z, text, resolution, words)
        check_discriminator(D, names.get("discriminator", "?"), images.float(), text, mismatched="mismatched" in needs,
                            words=words)


def check_component(kind: str, name: str, options: Mapping[str, Any] | None = None, *,
                    resolution: int | None = None, text_dim: int = 16) -> str:
    """Build registered component ``name`` of ``kind`` (``generators``, ``discriminators``, ``text_encoders``)
    with ``options`` (defaults otherwise) at ``resolution`` (default: 32 px, else the smallest it supports), run it once
    on a tiny batch with a tiny partner and check its contract. Returns ``"ok"``; raises a one-line
    :class:`UsageError` naming what it returned. What ``t2i describe KIND NAME --check`` prints."""
    from ..plugins import registry

    reg = registry(kind)
    entry = reg.get(name)
    gen = torch.Generator().manual_seed(0)
    device = torch.device("cpu")
    if kind == "text_encoders":
        encoder, _ = reg.build(name, dict(options or {}))
        if not isinstance(encoder, TextEncoder):
            raise UsageError(f"text encoder '{name}' built a {type(encoder).__name__}, which is not a t2i TextEncoder")
        encoder.fit(list(SAMPLE_CAPTIONS))
        with untouched([encoder]):
            check_text_encoder(encoder, name, SAMPLE_CAPTIONS, device)
            if encoder.word_dim is not None:
                _, words = encoder.forward_words(encoder.tokenize(list(SAMPLE_CAPTIONS)))
                check_words(words, name, len(SAMPLE_CAPTIONS), encoder.word_dim)
        return "ok"
    if kind not in ("generators", "discriminators"):
        raise UsageError(f"--check runs generators, discriminators and text encoders; '{name}' is a {reg.noun}")
    supported = tuple(getattr(entry.factory, "resolutions", None) or (32,))
    if resolution is None:  # 32 px when supported (a wrapper's class may list more than its base builds)
        resolution = 32 if 32 in supported else min(supported)
    elif resolution not in supported:
        raise UsageError(f"{reg.noun} '{name}' supports resolutions {', '.join(map(str, supported))}, not {resolution}")
    word_dim = text_dim if getattr(entry.factory, "uses_words", False) else None
    context = {"word_dim": word_dim} if word_dim is not None else {}
    network, _ = reg.build(name, dict(options or {}), resolution=resolution, text_dim=text_dim, **context)
    base = Generator if kind == "generators" else Discriminator
    if not isinstance(network, base):
        raise UsageError(f"{reg.noun} '{name}' built a {type(network).__name__}, which is not a t2i {base.__name__}")
    network.on_train_step(0, 0)
    text = torch.randn(PREFLIGHT_BATCH, text_dim, generator=gen)
    words = random_words(PREFLIGHT_BATCH, 5, text_dim, gen) if uses_words(network) else None
    with untouched([network]):
        if kind == "generators":
            z = torch.randn(PREFLIGHT_BATCH, network.z_dim, generator=gen)
            check_generator(network, name, z, text, resolution, words)
        else:
            images = torch.rand(PREFLIGHT_BATCH, 3, resolution, resolution, generator=gen) * 2 - 1
            check_discriminator(network, name, images, text, mismatched=True, words=words)
    return "ok"


def tuning_warnings(terms: Sequence[tuple[str, float, LossTerm]], discriminator: str) -> list[str]:
    """One line for each term whose ``tuned_for`` names discriminators other than ``discriminator``: its scale
    was tuned to those networks and may not suit this one (see :attr:`t2i.interfaces.LossTerm.tuned_for`)."""
    lines = []
    for name, _, term in terms:
        tuned = frozenset(getattr(term, "tuned_for", frozenset()))
        if tuned and discriminator not in tuned:
            lines.append(f"loss term '{name}' is tuned for discriminator {', '.join(sorted(tuned))}, not "
                         f"'{discriminator}': its scale may not suit this network (watch for loss_explosion; "
                         f"see t2i describe loss {name})")
    return lines

"""The text encoder check: ``fit``, ``tokenize`` and ``forward`` give one embedding per caption, and what
``fit`` learns survives a checkpoint."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..interfaces import TextEncoder
from ._common import (
    _DIFFERS,
    Report,
    _assert_finite,
    _assert_gradients,
    _assert_same_weights,
    _bf16,
    _build,
    _config,
    _max_diff,
    _one_line,
    _perturbed,
    _randn,
    _restores_rng,
    _round_trip,
    _same_under_seed,
    _set_phase,
    _start,
)

_CAPTIONS = (
    "a small red circle in the top left on a white background",
    "a large blue square in the center on a black background",
    "a green triangle at the bottom right on a grey background",
    "a yellow cross in the middle on a blue background",
    "a large magenta circle on a black background",
    "a small cyan square at the top on a white background",
)


@_restores_rng
def check_text_encoder(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    captions: Sequence[str] = _CAPTIONS,
) -> Report:
    """Check registered text encoder ``name``: ``fit`` / ``tokenize`` / ``forward`` give ``(N, dim)``
    finite float embeddings, different captions differ, rows are independent of the batch, unseen words
    are accepted, ``encode`` agrees; gradients when ``trainable``; ``extra_state`` is JSON and round-trips
    with ``state_dict``; determinism under a seed; CPU bf16 autocast."""
    report = _start("text_encoders", name)
    cfg = _config("text_encoders", name, options)
    captions = list(captions)
    n = len(captions)

    def build(seed: int) -> TextEncoder:
        enc = _build("text_encoders", name, cfg, seed, TextEncoder)
        enc.fit(captions)
        _set_phase(enc, 0)
        return enc

    enc: TextEncoder | None = None
    with report.check("builds and fits"):
        enc = build(0)
        assert isinstance(enc.dim, int) and not isinstance(enc.dim, bool) and enc.dim >= 1, (
            f"dim must be a positive int, got {enc.dim!r}"
        )
        assert isinstance(enc.trainable, bool), f"trainable must be a bool, got {enc.trainable!r}"
    if enc is None:
        report.skipped.append("the other checks (it does not build)")
        report.raise_for_failures()
        return report

    with report.check("embeddings"):
        enc.eval()
        tokens = enc.tokenize(captions)
        assert isinstance(tokens, Tensor) and tokens.shape[:1] == (n,), (
            "tokenize must return a tensor with one row per caption"
        )
        with torch.no_grad():
            emb = enc(tokens)
            assert isinstance(emb, Tensor) and tuple(emb.shape) == (n, enc.dim), (
                f"embeddings shape {tuple(getattr(emb, 'shape', ()))}, expected ({n}, {enc.dim})"
            )
            assert emb.is_floating_point(), f"embeddings dtype {emb.dtype}, expected a float dtype"
            _assert_finite(emb, "the embeddings")
            assert _max_diff(emb[0], emb[1]) > _DIFFERS, "two different captions get the same embedding"
            idx = torch.tensor([3, 0, 3])
            assert torch.allclose(enc(tokens[idx]), emb[idx], rtol=1e-5, atol=1e-6), (
                "the embedding of a caption depends on the other rows of the batch "
                "(forward must map rows independently)"
            )
            assert torch.allclose(enc.encode(captions), emb, rtol=1e-5, atol=1e-6), (
                "encode(captions) differs from forward(tokenize(captions))"
            )
            unseen = enc(enc.tokenize(["zyxwv qwerty", ""]))
            _assert_finite(unseen, "the embedding of unseen words and of an empty caption")

    if enc.trainable:
        with report.check("gradients (trainable)"):
            m = _perturbed(enc).train()
            tokens = m.tokenize(captions)
            w = _randn((n, m.dim), 5)
            _assert_gradients(m, lambda mod: (mod(tokens).float() * w).sum(), (0,))
    else:
        report.skipped.append("gradients (frozen encoder: trainable = False)")

    with report.check("extra_state and state_dict round trip"):
        extra = enc.extra_state()
        try:
            extra = json.loads(json.dumps(extra))
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"extra_state() is not JSON-serialisable: {_one_line(exc)}") from None
        fresh = _build("text_encoders", name, cfg, 4, TextEncoder)  # not fitted: only the checkpoint
        fresh.load_extra_state(extra)
        _round_trip(enc, fresh)
        fresh.eval()
        with torch.no_grad():
            a, c = enc(enc.tokenize(captions)), fresh(fresh.tokenize(captions))
        assert torch.allclose(a, c, rtol=1e-5, atol=1e-6), (
            f"an unfitted instance restored from extra_state + state_dict embeds differently (max difference "
            f"{_max_diff(a, c):.3g}): keep what fit() learns in extra_state or in buffers"
        )

    with report.check("deterministic under a seed"):
        a_enc, c_enc = build(7), build(7)
        _assert_same_weights(a_enc, c_enc, 7)
        a_enc.eval(), c_enc.eval()
        with torch.no_grad():
            a, c = _same_under_seed(lambda: a_enc.encode(captions), lambda: c_enc.encode(captions), 11)
        assert torch.equal(a, c), (
            "two builds under torch.manual_seed(7), fitted on the same captions, embed differently"
        )

    with report.check("CPU bf16 autocast"):
        with torch.no_grad(), _bf16():
            out = enc(enc.tokenize(captions))
        assert tuple(out.shape) == (n, enc.dim), f"embeddings shape {tuple(out.shape)} under bf16 autocast"
        _assert_finite(out, "the embeddings under bf16 autocast")

    report.raise_for_failures()
    return report

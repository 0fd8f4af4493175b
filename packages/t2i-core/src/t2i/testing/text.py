"""The text encoder check: ``fit``, ``tokenize`` and ``forward`` give one embedding per caption, and what
``fit`` learns survives a checkpoint."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..interfaces import TextEncoder, WordFeatures
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

    if enc.word_dim is not None:
        with report.check("word features"):
            _check_words(enc, captions)
    else:
        report.skipped.append("word features (word_dim = None: sentence embeddings only)")

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


def _check_words(enc: TextEncoder, captions: list[str]) -> None:
    """``forward_words``: the sentence embeddings of ``forward`` and ``(N, L, word_dim)`` finite features with a
    ``(N, L)`` bool mask (a real token in every row), rows independent of
    the batch."""
    n, dim = len(captions), enc.word_dim
    assert isinstance(dim, int) and not isinstance(dim, bool) and dim >= 1, (
        f"word_dim must be a positive int or None, got {dim!r}"
    )
    tokens = enc.tokenize(captions)
    with torch.no_grad():
        emb = enc(tokens)
        sentence, words = enc.forward_words(tokens)
        assert torch.allclose(sentence, emb, rtol=1e-5, atol=1e-6), (
            f"forward_words(tokens)[0] differs from forward(tokens) (max difference {_max_diff(sentence, emb):.3g})"
        )
        assert isinstance(words, WordFeatures), f"forward_words returned {type(words).__name__}, expected WordFeatures"
        f, m = words.features, words.mask
        assert f.dim() == 3 and f.shape[0] == n and f.shape[2] == dim, (
            f"word features shape {tuple(f.shape)}, expected ({n}, L, {dim}) (word_dim = {dim})"
        )
        assert m.dtype == torch.bool and tuple(m.shape) == tuple(f.shape[:2]), (
            f"word mask {tuple(m.shape)} {m.dtype}, expected a ({n}, {f.shape[1]}) bool tensor"
        )
        assert bool(m.any(1).all()), "a caption has no real token in the word mask (every row needs one)"
        assert m.shape[1] == int(m.sum(1).max()) or m.shape[1] == tokens.shape[-1], (
            "the word features are longer than the longest caption (L must be the batch's longest, or the context)"
        )
        _assert_finite(f, "the word features")
        idx = torch.tensor([3, 0, 3])
        _, part = enc.forward_words(tokens[idx])
        for row, i in enumerate(idx.tolist()):
            k = int(m[i].sum())
            assert torch.equal(part.mask[row, :k], m[i, :k]) and torch.allclose(
                part.features[row, :k][part.mask[row, :k]], f[i, :k][m[i, :k]], rtol=1e-4, atol=1e-5), (
                "the word features of a caption depend on the other rows of the batch"
            )

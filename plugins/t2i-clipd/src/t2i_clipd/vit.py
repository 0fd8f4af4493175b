"""A frozen CLIP ViT read at several depths: GALIP's ``CLIP_IMG_ENCODER``, for any open-clip ViT.

:func:`load_vit` loads the CLIP through the core's :func:`t2i.clip.load_clip` (an open-clip model name or a
JSON config; weights from ``weights=PATH``, ``$T2I_CLIP_WEIGHTS`` or a pretrained tag), or, only when asked
with ``weights="random:SEED"``, builds it with random weights from that seed. :class:`TappedViT` then maps
images in ``[-1, 1]`` (any size: they are resized to CLIP's input size and normalised with its mean and
std, differentiably) to the patch-token grids after the chosen transformer blocks, ``(B, width, g, g)``
each, where ``g = image_size / patch_size`` (7 for ViT-B/32 at 224 px) and ``width`` the ViT's (768).

A random frozen ViT is a fixed random feature extractor: the features still depend on the image smoothly
and a trainable head on top can separate real from generated images, but they carry none of CLIP's
knowledge of what images look like, so a run with one measures the head and the training loop, not GALIP.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from t2i.clip import ClipBundle, load_clip
from t2i.errors import UsageError

__all__ = ["TappedViT", "load_vit", "RANDOM_PREFIX"]

RANDOM_PREFIX = "random:"  # weights="random:SEED": random frozen weights, built from SEED


def _random_clip(model: str, seed: int, quick_gelu: bool) -> ClipBundle:
    """The open-clip ``model`` with weights drawn from ``seed`` (torch's global RNG is left as it was)."""
    import open_clip

    from t2i.clip import _model_name

    name = _model_name(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # open-clip warns that no weights were loaded: we know
        try:
            net = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu)
        finally:
            logging.getLogger().setLevel(quiet)
    net.eval().requires_grad_(False)
    visual = net.visual
    size = visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    tag = f"{RANDOM_PREFIX}{seed}"
    return ClipBundle(net, lambda texts: _tokenizer(name)(texts), name, tag, tag, size, mean, std)


@functools.cache
def _tokenizer(name: str) -> Callable[[list[str]], Tensor]:
    """open-clip's tokenizer for ``name``, built once (it reads a large vocabulary), only when text is encoded."""
    import open_clip

    return open_clip.get_tokenizer(name)


def load_vit(model: str, *, weights: str = "", pretrained: str = "openai", quick_gelu: bool = False) -> ClipBundle:
    """The frozen CLIP ``model``, its weights as the module docstring says (``weights="random:SEED"``: random)."""
    if weights.startswith(RANDOM_PREFIX):
        seed = weights[len(RANDOM_PREFIX):]
        if not seed.isdigit():
            raise UsageError(f"weights={weights!r}: random weights are written random:SEED, e.g. random:0")
        return _random_clip(model, int(seed), quick_gelu)
    return load_clip(model, weights=weights or None, pretrained=pretrained or None, quick_gelu=quick_gelu)


@dataclass(frozen=True)
class _Geometry:
    width: int  # channels of a token
    grid: int  # tokens per side
    depth: int  # transformer blocks


class TappedViT:
    """The image tower of a frozen CLIP, returning the token grids after the blocks in ``layers`` (increasing).

    Deliberately not an ``nn.Module``: the discriminator that holds it keeps it out of its parameters,
    ``state_dict`` and ``train()`` (see :class:`t2i_clipd.models.ClipDiscriminator`), so it is never
    optimised, never saved in checkpoints and always in eval mode. Gradients still flow through it to the
    image: nothing here is under ``no_grad``. Attention runs with PyTorch's math kernel, the only one whose
backward can itself be differentiated, as gradient penalties on the image (``ma_gp``, ``r1``) need; at
CLIP's few tokens (50 for ViT-B/32) it costs little.
    """

    def __init__(self, bundle: ClipBundle, layers: tuple[int, ...]):
        visual = getattr(bundle.model, "visual", None)
        blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
        if blocks is None or not hasattr(visual, "conv1"):
            raise UsageError(f"clipd needs a ViT CLIP; '{bundle.name}' has no vision transformer")
        self.visual = visual.eval().requires_grad_(False)
        # the image tower only: the text tower and the tokenizer (large vocabulary tables) are dropped
        self.bundle = replace(bundle, model=visual, tokenizer=None)
        grid = visual.grid_size
        self.geometry = _Geometry(int(visual.transformer.width), int(grid[0] if isinstance(grid, tuple) else grid),
                                  len(blocks))
        if not layers or max(layers) >= self.geometry.depth:
            raise UsageError(f"layers {list(layers)}: {bundle.name}'s ViT has blocks 0..{self.geometry.depth - 1}")
        self.layers = tuple(layers)

    @property
    def width(self) -> int:
        return self.geometry.width

    @property
    def grid(self) -> int:
        return self.geometry.grid

    def apply(self, fn) -> None:
        """``nn.Module._apply`` on the ViT: ``.to(device)``, dtype and memory-format moves of its owner."""
        self.visual._apply(fn)

    def __call__(self, images: Tensor) -> list[Tensor]:
        """Images ``(B, 3, R, R)`` in ``[-1, 1]`` -> one ``(B, width, g, g)`` grid per tapped block, in order."""
        with sdpa_kernel(SDPBackend.MATH):  # the one attention kernel with a double backward (R1, MA-GP)
            return self._grids(images)

    def _grids(self, images: Tensor) -> list[Tensor]:
        v = self.visual
        x = self.bundle.preprocess(images).to(v.conv1.weight.dtype).contiguous()
        x = v.conv1(x).flatten(2).transpose(1, 2)  # (B, g*g, width): the patch tokens
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = v.ln_pre(torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype))
        batch_first = getattr(v.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        grids: list[Tensor] = []
        for i, block in enumerate(v.transformer.resblocks[: max(self.layers) + 1]):
            x = block(x)
            if i in self.layers:
                tokens = (x if batch_first else x.transpose(0, 1))[:, 1:]  # drop the class token
                grids.append(tokens.transpose(1, 2).reshape(x.shape[0] if batch_first else x.shape[1],
                                                            self.width, self.grid, self.grid))
        return grids


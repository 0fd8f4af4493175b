"""``galip``: GALIP's generator (Tao et al., CVPR 2023), DF-GAN's fusion blocks bridged through a frozen CLIP ViT.

After the authors' ``NetG``, ``CLIP_Adapter``, ``CLIP_Mapper``, ``M_Block`` and ``G_Block`` (tobran/GALIP,
``code/models/GALIP.py``), for any open-clip ViT:

1. ``Linear(z)`` -> a ``code_ch`` (64) x g x g map, g the ViT's grid (7 for ViT-B/32).
2. The bridge (their ``CLIP_Adapter``): ``map_blocks`` (4) :class:`MBlock` s (conv3x3 to ``mid_ch`` (32), fusion,
   conv3x3 back, fusion, plus a shortcut) fuse ``c = [z; sentence]`` into the map; a conv5x5 lifts it to the ViT's
   width; the frozen ViT (their ``CLIP_Mapper``) reads it as its patch tokens (after the class token, positions
   and ``ln_pre``) and runs every block, appending one learned prompt token (``Linear(c)``) before each block of
   ``prompt_layers`` (1-8 of 12) and dropping it after; ``conv5x5(fused + 0.1 * mapped)`` gives ``8 nf`` channels.
3. :class:`GBlock` s (their ``G_Block``: resize, then ``shortcut(x) + conv(fuse(conv(fuse(x, c)), c))``) grow the
   map 8, 16, ... to the output size, with DF-GAN's widths (``nf * min(R / s, 8)``).
4. LeakyReLU(0.2), conv3x3 to RGB, tanh.

The fusion layers are DF-GAN's (:class:`t2i_dfgan.DFBlock`: two affine layers from ``c``, identity at start).
Differences from the release: the last block resizes to the run's resolution (GALIP's generator outputs
224 x 224, CLIP's input size, whatever ``imsize`` says) and a tanh bounds the output to [-1, 1] (GALIP has none;
its images are clamped when saved). The ViT is frozen and held as ``clipd``'s is (not a parameter, not saved,
always in eval mode); G's gradients flow through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from t2i.interfaces import Generator
from t2i.nn import check_context
from t2i.options import require_positive
from t2i_dfgan import DFBlock, dfgan_width

from .models import _layers
from .vit import TappedViT, load_vit

__all__ = ["GALIPGeneratorConfig", "GALIPGenerator", "MBlock", "GBlock"]


@dataclass
class GALIPGeneratorConfig:
    nf: int = field(default=64, metadata={"help": "channels at the output resolution (GALIP's nf: 64); 8 nf at the bridge"})
    z_dim: int = field(default=100, metadata={"help": "size of the noise vector z (GALIP: 100)"})
    model: str = field(default="ViT-B-32-quickgelu", metadata={
        "help": "open-clip ViT model name or JSON config path (GALIP: OpenAI's ViT-B/32)"})
    pretrained: str = field(default="openai", metadata={"help": "open-clip pretrained tag, used when no weights file is given"})
    weights: str = field(default="", metadata={
        "help": "CLIP weights file (else $T2I_CLIP_WEIGHTS, else the pretrained tag); random:SEED for tests"})
    quick_gelu: bool = field(default=False, metadata={
        "help": "QuickGELU activations: needed for OpenAI's weights unless the model name ends in -quickgelu"})
    prompt_layers: tuple[int, ...] = field(default=(1, 2, 3, 4, 5, 6, 7, 8), metadata={
        "help": "ViT blocks that see a learned prompt token from [z; sentence] (GALIP: 1-8 of 12)"})
    code_ch: int = field(default=64, metadata={"help": "channels of the noise map entering the bridge (GALIP: 64)"})
    mid_ch: int = field(default=32, metadata={"help": "hidden channels of the bridge's blocks (GALIP: 32)"})
    map_blocks: int = field(default=4, metadata={"help": "fusion blocks before the ViT (GALIP: 4)"})

    def __post_init__(self) -> None:
        require_positive(self, "nf", "z_dim", "code_ch", "mid_ch", "map_blocks")
        self.prompt_layers = _layers(self.prompt_layers)


class MBlock(nn.Module):
    """GALIP's ``M_Block``: ``shortcut(x) + fuse2(conv2(fuse1(conv1(x), c)), c)``, sizes kept."""

    def __init__(self, cond_dim: int, in_ch: int, mid_ch: int, out_ch: int):
        super().__init__()
        self.conv1, self.fuse1 = nn.Conv2d(in_ch, mid_ch, 3, 1, 1), DFBlock(cond_dim, mid_ch)
        self.conv2, self.fuse2 = nn.Conv2d(mid_ch, out_ch, 3, 1, 1), DFBlock(cond_dim, out_ch)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return self.shortcut(x) + self.fuse2(self.conv2(self.fuse1(self.conv1(x), c)), c)


class GBlock(nn.Module):
    """GALIP's ``G_Block``: nearest resize to ``size``, then ``shortcut(x) + c2(fuse2(c1(fuse1(x, c)), c))``."""

    def __init__(self, cond_dim: int, in_ch: int, out_ch: int, size: int):
        super().__init__()
        self.size = size
        self.fuse1, self.c1 = DFBlock(cond_dim, in_ch), nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.fuse2, self.c2 = DFBlock(cond_dim, out_ch), nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        x = F.interpolate(x, size=(self.size, self.size))
        return self.shortcut(x) + self.c2(self.fuse2(self.c1(self.fuse1(x, c)), c))


def _bridge(vit: TappedViT, x: Tensor, prompts: Tensor, at: tuple[int, ...]) -> Tensor:
    """GALIP's ``CLIP_Mapper``: map ``x`` ``(B, W, g, g)`` through every ViT block as its patch tokens, a prompt
    token appended before each block in ``at`` and dropped after; the patch tokens out, ``(B, W, g, g)``."""
    v = vit.visual
    b, w, g, _ = x.shape
    tokens = x.flatten(2).transpose(1, 2)
    cls = v.class_embedding.to(tokens.dtype).expand(b, 1, -1)
    t = v.ln_pre(torch.cat([cls, tokens], dim=1) + v.positional_embedding.to(tokens.dtype))
    batch_first = getattr(v.transformer, "batch_first", True)
    seq = 1 if batch_first else 0
    if not batch_first:
        t, prompts = t.transpose(0, 1), prompts.transpose(0, 1)
    k = 0
    for i, block in enumerate(v.transformer.resblocks):
        if i in at:
            prompt = prompts.narrow(seq, k, 1).to(t.dtype)
            t = block(torch.cat([t, prompt], dim=seq)).narrow(seq, 0, t.shape[seq])
            k += 1
        else:
            t = block(t)
    if not batch_first:
        t = t.transpose(0, 1)
    return t[:, 1:].transpose(1, 2).reshape(b, w, g, g)


class GALIPGenerator(Generator):
    """GALIP's generator: noise map -> fusion blocks -> frozen CLIP ViT with prompts -> DF-GAN-style up blocks."""

    resolutions = (32, 64, 128, 256)

    def __init__(self, cfg: GALIPGeneratorConfig | None = None, *, resolution: int = 256, text_dim: int = 512) -> None:
        super().__init__()
        cfg = cfg or GALIPGeneratorConfig()
        check_context(type(self), resolution, text_dim)
        self.cfg, self.resolution, self.text_dim, self.z_dim = cfg, resolution, text_dim, cfg.z_dim
        bundle = load_vit(cfg.model, weights=cfg.weights, pretrained=cfg.pretrained, quick_gelu=cfg.quick_gelu)
        object.__setattr__(self, "vit", TappedViT(bundle, (0,)))  # not a submodule, as in ClipDiscriminator
        if max(cfg.prompt_layers) >= self.vit.geometry.depth:
            raise ValueError(f"prompt_layers {list(cfg.prompt_layers)}: the ViT has blocks 0..{self.vit.geometry.depth - 1}")
        width, grid, cond_dim = self.vit.width, self.vit.grid, cfg.z_dim + text_dim
        if grid >= 8:
            raise ValueError(f"the ViT's grid is {grid} x {grid}; galip grows the map from a grid smaller than 8")

        self.fc_code = nn.Linear(cfg.z_dim, cfg.code_ch * grid * grid)
        self.map_blocks = nn.ModuleList(MBlock(cond_dim, cfg.code_ch, cfg.mid_ch, cfg.code_ch)
                                        for _ in range(cfg.map_blocks))
        self.conv_fuse = nn.Conv2d(cfg.code_ch, width, 5, 1, 2)
        self.fc_prompt = nn.Linear(cond_dim, width * len(cfg.prompt_layers))
        sizes = [8 * 2**i for i in range(resolution.bit_length() - 4)] + [resolution]  # 8, ..., R/2, R
        widths = [dfgan_width(cfg.nf, resolution, 4)] + [dfgan_width(cfg.nf, resolution, s) for s in sizes]
        self.conv_out = nn.Conv2d(width, widths[0], 5, 1, 2)
        self.blocks = nn.ModuleList(GBlock(cond_dim, i, o, s) for i, o, s in zip(widths[:-1], widths[1:], sizes))
        self.to_rgb = nn.Conv2d(widths[-1], 3, 3, 1, 1)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "GALIPGenerator":
        """Moves (``.to(device)``, dtypes, memory format) apply to the frozen ViT too."""
        super()._apply(fn, *args, **kwargs)
        self.vit.apply(fn)
        return self

    def forward(self, z: Tensor, text: Tensor) -> Tensor:
        c = torch.cat([z, text.to(z.dtype)], dim=1)
        g = self.vit.grid
        x = self.fc_code(z).view(z.shape[0], self.cfg.code_ch, g, g)
        for block in self.map_blocks:
            x = block(x, c)
        fused = self.conv_fuse(x)
        prompts = self.fc_prompt(c).view(z.shape[0], len(self.cfg.prompt_layers), -1)
        x = self.conv_out(fused + 0.1 * _bridge(self.vit, fused, prompts, self.cfg.prompt_layers).to(fused.dtype))
        for block in self.blocks:
            x = block(x, c)
        return torch.tanh(self.to_rgb(F.leaky_relu(x, 0.2)))

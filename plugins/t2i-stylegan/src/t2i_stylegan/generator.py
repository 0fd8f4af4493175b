"""StyleGAN2's generator (Karras et al., CVPR 2020) conditioned on a sentence embedding, as StyleGAN2-ADA
conditions on a class label and StyleGAN-T and LAFITE on a CLIP text embedding.

Mapping network (``text_path = "mapping"``, StyleGAN2-ADA's conditioning, LAFITE's): ``z`` (normalised to
unit second moment) and ``embed(text)`` (an equalized-lr linear layer to ``w_dim``, normalised the same way)
are concatenated and pass ``mapping_layers`` equalized-lr FC layers with leaky ReLU and learning-rate
multiplier 0.01, giving ``w``; ``w`` is broadcast to the ``num_ws`` inputs of the synthesis network. In
training mode, the forward pass tracks ``w_avg``, the moving average of ``w`` (beta 0.995).

``text_path = "styles"`` is StyleGAN-T's (autonomousvision/stylegan-t, ``networks/generator.py``): the
mapping layers see ``z`` alone, and the text skips them: ``w = [mapping(z); norm(text)]`` (``w_dim +
text_dim`` wide), so every style's affine layer reads the caption directly, at the full learning rate,
instead of through layers at 0.01 x lr. ``norm`` is the unit second moment (StyleGAN-T feeds the CLIP
embedding as it is; normalising makes the text's scale independent of the encoder). ``w_avg`` and
truncation then concern the ``z`` part only, as StyleGAN-T truncates its mapping output and keeps the text.

Synthesis network: a learned 4x4 constant, then one block per resolution 4, 8, ..., R. A block has two 3x3
modulated convolutions (:class:`~t2i_stylegan.layers.SynthesisLayer`; the first upsamples x2, except at
4x4 where there is only one), each with its own noise input and its own ``w``. ``architecture``:

- ``"skip"`` (StyleGAN2's G, configs e/f): every block has a ``ToRGB``; the image so far is upsampled (FIR
  ``[1, 3, 3, 1]``) and the block's RGB added to it.
- ``"resnet"``: a block adds ``sqrt(1/2) (skip(x) + conv1(conv0(x)))``, with ``skip`` an upsampling 1x1
  conv; only the last block has a ``ToRGB``.

Widths: ``min(channel_base // res, channel_max)`` channels at resolution ``res`` (StyleGAN2-ADA's rule; its
256 px configs use 16384 and 512, the defaults here).

Output: ``tanh`` of the synthesised RGB. StyleGAN2's output is unbounded (its training images and D see
values slightly outside [-1, 1]); t2i's contract is an image in [-1, 1] in training too (the engine's
preflight and the conformance kit check it). ``tanh`` is the identity to first order near 0 and keeps
gradients everywhere, where a clamp would stop them at every saturated pixel.

Training extras: style mixing (``mixing_prob``: with that probability a batch's ws switch, from a random
layer on, to those of a second ``z`` with the same text) and fresh noise; both only in train mode.

Truncation (sampling, eval mode): ``forward(z, text, truncation=psi)`` moves ``w`` to ``center.lerp(w, psi)``.
By default (``truncation_center = "text"``) the center is the mean ``w`` of the caption itself, estimated
from ``truncation_samples`` fixed ``z`` (StyleGAN-T's conditional truncation); with ``"global"`` it is
``w_avg``, the mean ``w`` over all training captions (StyleGAN's trick), which pulls every caption toward the
average image and so away from its text (measured on Shapes: grey backgrounds at psi 0.5, README).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from t2i.interfaces import Generator
from t2i.nn import check_context, map_sizes
from t2i.options import require_choices, require_positive

from .layers import (
    EqualConv2d,
    EqualLinear,
    NoiseMode,
    SynthesisLayer,
    ToRGB,
    fir_filter,
    fp32,
    normalize_2nd_moment,
    upsample2d,
)

__all__ = ["StyleGANGeneratorConfig", "StyleGANGenerator", "SynthesisBlock", "stylegan_width"]

NOISE_MODES = ("random", "const", "none")


def stylegan_width(channel_base: int, channel_max: int, res: int) -> int:
    """Channels at resolution ``res``: ``min(channel_base // res, channel_max)`` (StyleGAN2-ADA)."""
    return min(channel_base // res, channel_max)


@dataclass
class StyleGANGeneratorConfig:
    z_dim: int = field(default=512, metadata={"help": "size of the noise vector z (StyleGAN2: 512)"})
    w_dim: int = field(default=512, metadata={
        "help": "size of the intermediate latent w, of the mapping layers and of the text embedding (512)"})
    mapping_layers: int = field(default=8, metadata={
        "help": "fully connected layers of the mapping network [z; text] -> w (StyleGAN2: 8)"})
    mapping_lr_multiplier: float = field(default=0.01, metadata={
        "help": "learning-rate multiplier of the mapping layers (equalized lr; StyleGAN2: 0.01)"})
    channel_base: int = field(default=16384, metadata={
        "help": "channels at resolution res are min(channel_base // res, channel_max) (StyleGAN2-ADA's "
                "256 px configs: 16384; config-f at 1024 px: 32768)"})
    channel_max: int = field(default=512, metadata={"help": "the most channels of any block (512)"})
    architecture: Literal["skip", "resnet"] = field(default="skip", metadata={
        "help": "skip: ToRGB at every resolution, summed with upsampling (StyleGAN2's G); resnet: residual "
                "synthesis blocks, one ToRGB at the end"})
    mixing_prob: float = field(default=0.9, metadata={
        "help": "style mixing regularisation: probability that a training batch switches to a second z's w "
                "from a random layer on (StyleGAN2: 0.9; 0 disables)"})
    w_avg_beta: float = field(default=0.995, metadata={
        "help": "decay of the moving average of w tracked in training (the truncation center)"})
    noise_mode: Literal["random", "const", "none"] = field(default="random", metadata={
        "help": "noise inputs in eval mode (samples, metrics): random (StyleGAN2-ADA's metrics), const (a "
                "fixed map per layer, saved with the weights; its generate.py) or none; training always "
                "draws random noise"})
    truncation_center: Literal["global", "text"] = field(default="text", metadata={
        "help": "what truncation psi pulls w toward: global (w_avg, StyleGAN's trick) or text (the mean w of "
                "the caption itself, over truncation_samples fixed z; StyleGAN-T's conditional truncation)"})
    truncation_samples: int = field(default=64, metadata={
        "help": "how many fixed z estimate a caption's mean w when truncation_center is text"})
    text_path: Literal["mapping", "styles"] = field(default="mapping", metadata={
        "help": "mapping: the text enters the mapping network with z (StyleGAN2-ADA, LAFITE); styles: the "
                "mapping sees z alone and w = [mapping(z); text], so every style reads the text (StyleGAN-T)"})

    def __post_init__(self) -> None:
        require_positive(self, "z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max",
                         "truncation_samples")
        require_choices(self)
        if not self.mapping_lr_multiplier > 0:
            raise ValueError(f"mapping_lr_multiplier must be positive, got {self.mapping_lr_multiplier}")
        if not 0.0 <= self.mixing_prob <= 1.0:
            raise ValueError(f"mixing_prob must be in [0, 1], got {self.mixing_prob}")
        if not 0.0 <= self.w_avg_beta < 1.0:
            raise ValueError(f"w_avg_beta must be in [0, 1), got {self.w_avg_beta}")


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: ``(x, img) -> (x, img)`` at twice the size (4x4: from the
    learned constant). Reads ``num_conv + num_torgb`` ws: one per conv, then the ToRGB's."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *,
                 architecture: str, is_last: bool) -> None:
        super().__init__()
        self.first, self.architecture = in_channels == 0, architecture
        if self.first:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGB(out_channels, w_dim) if is_last or architecture == "skip" else None
        self.skip = (EqualConv2d(in_channels, out_channels, 1, bias=False, up=True)
                     if not self.first and architecture == "resnet" else None)
        self.num_conv = 1 if self.first else 2
        self.num_torgb = int(self.torgb is not None)
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Tensor,
                noise_mode: NoiseMode) -> tuple[Tensor, Tensor | None]:
        if self.first:
            x = self.conv1(self.const[None].expand(ws.shape[0], -1, -1, -1), ws[:, 0], noise_mode)
        elif self.skip is not None:
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, ws[:, 0], noise_mode)
            x = y + self.conv1(x, ws[:, 1], noise_mode, gain=math.sqrt(0.5))
        else:
            x = self.conv1(self.conv0(x, ws[:, 0], noise_mode), ws[:, 1], noise_mode)

        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.torgb is not None:
            rgb = self.torgb(x, ws[:, self.num_conv]).float()
            img = rgb if img is None else img + rgb
        return x, img


class StyleGANGenerator(Generator):
    """StyleGAN2's generator on ``[z; text]``: mapping to ``w``, modulated synthesis, tanh output.

    The path-length term and other tools use its two halves: :meth:`mapping` ``(z, text) -> ws``
    ``(B, num_ws, w_dim)`` and :meth:`synthesis` ``ws -> image``; ``forward`` is the one after the other,
    plus style mixing in training.
    """

    resolutions = (32, 64, 128, 256)
    supports_truncation = True  # t2i sample --truncation PSI: center.lerp(w, psi)

    def __init__(self, cfg: StyleGANGeneratorConfig | None = None, *, resolution: int = 256,
                 text_dim: int = 512) -> None:
        super().__init__()
        cfg = cfg or StyleGANGeneratorConfig()
        check_context(type(self), resolution, text_dim)
        if cfg.channel_base < resolution:
            raise ValueError(f"channel_base ({cfg.channel_base}) must be at least the resolution "
                             f"({resolution}): the {resolution} px block would have no channels")
        self.cfg, self.resolution, self.text_dim = cfg, resolution, text_dim
        self.text_to_styles = cfg.text_path == "styles"
        # w_dim: what each style reads (the mapping's output, plus the text when it skips the mapping)
        self.z_dim, self.w_dim = cfg.z_dim, cfg.w_dim + (text_dim if self.text_to_styles else 0)

        # mapping network
        self.embed = None if self.text_to_styles else EqualLinear(text_dim, cfg.w_dim)
        widths = [cfg.z_dim + (0 if self.text_to_styles else cfg.w_dim)] + [cfg.w_dim] * cfg.mapping_layers
        self.fc = nn.ModuleList(
            EqualLinear(i, o, activation="lrelu", lr_multiplier=cfg.mapping_lr_multiplier)
            for i, o in zip(widths[:-1], widths[1:])
        )
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

        # synthesis network
        sizes = map_sizes(resolution)
        channels = [stylegan_width(cfg.channel_base, cfg.channel_max, s) for s in sizes]
        self.blocks = nn.ModuleList(
            SynthesisBlock(channels[i - 1] if i else 0, channels[i], self.w_dim, s,
                           architecture=cfg.architecture, is_last=s == resolution)
            for i, s in enumerate(sizes)
        )
        self.num_ws = sum(b.num_conv for b in self.blocks) + self.blocks[-1].num_torgb

    # -- the two halves --------------------------------------------------------------------------------

    def mapping(self, z: Tensor, text: Tensor, truncation: float = 1.0, update_w_avg: bool = False) -> Tensor:
        """``(z, text)`` -> ``ws`` ``(B, num_ws, w_dim)`` in fp32, every row the same ``w``.

        ``update_w_avg``: move ``w_avg`` toward this batch's mean ``w`` (its ``z`` part with ``text_path =
        "styles"``; only in train mode). ``truncation`` psi in [0, 1]: ``center.lerp(w, psi)`` (1: unchanged,
        0: the center; see ``truncation_center``).
        """
        _check_psi(truncation)
        w = self._map(z, text)
        if update_w_avg and self.training:
            with torch.no_grad():
                mapped = w[:, :self.cfg.w_dim].detach()
                self.w_avg.copy_(mapped.mean(dim=0).lerp(self.w_avg, self.cfg.w_avg_beta))
        if truncation != 1:
            w = self._center(text).lerp(w, truncation)
        return w[:, None, :].repeat(1, self.num_ws, 1)

    def synthesis(self, ws: Tensor, noise_mode: str = "random") -> Tensor:
        """``ws`` ``(B, num_ws, w_dim)`` -> images ``(B, 3, R, R)`` in [-1, 1] (fp32).

        ``noise_mode``: ``"random"`` (fresh noise), ``"const"`` (each layer's fixed map) or ``"none"``.
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be (B, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        x = img = None
        index = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, index:index + block.num_conv + block.num_torgb], noise_mode)
            index += block.num_conv  # a block's ToRGB shares its w with the next block's first conv
        assert img is not None
        return torch.tanh(img)

    def forward(self, z: Tensor, text: Tensor, truncation: float | None = None,
                noise_mode: str | None = None) -> Tensor:
        """``synthesis(mapping(z, text))``; in train mode with w_avg tracking, style mixing and random noise.

        ``truncation``: psi for this call (``None``: 1, none). ``noise_mode``: for this call in eval mode
        (``None``: the config's).
        """
        ws = self.mapping(z, text, truncation=1.0 if truncation is None else truncation, update_w_avg=True)
        if self.training and self.cfg.mixing_prob > 0:
            ws = self._mix(ws, z, text)
        mode = "random" if self.training else (noise_mode or self.cfg.noise_mode)
        return self.synthesis(ws, mode)

    # -- parts -----------------------------------------------------------------------------------------

    def _map(self, z: Tensor, text: Tensor) -> Tensor:
        """The mapping network proper: ``[norm(z); norm(embed(text))]`` -> ``w`` ``(B, w_dim)``, in fp32
        (``text_path = "styles"``: ``norm(z)`` -> ``x``, and ``w = [x; norm(text)]``)."""
        with fp32(z):
            x = normalize_2nd_moment(z.float())
            if self.embed is not None:
                x = torch.cat([x, normalize_2nd_moment(self.embed(text.float()))], dim=1)
            for layer in self.fc:
                x = layer(x)
            if self.text_to_styles:
                x = torch.cat([x, normalize_2nd_moment(text.float())], dim=1)
        return x

    def _center(self, text: Tensor) -> Tensor:
        """What truncation pulls toward: ``w_avg`` ``(w_dim,)``, or each caption's mean ``w``
        ``(B, w_dim)``. With ``text_path = "styles"`` the text part of the center is the caption's own."""
        if self.cfg.truncation_center == "global":
            if self.text_to_styles:
                return torch.cat([self.w_avg.expand(text.shape[0], -1), normalize_2nd_moment(text.float())], dim=1)
            return self.w_avg
        n, b = self.cfg.truncation_samples, text.shape[0]
        z = torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(0)).to(text.device)
        w = self._map(z.repeat(b, 1), text.repeat_interleave(n, dim=0))
        return w.view(b, n, -1).mean(dim=1)

    def _mix(self, ws: Tensor, z: Tensor, text: Tensor) -> Tensor:
        """Style mixing: with probability ``mixing_prob``, the ws from a random layer on (the same one for
        the batch, in ``[1, num_ws)``) come from a second ``z`` with the same text. No host sync."""
        cutoff = torch.randint(1, self.num_ws, (), device=ws.device)
        cutoff = torch.where(torch.rand((), device=ws.device) < self.cfg.mixing_prob, cutoff, self.num_ws)
        other = self.mapping(torch.randn_like(z), text)
        switched = torch.arange(self.num_ws, device=ws.device) >= cutoff
        return torch.where(switched[None, :, None], other, ws)


def _check_psi(psi: float) -> None:
    if isinstance(psi, bool) or not isinstance(psi, (int, float)) or not 0.0 <= psi <= 1.0:
        raise ValueError(f"truncation psi must be a number in [0, 1], got {psi!r}")

"""StyleGAN2's building blocks (Karras et al., CVPR 2020), written anew after StyleGAN2-ADA's
``training/networks.py`` (NVlabs/stylegan2-ada-pytorch), in plain PyTorch (no custom CUDA ops).

- **Equalized learning rate** (:class:`EqualLinear`, :class:`EqualConv2d`): weights are stored as draws from
  ``N(0, 1) / lr_multiplier`` and scaled at run time by ``lr_multiplier / sqrt(fan_in)``, so Adam's step is
  the same relative size for every layer; ``lr_multiplier`` (0.01 in the mapping network) slows a layer down.
- **Modulated convolution** (:func:`modulated_conv2d`): each sample scales the conv's input channels by its
  style, and (``demodulate``) rescales each output channel so that its expected variance is one again. The
  demodulation coefficients are computed in fp32 from the squared weights, ``(B, I) @ (I, O)``, never the
  ``(B, O, I, k, k)`` per-sample weights; the convolution itself runs in the activations' dtype (bf16 or fp16
  under autocast), on activations scaled by style / max |style| so that low precision cannot overflow
  (demodulation makes the output independent of that scale).
- **Resampling** (:func:`upsample2d`): StyleGAN's FIR low-pass filter ``[1, 3, 3, 1]`` (outer product,
  normalised), applied as a depthwise transposed convolution with stride 2: zero insertion, then the
  filter with gain 4, i.e. ``upfirdn2d(x, f, up=2)``.
- **Noise input** (:class:`NoiseInput`): one per synthesis layer: a per-pixel ``N(0, 1)`` map shared by the
  channels, times a learned scalar strength that starts at 0.
"""

from __future__ import annotations

import contextlib
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LRELU_GAIN",
    "NoiseMode",
    "normalize_2nd_moment",
    "fp32",
    "FIR_TAPS",
    "fir_filter",
    "upsample2d",
    "bias_lrelu",
    "EqualLinear",
    "EqualConv2d",
    "modulated_conv2d",
    "NoiseInput",
    "SynthesisLayer",
    "ToRGB",
]

LRELU_GAIN = math.sqrt(2.0)  # leaky ReLU (slope 0.2) is followed by this gain, as in StyleGAN2's bias_act
NoiseMode = Literal["random", "const", "none"]


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """``x`` scaled so that the mean of its squares along ``dim`` is 1 (StyleGAN's pixel norm of z)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def fp32(x: Tensor) -> contextlib.AbstractContextManager[None]:
    """A context with autocast off on ``x``'s device: what runs inside stays in the dtype it is given."""
    return torch.autocast(x.device.type, enabled=False)


FIR_TAPS = (1.0, 3.0, 3.0, 1.0)  # StyleGAN2's resample filter


def fir_filter(taps: tuple[float, ...] = FIR_TAPS) -> Tensor:
    """The separable 2-D low-pass filter ``outer(taps, taps)``, normalised to sum 1."""
    f = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upsample2d(x: Tensor, f: Tensor) -> Tensor:
    """x2 upsampling: zero insertion, then the 4x4 FIR filter ``f`` with gain 4 (StyleGAN's ``upsample2d``).

    A depthwise transposed convolution with stride 2 and padding 1 does both at once; the output is exactly
    twice the size of the input.
    """
    c = x.shape[1]
    kernel = (f * 4).to(x.dtype)[None, None].expand(c, 1, *f.shape)
    return F.conv_transpose2d(x, kernel, stride=2, padding=(f.shape[0] - 2) // 2, groups=c)


def bias_lrelu(x: Tensor, bias: Tensor, gain: float = LRELU_GAIN) -> Tensor:
    """``lrelu(x + bias, 0.2) * gain``, per channel: StyleGAN2's ``bias_act`` with ``act='lrelu'``."""
    return F.leaky_relu(x + bias.to(x.dtype)[None, :, None, None], 0.2) * gain


class EqualLinear(nn.Module):
    """A fully connected layer with equalized learning rate (StyleGAN2-ADA's ``FullyConnectedLayer``).

    ``y = act(x @ (W * lr_multiplier / sqrt(in)).T + b * lr_multiplier)`` with ``W ~ N(0, 1) / lr_multiplier``
    and ``b = bias_init / lr_multiplier`` stored; ``activation`` is ``"linear"`` or ``"lrelu"`` (slope 0.2,
    gain sqrt 2).
    """

    def __init__(self, in_features: int, out_features: int, *,
                 activation: Literal["linear", "lrelu"] = "linear", lr_multiplier: float = 1.0,
                 bias_init: float = 0.0) -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_multiplier))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.activation == "lrelu" else x


class EqualConv2d(nn.Module):
    """A convolution with equalized learning rate (``weight * 1/sqrt(in k k)``), optionally after x2 FIR
    upsampling (``up``): StyleGAN2-ADA's ``Conv2dLayer`` without activation, as the resnet skip path uses
    it."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True,
                 up: bool = False) -> None:
        super().__init__()
        self.up = up
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        if self.up:
            x = upsample2d(x, self.resample_filter)
        w = self.weight * (self.weight_gain * gain)
        b = None if self.bias is None else self.bias * gain
        return F.conv2d(x, w.to(x.dtype), None if b is None else b.to(x.dtype), padding=self.padding)


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, *, demodulate: bool = True,
                     up_filter: Tensor | None = None) -> Tensor:
    """The modulated convolution: ``conv(x * s) * d`` with ``d_o = 1 / sqrt(sum_{i,k} (w_oik s_i)^2 + 1e-8)``.

    ``x`` ``(B, I, H, W)``, ``weight`` ``(O, I, k, k)``, ``styles`` ``(B, I)``. This is the unfused form
    (scale the activations, convolve with the shared weight, scale again), which equals a convolution with the
    per-sample weights ``w * s`` (demodulated). ``up_filter``: upsample x2 with that FIR filter first.
    Styles and demodulation coefficients are computed in fp32 whatever the autocast state.
    """
    with fp32(x):
        styles = styles.float()
        if demodulate:
            # demodulation cancels any per-sample scale of the styles: divide by the largest, for fp16
            styles = styles / styles.abs().amax(dim=1, keepdim=True).clamp_min(1e-8)
            w2 = weight.float().square().sum(dim=(2, 3))  # (O, I)
            dcoefs = (styles.square() @ w2.t() + 1e-8).rsqrt()  # (B, O)
    x = x * styles.to(x.dtype)[:, :, None, None]
    if up_filter is not None:
        x = upsample2d(x, up_filter)
    x = F.conv2d(x, weight.to(x.dtype), padding=weight.shape[-1] // 2)
    if demodulate:
        x = x * dcoefs.to(x.dtype)[:, :, None, None]
    return x


class NoiseInput(nn.Module):
    """Adds ``strength * noise`` with one ``(R, R)`` noise map per sample, shared by all channels.

    ``mode``: ``"random"`` draws fresh ``N(0, 1)`` noise (always in training), ``"const"`` uses the map drawn
    at build time (the buffer ``noise_const``, saved with the weights), ``"none"`` adds nothing. ``strength``
    is learned and starts at 0.
    """

    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.strength = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, mode: NoiseMode) -> Tensor:
        if mode == "none":
            return x
        if mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        else:
            noise = self.noise_const.to(x.dtype)[None, None]
        return x + noise * self.strength.to(x.dtype)


class SynthesisLayer(nn.Module):
    """One 3x3 modulated convolution of the synthesis network (``up``: x2 first), then noise, bias, lrelu.

    The style is ``affine(w)``, an equalized-lr linear layer from ``w`` whose bias starts at 1 (every input
    channel kept at first). ``gain`` multiplies the output (sqrt 1/2 in a resnet block's second layer).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *,
                 up: bool = False) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.noise = NoiseInput(resolution)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", fir_filter() if up else None, persistent=False)

    def forward(self, x: Tensor, w: Tensor, noise_mode: NoiseMode = "random", gain: float = 1.0) -> Tensor:
        with fp32(w):
            styles = self.affine(w.float())
        x = modulated_conv2d(x, self.weight, styles, up_filter=self.resample_filter)
        x = self.noise(x, noise_mode)
        return bias_lrelu(x, self.bias, LRELU_GAIN * gain)


class ToRGB(nn.Module):
    """A 1x1 modulated convolution to RGB without demodulation, plus bias (no activation).

    The style ``affine(w) / sqrt(in_channels)`` carries the equalized-lr gain of the 1x1 weight.
    """

    def __init__(self, in_channels: int, w_dim: int, img_channels: int = 3) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        with fp32(w):
            styles = self.affine(w.float()) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return x + self.bias.to(x.dtype)[None, :, None, None]

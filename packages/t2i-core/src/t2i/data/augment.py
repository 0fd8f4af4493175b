"""Augmentation of the training images as they are fed, in batches, on the training device.

Three independent options of the ``[data]`` config table, all off by default:

- ``data.random_crop = true``: the training split is cached at ``ceil(R * 76 / 64)`` pixels (the classic
  76 -> 64 of StackGAN and AttnGAN) and each image is a random ``R x R`` window of it.
- ``data.flip = true``: each image is mirrored left-right with probability 1/2. The caption is *not*
  changed, so a caption that says "left" describes the mirrored image wrongly half of the time. Fine
  for birds and flowers; refused on the Shapes data, whose captions state positions.
- ``data.jitter = s`` (0 <= s < 1): brightness, contrast and saturation each scaled by a factor drawn
  uniformly from ``[1 - s, 1 + s]`` per image (no hue change: captions name colours).

Crop and flip are one gather of uint8 pixels (cheap on CPU and GPU); jitter runs on the float batch.
The random numbers come from a ``torch.Generator`` the caller passes (the trainer passes its checkpointed
generator, so a resumed run draws the same augmentations as an uninterrupted one), drawn on the CPU
in a fixed order: crop offsets, flips, jitter factors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError

__all__ = ["CROP_RATIO", "BatchAugment", "load_resolution"]

CROP_RATIO = 76 / 64
_LUMA = (0.299, 0.587, 0.114)


def load_resolution(resolution: int, random_crop: bool) -> int:
    """The resolution the training split is cached at: ``ceil(R * 76 / 64)`` with random crops, else R."""
    return math.ceil(resolution * CROP_RATIO) if random_crop else resolution


class BatchAugment:
    """Random crop, flip and colour jitter of batches, as configured; identity when all are off.

    ``pixels(source, index, g, device)``: images ``index`` of a uint8 ``(N, L, L, 3)`` cache -> uint8
    ``(B, 3, R, R)`` crops, mirrored at random; ``colour(images, g)``: float ``(B, 3, R, R)`` in ``[-1, 1]``
    -> the same, jittered (in place).
    """

    def __init__(self, resolution: int, *, random_crop: bool = False, flip: bool = False, jitter: float = 0.0,
                 dataset: Any = None):
        if not 0.0 <= jitter < 1.0:
            raise UsageError(f"data.jitter must be in [0, 1), got {jitter}")
        from .shapes import Shapes

        if isinstance(dataset, Shapes) and (flip or random_crop):
            what = "data.flip would mirror images whose captions say 'left' and 'right'" if flip else \
                "data.random_crop needs a 76/64 larger cache, and Shapes renders only at powers of two"
            raise UsageError(f"{what}; turn it off for the shapes data set")
        self.resolution = resolution
        self.random_crop, self.flip, self.jitter = random_crop, flip, float(jitter)
        self.load_resolution = load_resolution(resolution, random_crop)

    @property
    def moves_pixels(self) -> bool:
        """Crop or flip is on (random numbers are drawn for them)."""
        return self.random_crop or self.flip

    def draw(self, batch: int, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Crop offsets ``(B, 2)`` (y, x) into ``size``-pixel images and mirror flags ``(B,)``, on the CPU."""
        r = self.resolution
        if size < r:
            raise ValueError(f"images of {size} px cannot be cropped to {r} px")
        if self.random_crop:
            offsets = torch.randint(0, size - r + 1, (batch, 2), generator=generator)
        else:
            offsets = torch.full((batch, 2), (size - r) // 2, dtype=torch.long)
        mirrored = torch.rand(batch, generator=generator) < 0.5 if self.flip else torch.zeros(batch, dtype=torch.bool)
        return offsets, mirrored

    def pixels(self, source: Tensor, index: Tensor, generator: torch.Generator, device: torch.device | str = "cpu",
               *, channels_last: bool = False) -> Tensor:
        """Images ``index`` of uint8 ``source (N, L, L, 3)``, cropped and mirrored as configured (taken whole
        when neither is on; nothing is drawn then): uint8 ``(B, 3, R, R)`` on ``device``.

        On the CPU each window is copied straight from ``source`` (a memory-mapped cache: no intermediate
        copy of the whole images) into a contiguous NCHW batch, unless ``channels_last`` asks for NHWC
        memory. On other devices the images are moved there and cut with one gather. Either way the
        pixels are the same; ``channels_last`` results are NCHW views of NHWC memory.
        """
        size = source.shape[1]
        if self.moves_pixels:
            offsets, mirrored = self.draw(len(index), size, generator)
        else:
            offsets = torch.zeros(len(index), 2, dtype=torch.long)
            mirrored = torch.zeros(len(index), dtype=torch.bool)
        if source.device.type == "cpu" and torch.device(device).type == "cpu" and not channels_last:
            return _windows_nchw(source, index, offsets, mirrored, self.resolution)
        images = source[index].to(device, non_blocking=True)
        if not self.moves_pixels and size == self.resolution:
            return images.permute(0, 3, 1, 2)
        return _windows_gather(images, offsets, mirrored, self.resolution).permute(0, 3, 1, 2)

    def colour(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Brightness, contrast and saturation jitter of float ``(B, 3, R, R)`` images in ``[-1, 1]``, in place.

        Brightness ``b``, then contrast ``c`` about the image's mean luma, then saturation ``s`` about each
        pixel's luma, composed into one affine map per image (luma is linear, so this is exact), clamped
        once at the end: ``x01 -> s c b x01 + (1 - s) c b luma(x01) + (1 - c) b mean(luma(x01))``.
        """
        if self.jitter <= 0:
            return images
        factors = 1 + self.jitter * (2 * torch.rand(images.shape[0], 3, generator=generator) - 1)
        brightness, contrast, saturation = factors.to(images.device, images.dtype, non_blocking=True).unbind(1)
        luma = _luma(images)  # of the [-1, 1] image
        mean01 = (luma.mean((1, 2)) + 1) / 2  # mean luma in [0, 1]
        a = saturation * contrast * brightness  # coefficients of x01, luma(x01) and 1
        k = (1 - saturation) * contrast * brightness
        c = (1 - contrast) * brightness * mean01
        shift = a + k + 2 * c - 1  # the same map written for x in [-1, 1]: a x + k luma(x) + shift
        offset = torch.addcmul(shift[:, None, None], luma, k[:, None, None])  # (B, R, R)
        torch.addcmul(offset[:, None], images, a[:, None, None, None], out=images)
        return images.clamp_(-1, 1)

    def __call__(self, source: Tensor, index: Tensor, generator: torch.Generator, device: torch.device | str = "cpu") -> Tensor:
        """What the trainer feeds: images ``index`` of uint8 ``source (N, L, L, 3)`` -> float ``(B, 3, R, R)``
        in ``[-1, 1]``, cropped, mirrored and jittered as configured."""
        pixels = self.pixels(source, index, generator, device).contiguous()
        return self.colour(pixels.float().div_(127.5).sub_(1.0), generator)


def _luma(images: Tensor) -> Tensor:
    """``(B, R, R)`` luma of ``(B, 3, R, R)`` images (ITU-R 601 weights), in three fused passes."""
    luma = torch.mul(images[:, 0], _LUMA[0])
    luma.add_(images[:, 1], alpha=_LUMA[1])
    return luma.add_(images[:, 2], alpha=_LUMA[2])


def _windows_nchw(source: Tensor, index: Tensor, offsets: Tensor, mirrored: Tensor, r: int) -> Tensor:
    """Per image, a numpy view (crop, transpose to CHW, mirror by a negative stride) copied into the batch."""
    src = source.numpy()
    out = np.empty((len(index), 3, r, r), np.uint8)
    for i, (j, (y, x), flip) in enumerate(zip(index.tolist(), offsets.tolist(), mirrored.tolist())):
        window = src[j, y : y + r, x : x + r].transpose(2, 0, 1)
        out[i] = window[:, :, ::-1] if flip else window
    return torch.from_numpy(out)


def _windows_gather(images: Tensor, offsets: Tensor, mirrored: Tensor, r: int) -> Tensor:
    """The same as one gather on the device (a GPU would launch a kernel per image otherwise)."""
    b, size = images.shape[0], images.shape[1]
    span = torch.arange(r)
    rows = offsets[:, :1] + span  # (B, R)
    cols = torch.where(mirrored[:, None], offsets[:, 1:] + span.flip(0), offsets[:, 1:] + span)
    index = (rows[:, :, None] * size + cols[:, None, :]).reshape(b, r * r).to(images.device, non_blocking=True)
    out = torch.gather(images.reshape(b, size * size, 3), 1, index[:, :, None].expand(b, r * r, 3))
    return out.reshape(b, r, r, 3)

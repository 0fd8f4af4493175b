"""The data feed: which real images, captions and noise each step trains on, reproducibly.

Epoch ``e`` visits the training images in a permutation seeded by ``(seed, e)``; the caption of each image
and the crop/flip/jitter draws come from one ``torch.Generator`` (``rng``), the noise from another
(``noise_rng``). Their states, the epoch and the position in it are :meth:`DataFeed.state_dict`, so a
resumed run draws exactly what an uninterrupted one would have drawn.

``train.batch_size`` is the global batch: each of ``W`` processes takes ``batch_size / W`` images per step
(:func:`process_batch`), and ``train.micro_batch`` only splits that share inside the step (gradient
accumulation, :class:`t2i.engine.step.GANStep`), so the feed, its random streams and its state do not
depend on it.

Several processes: rank ``r`` of ``W`` takes images ``perm[r::W]``, and the caption draws and noise rows
``r::W`` of those drawn for the global batch, so the union of the ranks' batches is one process's batch of
``W x`` the size.

The feed also holds the fixed sample sheet: ``SAMPLE_ROWS`` captions spread over the sample split and
``SAMPLE_COLUMNS`` noise vectors, the same for the whole run.
"""

from __future__ import annotations

from typing import Any

import torch

from ..data.augment import BatchAugment
from ..errors import UsageError
from ..interfaces import CaptionedImages

__all__ = ["DataFeed", "process_batch", "SAMPLE_ROWS", "SAMPLE_COLUMNS"]

SAMPLE_ROWS = 8  # test captions per grid
SAMPLE_COLUMNS = 8  # fixed noise vectors per caption
_EPOCH_SEED_STRIDE = 1_000_003  # epoch e's permutation is seeded by seed * this + e
_SAMPLE_SEED_OFFSET = 1_000_003  # the sample noise's generator is seeded by seed + this
_NOISE_SEED_OFFSET = 2_000_003  # the training noise's generator is seeded by seed + this


def process_batch(batch_size: int, world_size: int, micro_batch: int = 0) -> tuple[int, int]:
    """Each process's share of the global ``batch_size`` and the number of micro-batches it is split into
    (1 without accumulation); a one-line UsageError when either does not divide."""
    if batch_size % world_size:
        raise UsageError(f"train.batch_size {batch_size} (the global batch) does not split over {world_size} "
                         f"processes; use a multiple of {world_size}")
    share = batch_size // world_size
    if micro_batch == 0 or micro_batch == share:
        return share, 1
    where = f" ({batch_size} over {world_size} processes)" if world_size > 1 else ""
    if micro_batch > share or share % micro_batch:
        divisors = [m for m in range(1, share) if share % m == 0][-3:]
        raise UsageError(f"train.micro_batch {micro_batch} does not divide the {share} images per process{where}; "
                         f"use a divisor of {share} such as {', '.join(map(str, divisors)) or share}, "
                         "or 0 for no accumulation")
    return share, share // micro_batch


class DataFeed:
    """Batches of real images with one caption id each, and the noise for the generator. ``batch_size`` is
    this process's share of the global batch (:func:`process_batch`)."""

    def __init__(
        self,
        split: CaptionedImages,
        augment: BatchAugment,
        *,
        batch_size: int,
        seed: int,
        z_dim: int,
        device: torch.device,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        sample_split: CaptionedImages | None = None,
    ):
        self.split = split
        self.images = split.images  # uint8 (N, R, R, 3), stays where the data set put it
        self.caption_ids = split.caption_ids
        self.caption_counts = split.caption_counts
        self.augment = augment
        self.batch_size, self.seed, self.z_dim = batch_size, seed, z_dim
        self.device, self.channels_last = device, channels_last
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = len(split) // (batch_size * world_size)
        if self.batches_per_epoch < 1:
            raise UsageError(
                f"train split has {len(split)} images, fewer than one global batch of "
                f"{batch_size * world_size} ({batch_size} x {world_size} process(es)); lower --batch-size"
            )
        self.rng = torch.Generator().manual_seed(seed)
        self.noise_rng = torch.Generator().manual_seed(seed + _NOISE_SEED_OFFSET)
        self.epoch = 0
        self.position = 0  # batches consumed in the current epoch
        self._perm: torch.Tensor | None = None
        self.sample_captions, self.sample_noise = _sample_sheet(sample_split or split, z_dim, seed)

    @property
    def images_seen(self) -> int:
        """Real images shown to D so far, over all processes (drives schedules such as progressive growing)."""
        return (self.epoch * self.batches_per_epoch + self.position) * self.batch_size * self.world_size

    @property
    def epochs(self) -> float:
        """Passes over the training split so far (fractional)."""
        return self.epoch + self.position / self.batches_per_epoch

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Real images ``(B, 3, R, R)`` in [-1, 1] on the device, and one caption id per image."""
        if self.position >= self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
            self._perm = None
        if self._perm is None:
            g = torch.Generator().manual_seed(self.seed * _EPOCH_SEED_STRIDE + self.epoch)
            self._perm = torch.randperm(len(self.images), generator=g)[self.rank :: self.world_size]
        b = self.batch_size
        idx = self._perm[self.position * b : (self.position + 1) * b]
        self.position += 1
        # drawn for the global batch and sliced like the data, so W processes pick the captions one would
        draws = torch.rand(b * self.world_size, generator=self.rng)[self.rank :: self.world_size]
        choice = (draws * self.caption_counts[idx]).long()
        cid = self.caption_ids[idx, choice]
        # uint8 (B, 3, R, R): random crop / flip when configured (random numbers from self.rng), else whole
        real = self.augment.pixels(self.images, idx, self.rng, self.device, channels_last=self.channels_last)
        if not self.channels_last:
            real = real.contiguous()
        real = real.float().div_(127.5).sub_(1.0)
        real = self.augment.colour(real, self.rng)  # jitter (off: as is)
        return real, cid.to(self.device)

    def noise(self, n: int) -> torch.Tensor:
        """``n`` noise vectors for this rank: rows ``rank, rank + W, ...`` of the ``n x W`` vectors drawn for
        the global batch, the same slicing as the data's ``perm[rank::W]``."""
        z = torch.randn(n * self.world_size, self.z_dim, generator=self.noise_rng)
        return z[self.rank :: self.world_size].to(self.device)

    def caption_strings(self, cid: torch.Tensor) -> list[str]:
        """The caption text of each id (for terms that read the strings, such as a CLIP term)."""
        return [self.split.captions[i] for i in cid.tolist()]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position,
                "rng": self.rng.get_state(), "noise_rng": self.noise_rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._perm = None  # redrawn from (seed, epoch) at the next batch
        self.rng.set_state(state["rng"].cpu())
        if state.get("noise_rng") is not None:  # checkpoints of older versions drew the noise from ``rng``
            self.noise_rng.set_state(state["noise_rng"].cpu())


def _sample_sheet(split: CaptionedImages, z_dim: int, seed: int) -> tuple[list[str], torch.Tensor]:
    """``SAMPLE_ROWS`` captions spread evenly over ``split`` and ``SAMPLE_COLUMNS`` fixed noise vectors."""
    n = len(split)
    picks = [int(i * n / SAMPLE_ROWS) for i in range(min(SAMPLE_ROWS, n))]
    captions = [split.captions_of(i)[0] for i in picks]
    g = torch.Generator().manual_seed(seed + _SAMPLE_SEED_OFFSET)
    return captions, torch.randn(SAMPLE_COLUMNS, z_dim, generator=g)

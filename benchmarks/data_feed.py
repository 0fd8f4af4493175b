"""Data feed: 64x64 augmented training batches per second from the image cache (target >= 20,000 img/s).

What is timed is the trainer's own ``DataFeed.next_batch`` (``trainer.feed``) (a real ``Trainer`` is built on a ``folder``
data set), so the figure includes everything a training step waits for before G and D run: the epoch
permutation, the random caption per image, gathering rows of the memory-mapped uint8 cache, the copy to
the device, the random crop and flip (one uint8 gather), the conversion to float in [-1, 1] and the colour
jitter. Nothing else (no networks) is timed.

The data: ``--images`` synthetic JPEGs (smooth random pictures of 100x80 pixels, sidecar captions)
written to a temporary folder, or your own data set with ``--data KIND:PATH``. The image cache is built
first (its decode rate is printed too, threads = CPU cores) at ``ceil(64 * 76 / 64) = 76`` px for the
random crop; the feed is then timed for three settings: no augmentation, crop + flip, and crop + flip +
jitter 0.2. Each setting runs ``--warmup`` untimed batches, then ``--batches`` timed ones; it prints
images per wall-clock second and per CPU-second of this process (the steadier figure on a busy machine).

Run: ``.venv/bin/python benchmarks/data_feed.py`` (``--help`` for options); on a shared machine add
``--threads 1``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

TARGET = 20_000


def write_images(root: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:80, 0:100]
    for i in range(n):
        folder = root / f"class_{i % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        base, slope = rng.uniform(0, 255, 3), rng.uniform(-2, 2, (2, 3))
        pixels = np.clip(base + x[..., None] * slope[0] + y[..., None] * slope[1] + rng.normal(0, 8, (80, 100, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"img_{i:05d}.jpg", quality=90)
        (folder / f"img_{i:05d}.txt").write_text(f"a picture of class {i % 20}\nimage {i} of the benchmark\n")


def make_trainer(name: str, root: str, resolution: int, batch_size: int, device: str, run_dir: Path, **augment):
    from t2i.config import resolve
    from t2i.engine.trainer import Trainer

    tree = {
        "data": {"name": name, "resolution": resolution, "options": {"root": root, "quiet": True}, **augment},
        "generator": {"name": "dcgan", "options": {"ngf": 8}},
        "discriminator": {"name": "dcgan", "options": {"ndf": 8}},
        "text_encoder": {"name": "bow", "options": {"dim": 16}},
        "train": {"batch_size": batch_size, "steps": 1, "device": device},
        "eval": {"metrics": []},
    }
    return Trainer(resolve(tree), run_dir, quiet=True, tensorboard=False)


def time_feed(trainer, warmup: int, batches: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second) of ``trainer.feed.next_batch``."""
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        trainer.feed.next_batch()
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        real, _ = trainer.feed.next_batch()
    sync()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = batches * trainer.t.batch_size
    return n / wall, n / max(cpu, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="", help="KIND:PATH of a data set to read (default: synthetic JPEGs)")
    parser.add_argument("--images", type=int, default=2000, help="synthetic images to write")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        os.environ.setdefault("T2I_CACHE_DIR", str(tmp_path / "cache"))
        if args.data:
            name, _, root = args.data.partition(":")
        else:
            name, root = "folder", str(tmp_path / "images")
            t = time.perf_counter()
            write_images(Path(root), args.images)
            print(f"wrote {args.images} JPEGs (100x80) in {time.perf_counter() - t:.1f} s")

        from t2i.data.augment import load_resolution
        from t2i.plugins import registry

        dataset = registry("datasets").create(name, {"root": root, "quiet": True})
        load_res = load_resolution(args.resolution, True)
        for split, res in (("train", load_res), ("train", args.resolution), ("test", args.resolution)):
            t = time.perf_counter()
            cache = dataset.cache(split, res) if hasattr(dataset, "cache") else None
            seconds = time.perf_counter() - t
            if cache is not None and cache.built:
                print(f"image cache {split} at {res} px: {cache.count} images decoded in {seconds:.1f} s "
                      f"({cache.count / seconds:.0f} img/s, {os.cpu_count()} threads): {cache.images_path}")

        print(f"\nfeed of {args.resolution}x{args.resolution} batches of {args.batch_size}, device {args.device}, "
              f"torch threads {torch.get_num_threads()}, {args.batches} timed batches")
        print(f"| augmentation | img/s (wall) | img/CPU-s | target {TARGET:,} |")
        print("|---|---|---|---|")
        settings = (("none", {}), ("crop 76->64 + flip", {"random_crop": True, "flip": True}),
                    ("crop + flip + jitter 0.2", {"random_crop": True, "flip": True, "jitter": 0.2}))
        for label, augment in settings:
            trainer = make_trainer(name, root, args.resolution, args.batch_size, args.device, tmp_path / f"run-{len(label)}", **augment)
            wall, cpu = time_feed(trainer, args.warmup, args.batches)
            print(f"| {label} | {wall:,.0f} | {cpu:,.0f} | {'met' if wall >= TARGET else 'not met'} |", flush=True)
        print(f"\n{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, "
              f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    sys.exit(main())

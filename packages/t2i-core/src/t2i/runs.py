"""Library functions behind ``t2i run`` and ``t2i sample``, usable from a notebook just the same.

    from t2i.runs import configure, train, Sampler
    cfg = configure(overrides={"train": {"steps": 100}})
    result = train(cfg, "runs/demo")
    Sampler.load("runs/demo").grid(["a small red circle in the center on a black background"], n=8)
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from .config import ExperimentConfig, layer, load_toml, resolve
from .config_tree import flatten
from .engine.checkpoint import latest_checkpoint, load_checkpoint, sampling_weights
from .engine.components import build_generator, build_text_encoder
from .data.splits import load_split
from .engine.grid import image_grid
from .device import pick_device
from .engine.trainer import RunResult, Trainer
from .errors import UsageError
from .interfaces import Generator, TextEncoder

if TYPE_CHECKING:
    from .engine.distributed import DistContext

__all__ = ["configure", "resume_config", "new_run_dir", "train", "Sampler", "evaluate_checkpoint", "RESUMABLE_KEYS"]

# What may change when a run is resumed: when to stop, how often to write, and where to compute.
RESUMABLE_KEYS = frozenset(
    f"train.{k}" for k in ("steps", "epochs", "minutes", "log_every", "sample_every", "checkpoint_every", "keep_checkpoints", "device")
)


def configure(config: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Defaults < TOML file ``config`` < ``overrides`` (a raw tree, e.g. from CLI flags)."""
    raw = load_toml(config) if config else {}
    return resolve(layer(raw, overrides or {}))


def resume_config(run_dir: str | Path, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """The saved config of ``run_dir`` with ``overrides`` applied; refuses changes to what was trained."""
    run = Path(run_dir)
    if not (run / "config.toml").is_file():
        raise UsageError(f"{run} is not a t2i run folder (no config.toml); pass the folder a previous 't2i run' wrote")
    if latest_checkpoint(run / "checkpoints") is None:
        raise UsageError(f"{run} has no checkpoint to resume from; start it again with t2i run --config {run / 'config.toml'}")
    saved = resolve(load_toml(run / "config.toml"))
    wanted = resolve(layer(load_toml(run / "config.toml"), overrides or {}))
    before, after = flatten(saved.to_dict(), empty_tables=False), flatten(wanted.to_dict(), empty_tables=False)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k) and k not in RESUMABLE_KEYS)
    if changed:
        k = changed[0]
        raise UsageError(
            f"cannot resume {run} with a different {k} (saved {before.get(k)!r}, given {after.get(k)!r}); "
            f"only {', '.join(sorted(x.split('.', 1)[1] for x in RESUMABLE_KEYS))} may change on resume"
        )
    return wanted


def new_run_dir(cfg: ExperimentConfig, out: str | Path | None = None, root: str | Path = "runs") -> Path:
    """``out`` if given (refused if it already holds a run), else ``runs/<date>-<time>-<generator>-<disc>``."""
    if out is not None:
        path = Path(out)
        if (path / "config.toml").exists() or latest_checkpoint(path / "checkpoints") is not None:
            raise UsageError(f"{path} already holds a run; continue it with --resume {path} or choose another --out")
        if path.exists() and not path.is_dir():
            raise UsageError(f"--out {path} is a file, not a folder")
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{cfg.generator.name}-{cfg.discriminator.name}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def train(
    cfg: ExperimentConfig,
    run_dir: str | Path | Callable[[], str | Path],
    *,
    resume: bool = False,
    quiet: bool = False,
    tensorboard: bool = True,
    on_start: Callable[[Trainer, DistContext], None] | None = None,
) -> RunResult:
    """Train (or, with ``resume``, continue training) ``cfg`` in ``run_dir``: what ``t2i run`` and every trial
    of ``t2i study`` do.

    Started by torchrun (``torchrun --nproc_per_node=N script.py``), each process joins the process group
    and trains its share of every batch; all of them return the same status, rank 0 writes the run folder.
    ``run_dir`` may be a function that names a new folder (``lambda: new_run_dir(cfg)``): rank 0 calls it
    and every rank uses its answer. ``on_start(trainer, ctx)`` runs on every rank once the trainer is built
    (restored, on resume) and before the first step, e.g. to announce the run (``ctx.is_main``: rank 0).
    A failed collective raises :class:`t2i.engine.distributed.RankFailure`.
    """
    from .engine import distributed

    with distributed.session(cfg.train.device) as ctx:
        folder = distributed.decided_by_rank_zero(run_dir) if callable(run_dir) else run_dir
        trainer = Trainer(cfg, folder, resume=resume, quiet=quiet, rank=ctx.rank, world_size=ctx.world_size,
                          tensorboard=tensorboard)
        if on_start is not None:
            on_start(trainer, ctx)
        return trainer.fit()


@dataclasses.dataclass
class Sampler:
    """A trained generator and its text encoder, loaded from a run folder or a checkpoint folder.

    ``weights``: which saved generator was loaded: ``generator_ema`` (the EMA of G, when the run kept one
    and ``ema`` was asked for) or ``generator``."""

    generator: Generator
    text_encoder: TextEncoder
    config: ExperimentConfig
    checkpoint: Path
    device: torch.device
    weights: str = "generator"

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto", ema: bool = True) -> "Sampler":
        p = Path(path)
        if not p.exists():
            raise UsageError(f"{p} does not exist; pass a run folder (runs/<name>) or one of its checkpoints/step_* folders")
        ckpt_dir = p if (p / "meta.json").is_file() else latest_checkpoint(p / "checkpoints")
        if ckpt_dir is None:
            raise UsageError(f"{p} is neither a t2i run folder with checkpoints nor a checkpoint folder")
        ckpt = load_checkpoint(ckpt_dir)
        cfg = resolve(ckpt.meta["config"])
        dev = pick_device(device)
        encoder, _ = build_text_encoder(cfg)
        encoder.load_extra_state(ckpt.meta.get("text_encoder", {}))
        encoder.load_state_dict(ckpt.weights["text_encoder"])
        generator, _ = build_generator(cfg, encoder.dim)
        key = sampling_weights(ckpt.weights, ema=ema)
        generator.load_state_dict(ckpt.weights[key])
        return cls(generator.to(dev).eval(), encoder.to(dev).eval(), cfg, ckpt_dir, dev, key)

    @torch.no_grad()
    def generate(self, captions: list[str], n: int = 1, seed: int = 0) -> torch.Tensor:
        """``n`` images per caption, float ``(len(captions) * n, 3, R, R)`` in [-1, 1], caption-major."""
        if not captions or any(not c.strip() for c in captions):
            raise UsageError("give at least one non-empty caption")
        if n < 1:
            raise UsageError(f"-n must be >= 1, got {n}")
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(len(captions) * n, self.generator.z_dim, generator=g).to(self.device)
        text = self.text_encoder.encode(captions).to(self.device).float().repeat_interleave(n, 0)
        return self.generator(z, text).float().cpu()

    def grid(self, captions: list[str], n: int = 16, seed: int = 0):
        """A PIL grid: one caption -> a square-ish grid under the caption; several -> one row each."""
        images = self.generate(captions, n, seed)
        if len(captions) == 1:
            return image_grid(images, columns=math.ceil(math.sqrt(n)), title=captions[0])
        from .engine.grid import caption_grid

        return caption_grid(images, captions, columns=n)


def evaluate_checkpoint(
    path: str | Path,
    *,
    metrics: list[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    split: str | None = None,
    seed: int = 0,
    ema: bool = True,
    device: str = "auto",
    save_stats: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of a trained generator: ``{"values": {...}, "protocol": {...}, ...}`` (what ``t2i eval`` prints).

    ``save_stats``: also write ``mu``/``sigma`` of the reference split (pytorch-fid's ``.npz``, the network and
    resize ``fid`` uses) there, for ``fid`` with ``reference_stats=PATH`` or other tools.
    """
    from . import __version__
    from .engine.components import build_dataset
    from .engine.evaluate import build_metrics, evaluate

    sampler = Sampler.load(path, device=device, ema=ema)
    cfg = sampler.config
    names = list(metrics) if metrics else list(cfg.eval.metrics)
    if not names:
        raise UsageError("no metrics to compute: pass --metric NAME (see t2i list metrics)")
    unused = set(options or {}) - set(names)
    if unused:
        raise UsageError(f"options given for {', '.join(sorted(unused))}, which is not among the metrics computed")
    merged = {n: {**cfg.eval.options.get(n, {}), **(options or {}).get(n, {})} for n in names}
    built = build_metrics(names, {n: o for n, o in merged.items() if o})
    dataset, _ = build_dataset(cfg)
    ref_split = split or cfg.eval.split
    if ref_split not in dataset.splits:
        raise UsageError(f"data set '{cfg.data.name}' has no split '{ref_split}'; splits: {', '.join(dataset.splits)}")
    reference = load_split(dataset, ref_split, cfg.data.resolution)
    values, protocols = evaluate(built, sampler.generator, sampler.text_encoder, reference, sampler.device, seed=seed)
    saved = {}
    if save_stats is not None:
        from .metrics.compare import save_stats_with
        from .metrics.image_sets import split_images

        saved["saved_stats"] = str(save_stats_with(built, split_images(reference), save_stats, device, merged.get("fid")))
    return {
        **saved,
        "checkpoint": str(sampler.checkpoint),
        "weights": sampler.weights,
        "split": ref_split,
        "seed": seed,
        "values": values,
        "protocol": protocols,
        "versions": {"t2i": __version__, "torch": torch.__version__},
    }

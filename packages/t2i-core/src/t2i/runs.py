"""Library functions behind ``t2i run`` and ``t2i sample``, usable from a notebook just the same.

    from t2i.runs import configure, train, Sampler
    cfg = configure(overrides={"train": {"steps": 100}})
    result = train(cfg, "runs/demo")
    Sampler.load("runs/demo").grid(["a small red circle in the center on a black background"], n=8)
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import torch

from .config import ExperimentConfig, layer, load_toml, resolve
from .config_tree import flatten
from .engine.checkpoint import latest_checkpoint, load_checkpoint, sampling_weights
from .engine.components import build_generator, build_text_encoder
from .engine.generate import encode_captions, generate_images, uses_words
from .data.splits import load_split
from .engine.grid import image_grid
from .device import pick_device
from .engine.trainer import RunResult, Trainer
from .errors import UsageError
from .interfaces import Generator, TextEncoder, WordFeatures

if TYPE_CHECKING:
    from .engine.distributed import DistContext

__all__ = ["configure", "resume_config", "new_run_dir", "train", "Sampler", "save_gif", "evaluate_checkpoint", "RESUMABLE_KEYS"]

# What may change when a run is resumed: when to stop, how often to write, where to compute, and the loggers
# (any log.* key: RESUMABLE_PREFIXES).
RESUMABLE_PREFIXES = ("log.",)
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
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k) and k not in RESUMABLE_KEYS
                     and not k.startswith(RESUMABLE_PREFIXES))
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
    """A trained generator and its text encoder, loaded from a run folder, a checkpoint folder or an exported
    model folder (:meth:`load`), or from the Hugging Face Hub (:meth:`from_pretrained`).

    ``weights``: which saved generator was loaded: ``generator_ema`` (the EMA of G, when the run kept one
    and ``ema`` was asked for) or ``generator``.

    Image ``j`` of a request (caption-major: sample ``k`` of caption ``i`` is ``j = i * n + k``) is drawn from
    the noise of seed ``seed + j``, whatever the batch size, so ``t2i sample SRC CAPTION -n 1 --seed S``
    draws again the image that a folder's ``captions.jsonl`` records with seed ``S``.
    """

    generator: Generator
    text_encoder: TextEncoder
    config: ExperimentConfig
    checkpoint: Path
    device: torch.device
    weights: str = "generator"

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto", ema: bool = True) -> "Sampler":
        """From a run folder (its latest checkpoint), a ``checkpoints/step_*`` folder or an exported model
        folder (:func:`t2i.hub.export_model`)."""
        from .hub import check_installed

        p = Path(path)
        if not p.exists():
            raise UsageError(f"{p} does not exist; pass a run folder (runs/<name>), one of its checkpoints/step_* folders "
                             f"or an exported model folder")
        ckpt_dir = p if (p / "meta.json").is_file() else latest_checkpoint(p / "checkpoints")
        if ckpt_dir is None:
            raise UsageError(f"{p} is neither a t2i run folder with checkpoints nor a checkpoint folder")
        ckpt = load_checkpoint(ckpt_dir)
        check_installed(ckpt.meta)
        cfg = resolve(ckpt.meta["config"])
        dev = pick_device(device)
        key = sampling_weights(ckpt.weights, ema=ema)
        if key not in ckpt.weights:
            held = ", ".join(sorted(k for k in ckpt.weights if k.startswith("generator"))) or "no generator"
            raise UsageError(f"{ckpt_dir} holds {held}, not {key}; sample without --no-ema (or export with --no-ema)")
        encoder, _ = build_text_encoder(cfg)
        encoder.load_extra_state(ckpt.meta.get("text_encoder", {}))
        encoder.load_state_dict(ckpt.weights["text_encoder"])
        generator, _ = build_generator(cfg, encoder.dim, word_dim=encoder.word_dim)
        generator.load_state_dict(ckpt.weights[key])
        return cls(generator.to(dev).eval(), encoder.to(dev).eval(), cfg, ckpt_dir, dev, key)

    @classmethod
    def from_pretrained(cls, name: str | Path, *, device: str = "auto", ema: bool = True, revision: str | None = None,
                        cache_dir: str | Path | None = None) -> "Sampler":
        """A shared model: ``name`` a local folder (an export, or anything :meth:`load` takes) or a Hugging Face
        Hub repo, ``"ORG/NAME"`` or ``"hf://ORG/NAME"``, fetched into the HF cache (``cache_dir``, else
        ``HF_HUB_CACHE`` / ``HF_HOME``); with ``HF_HUB_OFFLINE=1`` it is read from the cache only. A plugin the
        model needs and that is not installed is a one-line :class:`UsageError` naming its distribution."""
        from .hub import pretrained_folder

        return cls.load(pretrained_folder(name, revision=revision, cache_dir=cache_dir), device=device, ema=ema)

    @property
    def run_dir(self) -> Path | None:
        """The run folder the weights come from, or ``None`` (an exported model, a Hub snapshot)."""
        run = self.checkpoint.parent.parent
        return run if self.checkpoint.parent.name == "checkpoints" and (run / "config.toml").is_file() else None

    def noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """``(len(seeds), z_dim)`` standard-normal noise on the CPU, row ``i`` drawn from seed ``seeds[i]`` alone."""
        z_dim = self.generator.z_dim
        rows = [torch.randn(1, z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        return torch.cat(rows) if rows else torch.empty(0, z_dim)

    def check_truncation(self, truncation: float | None) -> None:
        """Refuse ``truncation`` when the generator declares no truncation trick, or when it is not in (0, 1]."""
        if truncation is None:
            return
        if not getattr(self.generator, "supports_truncation", False):
            raise UsageError(f"generator '{self.config.generator.name}' has no truncation trick (it does not declare "
                             f"supports_truncation); sample without --truncation")
        if not (math.isfinite(truncation) and 0.0 < truncation <= 1.0):
            raise UsageError(f"--truncation must be in (0, 1], got {truncation}")

    @torch.no_grad()
    def render(self, z: torch.Tensor, text: torch.Tensor, truncation: float | None = None,
               words: WordFeatures | None = None) -> torch.Tensor:
        """The generator on noise ``z`` and text embeddings ``text`` (and word features, for a generator that
        uses them): its full-resolution float images in [-1, 1], on the CPU."""
        z, text = z.to(self.device), text.to(self.device).float()
        words = None if words is None else words.to(self.device)
        if truncation is None:
            return generate_images(self.generator, z, text, words).float().cpu()
        self.check_truncation(truncation)
        try:
            return generate_images(self.generator, z, text, words, truncation=truncation).float().cpu()
        except ValueError as exc:  # the generator's own range for psi
            raise UsageError(f"--truncation {truncation}: {exc}") from None

    @torch.no_grad()
    def batches(self, captions: Sequence[str], n: int = 1, seed: int = 0, *, batch_size: int = 64,
                truncation: float | None = None) -> Iterator[tuple[int, list[str], torch.Tensor]]:
        """``(index of the first image, its captions, images)`` for each batch of at most ``batch_size`` of the
        ``len(captions) * n`` images, caption-major."""
        _check_request(captions, n, batch_size)
        self.check_truncation(truncation)
        total = len(captions) * n
        for start in range(0, total, batch_size):
            indices = range(start, min(start + batch_size, total))
            batch = [captions[j // n] for j in indices]
            distinct = list(dict.fromkeys(batch))
            position = {c: i for i, c in enumerate(distinct)}
            embeddings, words = encode_captions(self.text_encoder, distinct, self.device,
                                                words=uses_words(self.generator))
            rows = torch.tensor([position[c] for c in batch], device=embeddings.device)
            yield start, batch, self.render(self.noise([seed + j for j in indices]), embeddings[rows], truncation,
                                            None if words is None else words[rows])

    def generate(self, captions: list[str], n: int = 1, seed: int = 0, *, batch_size: int = 64,
                 truncation: float | None = None) -> torch.Tensor:
        """``n`` images per caption, float ``(len(captions) * n, 3, R, R)`` in [-1, 1], caption-major."""
        return torch.cat([images for _, _, images in self.batches(captions, n, seed, batch_size=batch_size,
                                                                  truncation=truncation)])

    def grid(self, captions: list[str], n: int = 16, seed: int = 0, *, batch_size: int = 64,
             truncation: float | None = None):
        """A PIL grid: one caption -> a square-ish grid under the caption; several -> one row each."""
        images = self.generate(captions, n, seed, batch_size=batch_size, truncation=truncation)
        if len(captions) == 1:
            return image_grid(images, columns=math.ceil(math.sqrt(n)), title=captions[0])
        from .engine.grid import caption_grid

        return caption_grid(images, captions, columns=n)

    def write_images(self, folder: str | Path, captions: list[str], n: int = 1, seed: int = 0, *, batch_size: int = 64,
                     truncation: float | None = None, on_batch: Callable[[int, int], None] | None = None) -> Path:
        """One PNG per image (``00000.png``, ...) in the new folder ``folder``, and ``captions.jsonl``: one
        ``{"image", "caption", "seed", "caption_index", "sample"}`` per image, the file ``t2i eval FOLDER
        --captions`` and outside scorers read. ``on_batch(done, total)`` after each batch. The folder is
        written whole or not at all; an existing non-empty one is refused."""
        from PIL import Image

        from .engine.grid import to_uint8
        from .hub import atomic_folder

        _check_request(captions, n, batch_size)
        self.check_truncation(truncation)
        total = len(captions) * n
        width = max(5, len(str(total - 1)))
        records: list[dict[str, Any]] = []
        with atomic_folder(folder, what="images") as tmp:
            for start, batch, images in self.batches(captions, n, seed, batch_size=batch_size, truncation=truncation):
                for j, caption, pixels in zip(range(start, start + len(batch)), batch, to_uint8(images)):
                    name = f"{j:0{width}d}.png"
                    Image.fromarray(pixels.numpy()).save(tmp / name, format="PNG")
                    records.append({"image": name, "caption": caption, "seed": seed + j, "caption_index": j // n,
                                    "sample": j % n})
                if on_batch is not None:
                    on_batch(len(records), total)
            (tmp / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        return Path(folder)

    @torch.no_grad()
    def interpolate(self, captions: list[str], frames: int = 24, seed: int = 0, *, batch_size: int = 64,
                    truncation: float | None = None) -> torch.Tensor:
        """``frames`` images from one end to the other, float ``(frames, 3, R, R)``: between two captions (the
        noise of ``seed`` fixed, their text embeddings mixed linearly), or for one caption between the noise of
        ``seed`` and of ``seed + 1`` (spherical interpolation, which keeps the noise's norm typical)."""
        _check_request(captions, 1, batch_size)
        if len(captions) not in (1, 2):
            raise UsageError(f"interpolation goes between two captions, or two noise vectors of one caption; "
                             f"got {len(captions)} captions")
        if frames < 2:
            raise UsageError(f"--frames must be >= 2, got {frames}")
        self.check_truncation(truncation)
        t = torch.linspace(0.0, 1.0, frames)[:, None]
        word_model = uses_words(self.generator)
        if word_model and len(captions) == 2:
            raise UsageError(f"generator '{self.config.generator.name}' reads word features, which do not mix "
                             f"between two captions; interpolate the noise of one caption instead")
        embeddings, words = encode_captions(self.text_encoder, captions, "cpu", words=word_model)
        if len(captions) == 2:
            z = self.noise([seed]).expand(frames, -1)
            text = torch.lerp(embeddings[0:1].expand(frames, -1), embeddings[1:2].expand(frames, -1), t)
        else:
            a, b = self.noise([seed, seed + 1])
            z, text = _slerp(a, b, t), embeddings.expand(frames, -1)
        every = None if words is None else words[torch.zeros(frames, dtype=torch.long)]
        return torch.cat([self.render(z[i:i + batch_size], text[i:i + batch_size], truncation,
                                      None if every is None else every[i:i + batch_size])
                          for i in range(0, frames, batch_size)])


def _check_request(captions: Sequence[str], n: int, batch_size: int) -> None:
    if not captions or any(not isinstance(c, str) or not c.strip() for c in captions):
        raise UsageError("give at least one non-empty caption")
    if n < 1:
        raise UsageError(f"-n must be >= 1, got {n}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from ``a`` to ``b`` (vectors) at the fractions ``t`` ``(F, 1)``: ``(F, dim)``."""
    omega = torch.arccos((a / a.norm() * b / b.norm()).sum().clamp(-1.0, 1.0))
    if omega.abs() < 1e-6:
        return torch.lerp(a[None], b[None], t)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def save_gif(images: torch.Tensor, path: str | Path, *, frame_ms: int = 80, min_size: int = 128,
             bounce: bool = True) -> Path:
    """Float images ``(F, 3, R, R)`` as an endlessly looping animated GIF at ``path`` (written atomically),
    each frame enlarged (nearest) to at least ``min_size`` px; ``bounce`` plays it forward then back."""
    from PIL import Image

    from .engine.grid import to_uint8
    from .fileio import atomic_path

    pixels = to_uint8(images).numpy()
    scale = max(1, math.ceil(min_size / pixels.shape[1]))
    frames = [Image.fromarray(p).resize((p.shape[1] * scale, p.shape[0] * scale), Image.NEAREST) for p in pixels]
    if bounce and len(frames) > 2:
        frames += frames[-2:0:-1]
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        frames[0].save(f, format="GIF", save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return Path(path)


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

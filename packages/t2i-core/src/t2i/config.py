"""The experiment configuration: one typed tree, loadable from TOML, every field settable from the CLI.

Tables merge: a file that sets ``[loss.terms] feature_matching = 0.01`` keeps the default
``matching_aware = 1.0``; a weight of 0 turns a term off.

Precedence: defaults < ``--config FILE`` < dedicated CLI flags < ``--set section.key=value``.
Component options (``[generator.options]``, ``-G key=value``) are checked against the component's own
config dataclass when the component is built, and written back in full (defaults included) to the run's
``config.toml``, so ``t2i run --config runs/X/config.toml`` reproduces run X.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import tomli_w

from .errors import ConfigError, UsageError
from .options import build_config, config_to_dict

__all__ = [
    "ComponentConfig",
    "DataConfig",
    "LossConfig",
    "TrainConfig",
    "EvalConfig",
    "AugmentConfig",
    "ExperimentConfig",
    "load_toml",
    "set_path",
    "resolve",
    "save_toml",
]


DEFAULT_STEPS = 5000  # the default recipe's length: about 9 minutes on 2 CPU cores at 32 px


@dataclass
class ComponentConfig:
    """A registered component by name, with its options (validated by the component's config dataclass)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    name: str = field(default="shapes", metadata={"help": "registered data set"})
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "the data set's own options"})
    resolution: int = field(default=32, metadata={"help": "image side in pixels"})
    train_split: str = field(default="train", metadata={"help": "split to train on"})
    sample_split: str = field(default="test", metadata={"help": "split whose captions the sample grids show"})
    # augmentation of the training images as they are fed (t2i.data.augment); D-side DiffAugment is [augment]
    random_crop: bool = field(default=False, metadata={"help": "train on random RxR crops of images cached at ceil(R*76/64)"})
    flip: bool = field(default=False, metadata={"help": "mirror training images at random (captions saying 'left' then lie half the time)"})
    jitter: float = field(default=0.0, metadata={"help": "brightness/contrast/saturation jitter strength in [0, 1) (0: off)"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"data.jitter must be in [0, 1), got {self.jitter}")


@dataclass
class LossConfig:
    adversarial: str = field(default="hinge", metadata={"help": "adversarial loss (a registered loss with role 'adversarial')"})
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "options of the adversarial loss"})
    terms: dict[str, float] = field(
        default_factory=lambda: {"matching_aware": 1.0},
        metadata={"help": "extra loss terms and their weights, e.g. {matching_aware = 1.0}"},
    )
    term_options: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={"help": "options per term"})


@dataclass
class TrainConfig:
    batch_size: int = field(default=64, metadata={"help": "images per step and process (global batch: x the number of processes)"})
    lr_g: float = field(default=2e-4, metadata={"help": "generator learning rate"})
    lr_d: float = field(default=2e-4, metadata={"help": "discriminator (and trainable text encoder) learning rate"})
    betas: tuple[float, float] = field(default=(0.0, 0.9), metadata={"help": "Adam betas"})
    d_steps: int = field(default=1, metadata={"help": "discriminator steps per generator step"})
    grad_clip: float = field(default=0.0, metadata={"help": "clip each network's gradient norm to this (0: off)"})
    schedule: Literal["constant", "cosine_restarts", "linear"] = field(
        default="constant", metadata={"help": "learning-rate schedule"}
    )
    t0: int = field(default=1000, metadata={"help": "cosine_restarts: steps in the first cycle (T_0)"})
    t_mult: int = field(default=1, metadata={"help": "cosine_restarts: cycle length multiplier (T_mult)"})
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(
        default="fp32", metadata={"help": "mixed precision: bf16 (CPU or CUDA), fp16 (CUDA, with a grad scaler), auto"}
    )
    ema: float = field(default=0.0, metadata={"help": "EMA decay of G's weights for samples and metrics (0: off)"})
    seed: int = field(default=0, metadata={"help": "seed of weights, data order and noise"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N or mps"})
    channels_last: bool = field(default=False, metadata={"help": "channels_last memory format for G and D"})
    compile: bool = field(default=False, metadata={"help": "torch.compile G and D"})
    sync_bn: bool = field(
        default=False,
        metadata={"help": "multi-GPU: batch norm uses the statistics of the global batch (SyncBatchNorm; CUDA only)"},
    )
    scale_lr: bool = field(
        default=False,
        metadata={"help": "multi-process: multiply lr_g and lr_d by the number of processes (linear scaling rule)"},
    )
    steps: int | None = field(default=None, metadata={"help": f"stop after this many generator steps (default {DEFAULT_STEPS} when no stop condition is set)"})
    epochs: float | None = field(default=None, metadata={"help": "stop after this many passes over the training split"})
    minutes: float | None = field(default=None, metadata={"help": "stop after this much training time"})
    log_every: int = field(default=100, metadata={"help": "steps between metrics.jsonl lines"})
    sample_every: int = field(default=1000, metadata={"help": "steps between sample grids (0: only at the end)"})
    checkpoint_every: int = field(default=1000, metadata={"help": "steps between checkpoints (0: only at the end)"})
    keep_checkpoints: int = field(default=3, metadata={"help": "keep the last K checkpoints"})

    def __post_init__(self) -> None:
        positive = {"batch_size": self.batch_size, "d_steps": self.d_steps, "t0": self.t0, "t_mult": self.t_mult,
                    "log_every": self.log_every, "keep_checkpoints": self.keep_checkpoints}
        for key, value in positive.items():
            if value < 1:
                raise ValueError(f"train.{key} must be >= 1, got {value}")
        for key in ("lr_g", "lr_d"):
            if getattr(self, key) <= 0:
                raise ValueError(f"train.{key} must be > 0, got {getattr(self, key)}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"train.betas must be in [0, 1), got {self.betas}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"train.ema must be in [0, 1), got {self.ema}")
        if self.grad_clip < 0 or self.sample_every < 0 or self.checkpoint_every < 0:
            raise ValueError("train.grad_clip, sample_every and checkpoint_every must be >= 0")
        for key in ("steps", "epochs", "minutes"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"train.{key} must be > 0, got {value}")


@dataclass
class EvalConfig:
    metrics: list[str] = field(
        default_factory=lambda: ["shapes_accuracy", "diversity"],
        metadata={"help": "registered metrics computed at the end of the run (and every eval.every steps)"},
    )
    options: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={"help": "options per metric"})
    every: int = field(default=0, metadata={"help": "steps between evaluations during training (0: only at the end)"})
    split: str = field(default="test", metadata={"help": "reference split the metrics compare against"})

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError(f"eval.every must be >= 0, got {self.every}")


@dataclass
class AugmentConfig:
    """Differentiable augmentation of D's inputs (DiffAugment) and its adaptive probability (ADA); see t2i.augment."""

    policy: str = field(default="", metadata={"help": "DiffAugment ops applied to real and fake images before D, in "
                                                      "order, e.g. 'translation,color,cutout' ('' = off)"})
    p: float = field(default=1.0, metadata={"help": "probability of each op per image (ADA's starting value)"})
    ada_target: float = field(default=0.0, metadata={"help": "ADA: target of E[sign(D(real))], e.g. 0.6 (0 = fixed p)"})
    ada_interval: int = field(default=4, metadata={"help": "ADA: generator steps between adjustments of p"})
    ada_speed: int = field(default=500_000, metadata={"help": "ADA: real images over which p can move from 0 to 1"})

    def __post_init__(self) -> None:
        from .augment import parse_policy  # the ops live with their code

        parse_policy(self.policy)
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"augment.p must be in [0, 1], got {self.p}")
        if not 0.0 <= self.ada_target < 1.0:
            raise ValueError(f"augment.ada_target must be in [0, 1), got {self.ada_target}")
        if self.ada_interval < 1 or self.ada_speed < 1:
            raise ValueError("augment.ada_interval and augment.ada_speed must be >= 1")
        if self.ada_target > 0 and not self.policy.strip():
            raise ValueError("augment.ada_target is set but augment.policy is empty: name the ops to adapt")


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    # The default recipe (chosen by the study in examples/studies/default-recipe.md): a DCGAN generator with
    # conditional batch norm, a spectral-norm DCGAN discriminator whose head both tiles the text over the
    # 4x4 map (sees where the object is) and projects it on pooled features (sees colour and shape).
    text_encoder: ComponentConfig = field(default_factory=lambda: ComponentConfig("bow"))
    generator: ComponentConfig = field(
        default_factory=lambda: ComponentConfig("dcgan", {"ngf": 32, "conditioning": "cbn"})
    )
    discriminator: ComponentConfig = field(
        default_factory=lambda: ComponentConfig(
            "dcgan", {"ndf": 32, "norm": "none", "spectral_norm": True, "conditioning": "hybrid"}
        )
    )
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML config; a missing file or a syntax error is a :class:`UsageError`."""
    p = Path(path)
    if p.is_dir() and (p / "config.toml").is_file():
        p = p / "config.toml"
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"config file not found: {p}") from None
    except IsADirectoryError:
        raise UsageError(f"config path is a folder without config.toml: {p}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {p} is not valid TOML: {exc}") from None


def set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``raw["a"]["b"]["c"] = value`` for ``dotted = "a.b.c"``, creating tables as needed."""
    keys = [k.strip() for k in dotted.split(".")]
    if not all(keys):
        raise ConfigError(f"--set {dotted}={value}: expected section.key=value")
    node = raw
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{'.'.join(keys[: i + 1])}' is a value, not a table")
        node = child
    node[keys[-1]] = value


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two raw config trees (tables merge, values replace)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve(raw: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Raw tree (TOML values or CLI strings) -> a validated :class:`ExperimentConfig`.

    A component renamed without resetting its options keeps options meant for the old one; that fails
    later, naming the option, when the component is built.
    """
    cfg = build_config(ExperimentConfig, merge(_defaults(raw or {}), raw or {}))
    t = cfg.train
    if t.steps is None and t.epochs is None and t.minutes is None:
        cfg.train = dataclasses.replace(t, steps=DEFAULT_STEPS)
    return cfg


def _defaults(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The default tree, minus the default components' options where ``raw`` picks another component
    (the default recipe's ``ngf = 32`` means nothing to a different generator)."""
    tree = ExperimentConfig().to_dict()
    def picked(section: str, key: str) -> Any:
        table = raw.get(section)
        return table.get(key) if isinstance(table, Mapping) else None

    for section in ("data", "text_encoder", "generator", "discriminator"):
        name = picked(section, "name")
        if name is not None and name != tree[section]["name"]:
            tree[section]["options"] = {}
            if section == "data":  # attribute accuracy only means something on the Shapes data
                tree["eval"]["metrics"] = [m for m in tree["eval"]["metrics"] if m != "shapes_accuracy"]
    adversarial = picked("loss", "adversarial")
    if adversarial is not None and adversarial != tree["loss"]["adversarial"]:
        tree["loss"]["options"] = {}
    return tree


def save_toml(cfg: ExperimentConfig | Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a config atomically (temp file + rename)."""
    data = cfg.to_dict() if dataclasses.is_dataclass(cfg) else dict(cfg)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    with open(tmp, "wb") as f:
        tomli_w.dump(data, f)
    os.replace(tmp, p)
    return p

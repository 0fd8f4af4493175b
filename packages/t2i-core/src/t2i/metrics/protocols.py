"""Named evaluation protocols: the settings a paper evaluated with, applied at once by ``t2i eval --protocol NAME``.

A paper's FID or R-precision is only comparable under its own protocol: how many images were generated and
from which captions, which reference statistics, which network, which resize. A :class:`Protocol` writes all
of that down once, with the files in the authors' repositories that say so (:attr:`Protocol.source`), and maps
it onto t2i's metric options (``-M metric.key=value``):

    from t2i.metrics.protocols import get_protocol, apply_protocol
    preset = get_protocol("dfgan-cub")
    applied = apply_protocol(preset, options={"fid": {"reference_stats": "bird_val256_FIDK0.npz"}})
    applied.metrics, applied.options   # ['fid'], {'fid': {'reference_stats': ..., 'mode': 'legacy_pytorch', ...}}

Rules that :func:`apply_protocol` enforces (one-line :class:`~t2i.errors.UsageError` each):

- **Explicit options never silently change a preset.** A ``-M`` option the preset also sets is accepted when it
  has the same value and refused when it differs: a figure labelled ``dfgan-cub`` must have been computed as
  DF-GAN computed it. Options the preset leaves open (``device``, ``batch_size``, ``weights``, ``cache_dir``,
  ``seed`` ...) are yours to set. ``-m`` may pick a subset of the preset's metrics, never another metric; and
  ``--split`` must be the preset's split when it names one.
- **Files the user must supply are named.** DF-GAN's statistics, the fine-tuned CUB Inception, the DAMSM
  encoders cannot be shipped or downloaded by t2i: :attr:`Protocol.needs` says which option takes which file
  and where the authors publish it, and a missing one is an error that says exactly that.
- **Settings this t2i cannot honour are refused, not dropped.** A preset may name an option a metric does not
  have yet (``is.classifier``, ``r_precision.encoder=damsm``): the error says which option and which metric.

The *generator* settings (how many images to generate: :attr:`Protocol.generation`) apply only when a
generator is evaluated; a folder of already generated images is scored as it is, and its count is compared
with :attr:`Protocol.images` by the caller.

:meth:`AppliedProtocol.block` is the JSON block ``t2i eval`` writes under ``"preset"``: the preset's name and
description, the settings applied and the supplied files with their sha256. It holds nothing else (no time,
no machine), so the same preset and inputs give the same block every time.

Presets are registered in :data:`PRESETS` (:func:`register_protocol`); :func:`markdown_table` renders the table
of README.md's metrics section, and ``tests/test_eval_protocols.py`` checks that the README holds it verbatim.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, get_type_hints

from ..errors import ConfigError, UsageError

__all__ = [
    "Needs", "Protocol", "AppliedProtocol", "PRESETS", "EVERY_IMAGE", "register_protocol", "protocol_names",
    "get_protocol", "apply_protocol", "table_rows", "markdown_table", "TABLE_COLUMNS",
]  # fmt: skip

EVERY_IMAGE = 1_000_000_000
"""An ``n`` larger than any split: ``n`` is capped at the reference split's size, so ``fid.n=EVERY_IMAGE``
generates one image for every reference image, in the seeded order (DF-GAN's ``sample_times: 1``)."""


@dataclass(frozen=True)
class Needs:
    """A file the user must supply for a protocol: the option that takes it, and what it is / where to get it.

    ``flag``: another ``t2i eval`` flag that gives it (``--reference`` for a statistics file).
    """

    option: str
    what: str
    flag: str = ""

    @property
    def metric(self) -> str:
        return self.option.partition(".")[0]

    @property
    def key(self) -> str:
        return self.option.partition(".")[2]


@dataclass(frozen=True)
class Protocol:
    """One paper's evaluation, as data. Settings are ``("metric.key", "value")`` pairs, the ``-M`` syntax.

    ``images``: the number of generated images the paper scores (``None``: one per reference image);
    ``images_rule``: how the authors' code arrives at it. ``settings`` apply always; ``generation`` only with a
    generator (sample counts). ``split``: the reference split it is defined on (``""``: any). ``source``: the
    files in the authors' repositories the numbers come from.
    """

    name: str
    paper: str
    reproduces: str
    images: int | None
    images_rule: str
    statistics: str
    extractor: str
    resize: str
    metrics: tuple[str, ...]
    settings: tuple[tuple[str, str], ...] = ()
    generation: tuple[tuple[str, str], ...] = ()
    needs: tuple[Needs, ...] = ()
    split: str = "test"
    data: str = ""
    source: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        for option, _ in (*self.settings, *self.generation):
            metric, dot, key = option.partition(".")
            if not dot or not key or metric not in self.metrics:
                raise ValueError(f"protocol {self.name}: setting {option!r} must be METRIC.KEY for one of {self.metrics}")
        for need in self.needs:
            if need.metric not in self.metrics:
                raise ValueError(f"protocol {self.name}: {need.option} names a metric it does not compute")

    def options(self, *, generator: bool) -> dict[str, dict[str, str]]:
        """The preset's own settings per metric (with the sample counts when ``generator``)."""
        out: dict[str, dict[str, str]] = {}
        for option, value in (*self.settings, *(self.generation if generator else ())):
            metric, _, key = option.partition(".")
            out.setdefault(metric, {})[key] = value
        return out

    @property
    def images_text(self) -> str:
        """The image count as the tables show it."""
        return f"{self.images:,}" if self.images is not None else "one per reference image"

    def describe(self) -> dict[str, Any]:
        """Everything the preset says, JSON-able (what ``--list-protocols`` and the JSON block print)."""
        return {
            "name": self.name, "paper": self.paper, "reproduces": self.reproduces, "images": self.images,
            "images_rule": self.images_rule, "statistics": self.statistics, "extractor": self.extractor,
            "resize": self.resize, "metrics": list(self.metrics), "split": self.split, "data": self.data,
            "source": self.source, "notes": self.notes,
        }  # fmt: skip


PRESETS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    """Add ``protocol`` to :data:`PRESETS`; a name registered twice is an error (a silent swap would change figures)."""
    if protocol.name in PRESETS:
        raise ValueError(f"protocol '{protocol.name}' is already registered")
    PRESETS[protocol.name] = protocol
    return protocol


def protocol_names(pattern: str | None = None) -> list[str]:
    """Registered preset names, sorted; ``pattern`` filters with shell wildcards (``"dfgan-*"``)."""
    return sorted(n for n in PRESETS if pattern is None or fnmatch.fnmatchcase(n, pattern))


def get_protocol(name: str) -> Protocol:
    """The preset ``name``; an unknown name is a one-line error with the closest name and the list."""
    if name in PRESETS:
        return PRESETS[name]
    close = difflib.get_close_matches(name, protocol_names(), n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ";"
    raise UsageError(f"unknown protocol '{name}'{hint} presets: {', '.join(protocol_names())} (t2i eval --list-protocols)")


# -- applying a preset -------------------------------------------------------------------------------
@dataclass(frozen=True)
class AppliedProtocol:
    """A preset resolved against the user's flags: what to compute and with which options."""

    protocol: Protocol
    metrics: list[str]
    options: dict[str, dict[str, str]]
    split: str | None
    generator: bool
    supplied: dict[str, str]

    def block(self) -> dict[str, Any]:
        """The JSON block ``t2i eval`` writes under ``"preset"``: deterministic for the same preset and inputs."""
        preset_options = self.protocol.options(generator=self.generator)
        applied = {m: dict(sorted(preset_options[m].items())) for m in self.metrics if m in preset_options}
        return {
            **self.protocol.describe(),
            "evaluated": "generator" if self.generator else "image folder",
            "metrics_computed": list(self.metrics),
            "settings": applied,
            "supplied": {option: _file_record(path) for option, path in sorted(self.supplied.items())},
        }


def _file_record(path: str) -> dict[str, str]:
    p = Path(path).expanduser()
    digest = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"file": path, "sha256": digest.hexdigest()}


def apply_protocol(
    protocol: Protocol,
    *,
    metrics: list[str] | None = None,
    options: Mapping[str, Mapping[str, str]] | None = None,
    split: str | None = None,
    generator: bool = True,
) -> AppliedProtocol:
    """Merge ``protocol`` with the user's ``-m`` (``metrics``), ``-M`` (``options``) and ``--split``.

    Refuses, in one line each: a metric the preset does not compute, an option that contradicts the preset, a
    split other than the preset's, a setting the installed metric cannot take, a required file not supplied
    (or not found). See the module docstring for why conflicts are refused rather than overridden.
    """
    name = protocol.name
    chosen = list(metrics) if metrics else list(protocol.metrics)
    foreign = [m for m in chosen if m not in protocol.metrics]
    if foreign:
        raise UsageError(f"protocol {name} computes {', '.join(protocol.metrics)}, not {', '.join(foreign)}; "
                         f"drop --protocol to compute other metrics")  # fmt: skip
    if split is not None and protocol.split and split != protocol.split:
        raise UsageError(f"--split {split} conflicts with protocol {name}, which is defined on the '{protocol.split}' split")
    user = {m: dict(o) for m, o in (options or {}).items()}
    preset = protocol.options(generator=generator)
    merged: dict[str, dict[str, str]] = {m: dict(user.get(m, {})) for m in chosen}
    for metric in chosen:
        for key, value in preset.get(metric, {}).items():
            given = user.get(metric, {}).get(key)
            if given is not None and not _same_value(metric, key, given, value):
                raise UsageError(f"-M {metric}.{key}={given} conflicts with protocol {name} ({metric}.{key}={value}); "
                                 f"drop --protocol to choose your own settings")  # fmt: skip
            merged[metric][key] = value
    for metric in user:
        if metric not in chosen:
            merged[metric] = dict(user[metric])  # refused downstream: options for a metric that is not computed
    _check_supported(protocol, chosen, preset)
    supplied: dict[str, str] = {}
    for need in protocol.needs:
        if need.metric not in chosen:
            continue
        given = merged.get(need.metric, {}).get(need.key, "")
        how = f"-M {need.option}=FILE" + (f" or {need.flag} FILE" if need.flag else "")
        if not given:
            raise UsageError(f"protocol {name} needs {need.what}: pass {how}")
        if not Path(given).expanduser().is_file():
            raise UsageError(f"protocol {name}: {need.option}={given} is not a file; it must be {need.what}")
        supplied[need.option] = given
    _check_complete(protocol, {m: merged[m] for m in chosen})
    return AppliedProtocol(protocol, chosen, merged, protocol.split or split, generator, supplied)


def _config_class(metric: str) -> type | None:
    from ..plugins import registry

    return registry("metrics").get(metric).config


def _same_value(metric: str, key: str, a: str, b: str) -> bool:
    """Whether two ``-M`` strings mean the same value for ``metric.key`` (``29330`` and ``29_330`` do)."""
    from ..options import coerce

    cls = _config_class(metric)
    hints = get_type_hints(cls) if cls is not None else {}
    if key not in hints:
        return a == b
    try:
        return coerce(key, a, hints[key]) == coerce(key, b, hints[key])
    except ConfigError:
        return a == b


def _check_supported(protocol: Protocol, metrics: list[str], preset: Mapping[str, Mapping[str, str]]) -> None:
    """Every setting and required option must be a field of the installed metric, each value of its type."""
    from ..options import coerce

    for metric in metrics:
        cls = _config_class(metric)
        hints = get_type_hints(cls) if cls is not None else {}
        wanted = [*(f"{metric}.{k}" for k in preset.get(metric, {})),
                  *(n.option for n in protocol.needs if n.metric == metric)]  # fmt: skip
        for option in wanted:
            if option.partition(".")[2] not in hints:
                raise UsageError(f"protocol {protocol.name} needs {option}, which this t2i's '{metric}' metric does not "
                                 f"have yet (t2i describe metric {metric}); it cannot reproduce {protocol.paper} here")  # fmt: skip
        for key, value in preset.get(metric, {}).items():
            try:
                coerce(f"{metric}.{key}", value, hints[key])
            except ConfigError as exc:
                raise UsageError(f"protocol {protocol.name} sets {metric}.{key}={value}, which this t2i's '{metric}' "
                                 f"metric does not support yet ({exc})") from None  # fmt: skip


def _check_complete(protocol: Protocol, options: Mapping[str, Mapping[str, str]]) -> None:
    """The preset's settings with the user's own must build each metric's config (its own cross-checks)."""
    from ..options import build_config

    for metric in protocol.metrics:
        cls = _config_class(metric)
        if cls is None or metric not in options:
            continue
        try:
            build_config(cls, dict(options[metric]))
        except UsageError as exc:  # ConfigError, or a config's own check (an unknown resize mode)
            raise UsageError(f"protocol {protocol.name}: {metric} cannot be configured this way: {exc}") from None


# -- tables ------------------------------------------------------------------------------------------
TABLE_COLUMNS = ("preset", "paper", "images", "statistics", "extractor", "resize")


def table_rows() -> list[tuple[str, ...]]:
    """One row per preset: the columns of :data:`TABLE_COLUMNS`."""
    return [(p.name, p.paper, p.images_text, p.statistics, p.extractor, p.resize) for p in map(get_protocol, protocol_names())]


def markdown_table() -> str:
    """The table of README.md's metrics section, generated from :data:`PRESETS`."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for row in table_rows():
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in (f"`{row[0]}`", *row[1:])) + " |")
    return "\n".join(lines)


# -- the presets -------------------------------------------------------------------------------------
_PYTORCH_FID_RESIZE = "`legacy_pytorch`: pytorch-fid's bilinear, no antialiasing"
_INCEPTION = "Inception-v3 pool3, 2015-12-05 weights"

register_protocol(Protocol(
    name="dfgan-cub",
    paper="DF-GAN (Tao et al., CVPR 2022)",
    reproduces="FID on CUB-200 birds (paper 14.81, released model 12.10)",
    images=29_330,
    images_rule="sample_times=10 passes over the 2,933 CUB test images, a random caption of each per pass; "
                "DF-GAN's loader drops the last partial batch (91 x 32 x 10 = 29,120 images on one GPU)",
    statistics="DF-GAN's `bird_val256_FIDK0.npz` (you supply it)",
    extractor=f"{_INCEPTION} (pytorch-fid's)",
    resize=_PYTORCH_FID_RESIZE,
    metrics=("fid",),
    settings=(("fid.mode", "legacy_pytorch"),),
    generation=(("fid.n_generated", "29330"),),
    needs=(Needs("fid.reference_stats", "DF-GAN's CUB statistics bird_val256_FIDK0.npz (data/birds/npz/ in the birds "
                 "metadata linked from tobran/DF-GAN's README)", flag="--reference"),),  # fmt: skip
    split="test",
    data="cub",
    source="tobran/DF-GAN: code/cfg/bird.yml (sample_times: 10, npz_path: ../data/birds/npz/bird_val256_FIDK0.npz, "
           "imsize: 256, batch_size: 32); code/lib/modules.py eval() (pytorch-fid InceptionV3 from "
           "code/models/inception.py, Normalize to [0, 1], Resize((299, 299)), FID against the npz's mu/sigma); "
           "code/lib/perpare.py prepare_dataloaders (drop_last=True); code/lib/datasets.py __getitem__ (a random "
           "caption per image); README.md (CUB FID 14.81 paper, 12.10 released model); the statistics are of the "
           "test images augmented with flips and small shifts to ~30k (tobran/DF-GAN#18)",
    notes="DF-GAN scores its float generator output; t2i scores uint8 images, as saved PNGs are",
))

register_protocol(Protocol(
    name="dfgan-coco",
    paper="DF-GAN (Tao et al., CVPR 2022)",
    reproduces="FID on MS-COCO 2014 (paper 19.32, released model 15.41)",
    images=None,
    images_rule="sample_times=1: one image per image of the test split (COCO val2014 in AttnGAN's split), a random "
                "caption of each; DF-GAN's loader drops the last partial batch of 32",
    statistics="DF-GAN's `coco_val256_FIDK0.npz` (you supply it)",
    extractor=f"{_INCEPTION} (pytorch-fid's)",
    resize=_PYTORCH_FID_RESIZE,
    metrics=("fid",),
    settings=(("fid.mode", "legacy_pytorch"),),
    generation=(("fid.n", str(EVERY_IMAGE)),),
    needs=(Needs("fid.reference_stats", "DF-GAN's COCO statistics coco_val256_FIDK0.npz (data/coco/npz/ in the coco "
                 "metadata linked from tobran/DF-GAN's README)", flag="--reference"),),  # fmt: skip
    split="test",
    data="coco",
    source="tobran/DF-GAN: code/cfg/coco.yml (sample_times: 1, npz_path: ../data/coco/npz/coco_val256_FIDK0.npz, "
           "imsize: 256); code/lib/modules.py eval(); code/lib/datasets.py (test images from images/val2014); "
           "README.md (COCO FID 19.32 paper, 15.41 released model); statistics of the COCO test set (tobran/DF-GAN#18)",
    notes="DF-GAN scores its float generator output; t2i scores uint8 images, as saved PNGs are",
))

register_protocol(Protocol(
    name="galip-cub",
    paper="GALIP (Tao et al., CVPR 2023)",
    reproduces="FID on CUB-200 birds (paper 10.08)",
    images=35_196,
    images_rule="sample_times=12 passes over the 2,933 CUB test images, a random caption of each per pass; "
                "GALIP's loader drops each GPU's last partial batch (12 x 45 x 64 = 34,560 images on one GPU at batch 64)",
    statistics="DF-GAN's `bird_val256_FIDK0.npz`, which GALIP reuses (you supply it)",
    extractor=f"{_INCEPTION} (pytorch-fid's)",
    resize=_PYTORCH_FID_RESIZE,
    metrics=("fid",),
    settings=(("fid.mode", "legacy_pytorch"),),
    generation=(("fid.n_generated", "35196"),),
    needs=(Needs("fid.reference_stats", "DF-GAN's CUB statistics bird_val256_FIDK0.npz (GALIP's cfg points at "
                 "data/birds/npz/, the birds metadata linked from tobran/DF-GAN's README)", flag="--reference"),),  # fmt: skip
    split="test",
    data="cub",
    source="tobran/GALIP: code/cfg/birds.yml (sample_times: 12, npz_path: ../data/birds/npz/bird_val256_FIDK0.npz, "
           "imsize: 256); code/lib/modules.py calculate_FID_CLIP_sim (pytorch-fid InceptionV3, Normalize to [0, 1], "
           "Resize((299, 299)), FID against the npz's mu/sigma); code/lib/perpare.py (drop_last=True)",
    notes="GALIP scores its float generator output clamped to [-1, 1]; t2i scores uint8 images, as saved PNGs are",
))

register_protocol(Protocol(
    name="galip-coco",
    paper="GALIP (Tao et al., CVPR 2023)",
    reproduces="FID on MS-COCO 2014 (paper 5.85)",
    images=None,
    images_rule="sample_times=1: one image per image of the test split (COCO val2014 in AttnGAN's split), a random "
                "caption of each; GALIP's loader drops each GPU's last partial batch",
    statistics="DF-GAN's `coco_val256_FIDK0.npz`, which GALIP reuses (you supply it)",
    extractor=f"{_INCEPTION} (pytorch-fid's)",
    resize=_PYTORCH_FID_RESIZE,
    metrics=("fid",),
    settings=(("fid.mode", "legacy_pytorch"),),
    generation=(("fid.n", str(EVERY_IMAGE)),),
    needs=(Needs("fid.reference_stats", "DF-GAN's COCO statistics coco_val256_FIDK0.npz (data/coco/npz/ in the coco "
                 "metadata linked from tobran/DF-GAN's README)", flag="--reference"),),  # fmt: skip
    split="test",
    data="coco",
    source="tobran/GALIP: code/cfg/coco.yml (sample_times: 1, npz_path: ../data/coco/npz/coco_val256_FIDK0.npz, "
           "imsize: 256); code/lib/modules.py calculate_FID_CLIP_sim; code/lib/perpare.py (drop_last=True)",
    notes="GALIP scores its float generator output clamped to [-1, 1]; t2i scores uint8 images, as saved PNGs are",
))

register_protocol(Protocol(
    name="attngan-cub",
    paper="AttnGAN (Xu et al., CVPR 2018)",
    reproduces="IS and R-precision on CUB-200 birds (paper IS 4.36, R-precision 67.82%)",
    images=30_000,
    images_rule="30,000 images from test captions drawn at random (passes over the 2,933 test images, a new caption "
                "each pass); IS in 10 splits; R-precision: each image's caption among 1 + 99 captions of images of "
                "other classes, 10 folds of 3,000",
    statistics="none (IS and R-precision need no reference statistics)",
    extractor="CUB-fine-tuned Inception-v3, 50 classes (IS); DAMSM encoders (R-precision); you supply both",
    resize="bilinear to 299 px (IS: PIL, as scipy's imresize; DAMSM: align_corners)",
    metrics=("is", "r_precision"),
    settings=(
        ("is.splits", "10"), ("is.classes", "50"), ("is.background", "true"), ("is.resize", "pil_bilinear"),
        ("is.normalize", "minus_one_one"),
        ("r_precision.encoder", "damsm"), ("r_precision.negatives", "99"), ("r_precision.folds", "10"),
        ("r_precision.mismatch", "class"), ("r_precision.damsm_words", "25"),
    ),
    generation=(("is.n_generated", "30000"), ("r_precision.n_generated", "30000")),
    needs=(
        Needs("is.classifier", "the CUB-fine-tuned Inception-v3 in PyTorch form (hanzhanggit/StackGAN-inception-model's "
              "birds_valid299 checkpoint, converted to torchvision's layout)"),
        Needs("r_precision.damsm_text_encoder", "AttnGAN's DAMSM text encoder text_encoder200.pth (DAMSMencoders/bird/ "
              "linked from taoxugit/AttnGAN's README)"),
        Needs("r_precision.damsm_image_encoder", "AttnGAN's DAMSM image encoder image_encoder200.pth (DAMSMencoders/bird/ "
              "linked from taoxugit/AttnGAN's README)"),
        Needs("r_precision.damsm_captions", "AttnGAN's captions.pickle, the DAMSM vocabulary (data/birds/ in the birds "
              "metadata linked from taoxugit/AttnGAN's README)"),
    ),  # fmt: skip
    split="test",
    data="cub",
    source="taoxugit/AttnGAN: README.md (IS with hanzhanggit/StackGAN-inception-model), code/trainer.py sampling(), "
           "code/cfg/eval_bird.yml (WORDS_NUM: 25), code/model.py (RNN_ENCODER, CNN_ENCODER); the paper, section 5 "
           "(30,000 images, R = 1 among 100 candidates); R-precision as DM-GAN's code computes it: MinfengZhu/DM-GAN "
           "code/trainer.py sampling() (30,000 queries over up to 11 passes, cosine of DAMSM sentence and image "
           "codes, shuffled into 10 folds of 3,000) and code/datasets.py get_mis_caption (99 captions of images of "
           "other classes); IS: MinfengZhu/DM-GAN eval/IS/bird/inception_score_bird.py (num_classes 50 + background "
           "label 0 dropped before the softmax, splits 10, scipy bilinear imresize to 299, x / 127.5 - 1)",
    notes="DM-GAN's IS script drops the last partial batch of 64 (29,952 of 30,000 images) and its R-precision counts "
          "ties as hits and averages 2,999 of each fold's 3,000; t2i uses every image and counts a k-way tie as 1/k",
))

register_protocol(Protocol(
    name="clean",
    paper="clean-fid (Parmar et al., CVPR 2022)",
    reproduces="Clean-FID and Clean-KID against the whole reference split",
    images=50_000,
    images_rule="num_gen=50,000 generated images (clean-fid's default), against every image of the reference split",
    statistics="features of the whole reference split",
    extractor=f"{_INCEPTION} (clean-fid's)",
    resize="`clean`: PIL bicubic, antialiased",
    metrics=("fid", "kid"),
    settings=(("fid.mode", "clean"), ("kid.mode", "clean"), ("kid.subsets", "100"), ("kid.subset_size", "1000")),
    generation=(("fid.n_generated", "50000"), ("kid.n_generated", "50000")),
    split="",
    source="GaParmar/clean-fid: cleanfid/fid.py (compute_fid / compute_kid: mode=\"clean\", num_gen=50_000, "
           "reference statistics of a whole dataset_split; kernel_distance: num_subsets=100, max_subset_size=1000), "
           "cleanfid/resize.py (PIL bicubic), README.md (reference splits use all their images)",
))

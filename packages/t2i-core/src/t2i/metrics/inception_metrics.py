"""``fid``, ``kid`` and ``is``: the Inception metrics, computed as torch-fidelity / the TTUR reference do.

Protocol shared by the three (:class:`InceptionMetric`). Walk a seeded permutation of the reference split
and take one seeded caption of each image; generate one image per caption, ``n`` of them, where ``n`` is
capped at the size of the reference split (``n_requested`` records what was asked). ``n_generated = N``
instead generates exactly ``N`` images, any number, by cycling the split in that seeded order with a new
seeded caption on each pass (:func:`t2i.metrics.cycled_captions`; DF-GAN's ``sample_times``, AttnGAN's
30,000); the protocol records ``n_generated`` and the rule. Features come from the TF-compatible
Inception-v3 (:mod:`t2i.metrics.inception`); ``mode`` picks the resize and normalisation in front of it
(``legacy_tensorflow``: torch-fidelity / TTUR, the default; ``clean``: clean-fid; ``legacy_pytorch``:
pytorch-fid), recorded as ``mode`` and ``resize`` in the protocol.
The *real* side is the whole reference split; its features are computed once and cached on disk (:func:`~t2i.metrics.image_sets.cached_features`), or, for ``fid`` only,
read as ``mu``/``sigma`` from ``reference_stats=PATH`` (:mod:`t2i.metrics.reference_stats`).

- ``fid``: Frechet distance between Gaussians fitted to pool3 features (float64 streaming sums; trace term
  from symmetric eigenvalues, :mod:`t2i.metrics.frechet`).
- ``kid``: unbiased MMD^2 with the cubic polynomial kernel ``(x.y / d + 1)^3``, averaged over ``subsets``
  random subsets of ``min(subset_size, N)`` images of each side (drawn as torch-fidelity draws them:
  ``np.random.RandomState(seed).choice(N, m, replace=False)``, generated first); ``kid`` and ``kid/std``.
- ``is``: Inception Score from the 1008-way logits without bias, in ``splits`` parts after a seeded shuffle
  (``RandomState(seed).permutation``); ``is`` and ``is/std``. A score outside ``[1, classes]`` is a bug and
  raises instead of being reported. ``classifier=FILE`` scores with another Inception-v3 instead: a
  torchvision-layout state dict with its own ``fc`` (:class:`InceptionClassifier`), such as the Inception
  fine-tuned on CUB birds that StackGAN, AttnGAN and DM-GAN report IS with (in PyTorch form); ``classes``,
  ``resize``, ``normalize`` and ``background`` say how it was trained, and the protocol records them with
  the file's sha256.

Each metric can also compare two image sets without a generator (:meth:`InceptionMetric.compare`), which
``t2i eval FOLDER --reference ...`` uses.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from ..interfaces import CaptionedImages, ImageSet, ImageSetMetric
from ..weights import file_sha256
from . import CYCLE_RULE, Generate, cycled_captions, generated_rows, seeded_caption, seeded_order
from .features import FeatureExtractor, features_of, make_extractor
from .frechet import RunningStats, frechet_distance
from .inception import check_mode
from .image_sets import cached_features, split_images
from .reference_stats import load_reference_stats

__all__ = [
    "InceptionMetricConfig", "KIDConfig", "ISConfig", "InceptionMetric", "FID", "KID", "InceptionScore",
    "InceptionClassifier", "kid_from_features", "inception_score_from_logits",
]  # fmt: skip


@dataclass
class InceptionMetricConfig:
    """Options of ``fid`` (and the base of ``kid`` and ``is``)."""

    n: int = field(default=10000, metadata={"help": "generated images (capped at the reference split's size)"})
    n_generated: int = field(
        default=0, metadata={"help": "generate exactly this many, cycling the split's captions in a seeded order (0: n, capped)"}
    )
    reference_stats: str = field(
        default="", metadata={"help": "fid only: .npz with mu/sigma (pytorch-fid format) used instead of the reference images"}
    )
    batch_size: int = field(default=64, metadata={"help": "images per Inception forward pass"})
    weights: str = field(default="", metadata={"help": "Inception weights file ('' = $T2I_INCEPTION_WEIGHTS, then the caches)"})
    mode: str = field(
        default="legacy_tensorflow",
        metadata={"help": "resize: legacy_tensorflow (torch-fidelity) | clean (clean-fid) | legacy_pytorch (pytorch-fid)"},
    )
    device: str = field(default="auto", metadata={"help": "where Inception runs: auto, cpu, cuda, ..."})
    seed: int = field(
        default=2020, metadata={"help": "seeds caption choice, KID subsets and the IS shuffle (2020: torch-fidelity's)"}
    )
    cache_dir: str = field(default="", metadata={"help": "real-feature cache ('' = $T2I_CACHE_DIR, else ~/.cache/t2i)"})
    cache: bool = field(default=True, metadata={"help": "cache the reference split's features on disk"})

    def __post_init__(self) -> None:
        for name in ("n", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_generated < 0 or self.n_generated == 1:
            raise ValueError(f"n_generated must be 0 (use n) or >= 2, got {self.n_generated}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        check_mode(self.mode)


@dataclass
class KIDConfig(InceptionMetricConfig):
    """Options of ``kid``."""

    subsets: int = field(default=100, metadata={"help": "random subsets averaged"})
    subset_size: int = field(default=1000, metadata={"help": "images per subset (capped at the smaller side)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.subsets < 1 or self.subset_size < 2:
            raise ValueError(f"subsets must be >= 1 and subset_size >= 2, got {self.subsets} and {self.subset_size}")


@dataclass
class ISConfig(InceptionMetricConfig):
    """Options of ``is``. ``classifier`` and the four options after it select and describe an Inception-v3
    classifier from a file (the CUB papers' fine-tuned one); without it, the ImageNet Inception of ``weights``."""

    splits: int = field(default=10, metadata={"help": "parts the generated images are scored in"})
    classifier: str = field(default="", metadata={
        "help": "Inception-v3 classifier state dict in torchvision's layout with its own fc, e.g. CUB's fine-tuned "
                "one ('' = the ImageNet Inception of `weights`)"})  # fmt: skip
    classes: int = field(default=0, metadata={"help": "classes the classifier must have (0: as many as its fc has)"})
    resize: Literal["pil_bilinear", "bilinear", "bilinear_align_corners"] = field(default="pil_bilinear", metadata={
        "help": "classifier only: to 299 px by pil_bilinear (StackGAN's scipy imresize) | bilinear | bilinear_align_corners"})
    normalize: Literal["minus_one_one", "imagenet"] = field(default="minus_one_one", metadata={
        "help": "classifier only: input range minus_one_one (x/127.5-1, StackGAN) | imagenet (mean/std)"})
    background: bool = field(default=False, metadata={
        "help": "classifier only: its first class is TF-slim's background, dropped before the softmax (StackGAN)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.splits < 1:
            raise ValueError(f"splits must be >= 1, got {self.splits}")
        if self.classes < 0:
            raise ValueError(f"classes must be >= 0, got {self.classes}")
        if self.classifier:
            if self.weights or self.mode != "legacy_tensorflow":
                raise ValueError("weights and mode choose the ImageNet Inception; with classifier=FILE use resize and normalize")
        else:
            set_ = [k for k, default in (("classes", 0), ("resize", "pil_bilinear"), ("normalize", "minus_one_one"),
                                         ("background", False)) if getattr(self, k) != default]  # fmt: skip
            if set_:
                raise ValueError(f"{', '.join(set_)} describe a classifier from a file: pass classifier=FILE too")


# the real side: running statistics and features, each by feature name
_Real = tuple[dict[str, RunningStats], dict[str, Tensor]]


def _versions() -> dict[str, str]:
    import torch_fidelity

    from .. import __version__

    return {
        "t2i": __version__, "torch": torch.__version__, "torch_fidelity": torch_fidelity.__version__, "numpy": np.__version__
    }  # fmt: skip


@dataclass
class _Fake:
    """Generated images' features (gathered from every rank) and their pool3 statistics: what :meth:`compare` needs."""

    stats: RunningStats
    features: dict[str, Tensor]
    count: int
    identity: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        return dict(self.identity)


def _stats(features: dict[str, Tensor], batch_size: int) -> RunningStats:
    """pool3's float64 running statistics, summed batch by batch as :meth:`InceptionMetric.compare` does."""
    stats = RunningStats()
    pool3 = features.get("pool3")
    for i in range(0, 0 if pool3 is None else len(pool3), batch_size):
        stats.update(pool3[i : i + batch_size])
    return stats


class InceptionMetric(ImageSetMetric):
    """What ``fid``, ``kid`` and ``is`` share: the caption choice, the extractor, the real-feature cache."""

    metric: ClassVar[str]
    features: ClassVar[tuple[str, ...]]
    chunk = 250  # captions per generate() call
    splits_across_ranks = True  # per-image features (t2i.metrics.generated_rows)

    def __init__(self, cfg: InceptionMetricConfig | None = None, *, extractor: FeatureExtractor | None = None):
        self.cfg = cfg or InceptionMetricConfig()
        self._extractor = extractor  # share one loaded network between metrics; None: built on first use

    @property
    def extractor(self) -> FeatureExtractor:
        """The Inception network, built on first use (weights resolved then: a missing file is a UsageError)."""
        if self._extractor is None:
            from ..device import pick_device

            device = pick_device(self.cfg.device)
            self._extractor = make_extractor(
                "inception", weights=self.cfg.weights or None, device=device, features=self.features,
                batch_size=self.cfg.batch_size, mode=self.cfg.mode,
            )  # fmt: skip
        return self._extractor

    # -- with a generator ----------------------------------------------------------------------------
    def evaluate(self, generate: Generate, reference: CaptionedImages) -> dict[str, Any]:
        if len(reference) < 2:
            raise UsageError(f"{self.metric} needs a reference split with at least 2 images, got {len(reference)}")
        self._check_reference_stats()
        if self.cfg.n_generated:
            captions = cycled_captions(reference, self.cfg.n_generated, self.cfg.seed)
            rule: dict[str, Any] = {"n_generated": self.cfg.n_generated, "captions": CYCLE_RULE}
        else:
            rows = seeded_order(len(reference), self.cfg.seed)[: min(self.cfg.n, len(reference))].tolist()
            captions = seeded_caption(reference, rows, self.cfg.seed)
            rule = {"n_requested": self.cfg.n, "captions": "seeded permutation of the reference split, one seeded caption per image"}
        features = generated_rows(generate, captions, reference.resolution, self._features, chunk=self.chunk,
                                  align=self.cfg.batch_size)
        fake = _Fake(_stats(features, self.cfg.batch_size), features, len(captions),
                     {"source": "generated", "shape": [len(captions), reference.resolution, reference.resolution, 3]})
        real = split_images(reference) if self.needs_reference and not self.cfg.reference_stats else None
        result = self.compare(fake, real)
        info = {k: v for k, v in reference.info.items() if k in ("name", "split", "seed", "resolution")}
        result["protocol"].update(rule, reference={"size": len(reference), **info})
        return result

    def _check_reference_stats(self) -> None:
        if self.cfg.reference_stats and self.metric != "fid":
            need = "features of the reference images" if self.needs_reference else "no reference"
            raise UsageError(f"{self.metric} needs {need}, not statistics: reference_stats={self.cfg.reference_stats} "
                             "(mu/sigma) serves fid only; pass reference images instead")  # fmt: skip

    # -- two image sets ------------------------------------------------------------------------------
    def _checked_extractor(self) -> FeatureExtractor:
        ex = self.extractor
        if getattr(ex, "mode", self.cfg.mode) != self.cfg.mode:
            raise UsageError(f"{self.metric} is set to mode={self.cfg.mode} but its shared extractor runs mode={ex.mode}")
        missing = [f for f in self.features if f not in ex.dims]
        if missing:
            raise ValueError(f"{self.metric} needs features {missing} that extractor '{ex.name}' does not compute")
        return ex

    def _features(self, images: Tensor) -> dict[str, Tensor]:
        """The features this metric needs of uint8 ``images``, in batches of ``batch_size``, on the CPU."""
        return features_of(self._checked_extractor(), images, self.features, self.cfg.batch_size)

    def compare(self, images: ImageSet | _Fake, reference: ImageSet | None, *, cache_images: bool = False) -> dict[str, Any]:
        """The metric of ``images`` against ``reference`` (cached), ``{key: value, "protocol": {...}}``.

        ``cache_images``: also cache the features of ``images`` (files on disk, identified by their hash;
        generated images are never cached: they are streamed through float64 running sums). ``images`` may
        also be generated images' features already extracted (:class:`_Fake`, from :meth:`evaluate`).
        """
        if images.count < 2:
            raise UsageError(f"{self.metric} needs at least 2 images, got {images.count}")
        ex = self._checked_extractor()
        cache_dir = self.cfg.cache_dir or None
        if isinstance(images, _Fake):
            fake_stats, fake_features = images.stats, images.features
        elif cache_images and self.cfg.cache:
            all_stats, fake_features, _ = cached_features(ex, images, batch_size=self.cfg.batch_size, cache_dir=cache_dir)
            fake_stats = all_stats.get("pool3", RunningStats())
        else:
            parts: dict[str, list[Tensor]] = {name: [] for name in self.features}
            fake_stats = RunningStats()
            for batch in images.batches(self.cfg.batch_size):
                out = ex(batch)
                if "pool3" in out:
                    fake_stats.update(out["pool3"])
                for name in self.features:
                    parts[name].append(out[name])
            fake_features = {name: torch.cat(v) for name, v in parts.items()}
        protocol: dict[str, Any] = {"metric": self.metric, "n": images.count, "images": images.describe(), **ex.protocol(),
                                    "seed": self.cfg.seed, "versions": _versions()}  # fmt: skip
        real: _Real | None = None
        self._check_reference_stats()
        if self.cfg.reference_stats:
            stats, source = load_reference_stats(self.cfg.reference_stats, ex)
            real = ({"pool3": stats}, {})
            protocol.update(n_reference=stats.n or "unknown", reference_stats=source)
        elif reference is not None:
            if reference.count < 2:
                raise UsageError(f"{self.metric} needs a reference of at least 2 images, got {reference.count}")
            stats, feats, cache = cached_features(
                ex, reference, batch_size=self.cfg.batch_size, cache_dir=cache_dir, use_cache=self.cfg.cache
            )
            real = (stats, feats)
            protocol.update(
                n_reference=reference.count, reference_images=reference.describe(),
                reference_cache=cache if self.cfg.cache else "off",
            )  # fmt: skip
        values = self._score(fake_stats, fake_features, real)
        return {**values, "protocol": {**protocol, **self._protocol()}}

    @abc.abstractmethod
    def _score(self, fake_stats: RunningStats, fake: dict[str, Tensor], real: _Real | None) -> dict[str, float]:
        """The values, from the generated side's running statistics and features and the real side's."""

    def _protocol(self) -> dict[str, Any]:
        return {}


class FID(InceptionMetric):
    """Frechet Inception Distance (lower is better)."""

    metric = "fid"
    features = ("pool3",)
    higher_is_better = False

    def _score(self, fake_stats, fake, real):
        assert real is not None
        stats = real[0]["pool3"]
        value = frechet_distance(fake_stats.mean, fake_stats.cov, stats.mean, stats.cov)
        return {"fid": value}

    def _protocol(self) -> dict[str, Any]:
        return {"feature": "pool3 (2048)", "statistics": "float64 streaming mean and unbiased covariance",
                "trace_term": "sum sqrt(eigvalsh(S1^1/2 S2 S1^1/2)), negative eigenvalues clipped to 0"}  # fmt: skip


class KID(InceptionMetric):
    """Kernel Inception Distance (lower is better); ``kid/std`` over the subsets."""

    metric = "kid"
    features = ("pool3",)
    higher_is_better = False

    def __init__(self, cfg: KIDConfig | None = None, *, extractor: FeatureExtractor | None = None):
        super().__init__(cfg or KIDConfig(), extractor=extractor)

    def _score(self, fake_stats, fake, real):
        assert real is not None
        cfg: KIDConfig = self.cfg  # type: ignore[assignment]
        mean, std = kid_from_features(
            fake["pool3"], real[1]["pool3"], subsets=cfg.subsets, subset_size=cfg.subset_size, seed=cfg.seed
        )
        return {"kid": mean, "kid/std": std}

    def _protocol(self) -> dict[str, Any]:
        cfg: KIDConfig = self.cfg  # type: ignore[assignment]
        return {"feature": "pool3 (2048)", "kernel": "cubic polynomial (x.y/d + 1)^3", "estimator": "unbiased MMD^2",
                "subsets": cfg.subsets, "subset_size": f"min({cfg.subset_size}, N)",
                "subset_rng": "numpy RandomState(seed).choice(N, m, replace=False), generated side first"}  # fmt: skip


class InceptionScore(InceptionMetric):
    """Inception Score (higher is better); ``is/std`` over the splits. Needs no reference images.

    With ``classifier=FILE`` the classes are those of that network (:class:`InceptionClassifier`), e.g. CUB's
    bird species, and its logits (with bias) replace the ImageNet Inception's 1008 unbiased logits.
    """

    metric = "is"
    features = ("logits_unbiased",)
    needs_reference = False

    def __init__(self, cfg: ISConfig | None = None, *, extractor: FeatureExtractor | None = None):
        super().__init__(cfg or ISConfig(), extractor=extractor)
        if self.cfg.classifier:  # type: ignore[attr-defined]
            self.features = ("logits",)

    @property
    def extractor(self) -> FeatureExtractor:
        cfg: ISConfig = self.cfg  # type: ignore[assignment]
        if self._extractor is None and cfg.classifier:
            from ..device import pick_device

            self._extractor = InceptionClassifier(
                cfg.classifier, classes=cfg.classes, resize=cfg.resize, normalize=cfg.normalize,
                background=cfg.background, device=pick_device(cfg.device), batch_size=cfg.batch_size,
            )  # fmt: skip
        return InceptionMetric.extractor.fget(self)  # type: ignore[attr-defined]

    def _score(self, fake_stats, fake, real):
        cfg: ISConfig = self.cfg  # type: ignore[assignment]
        mean, std = inception_score_from_logits(fake[self.features[0]], splits=cfg.splits, seed=cfg.seed)
        return {"is": mean, "is/std": std}

    def _protocol(self) -> dict[str, Any]:
        cfg: ISConfig = self.cfg  # type: ignore[assignment]
        feature = (f"logits of the classifier's fc ({self.extractor.dims['logits']} classes, with bias)" if cfg.classifier
                   else "logits_unbiased (1008, no bias)")  # fmt: skip
        return {"feature": feature, "splits": cfg.splits,
                "shuffle": "numpy RandomState(seed).permutation(N)", "precision": "float64 softmax"}  # fmt: skip


class InceptionClassifier:
    """An Inception-v3 classifier from a state-dict file, as an extractor of its ``logits`` for ``is``.

    The file holds torchvision's ``Inception3`` parameters (``Conv2d_1a_3x3.conv.weight`` ... ``Mixed_7c...``,
    ``fc.weight`` ``(C, 2048)``, ``fc.bias``; ``AuxLogits.*`` optional, unused), which is how PyTorch ports of
    the CUB fine-tuned Inception (StackGAN's evaluation network; 200 species, or the 50 test species) are stored.
    Read with ``torch.load(weights_only=True)``; every key and shape is checked (a one-line UsageError naming
    the file otherwise). ``classes`` (when > 0) must equal the number of classes the file scores.

    ``resize`` and ``normalize`` (:data:`t2i.metrics.damsm.RESIZES`, :data:`~t2i.metrics.damsm.NORMALIZATIONS`)
    turn uint8 images into the 299 x 299 input the network was trained on. StackGAN's ``inception_score.py``:
    ``pil_bilinear`` (``scipy.misc.imresize(..., interp='bilinear')``) and ``minus_one_one``; its TF-slim network
    reserves class 0 for "background" and takes the softmax over the others: ``background=True`` does the same.
    """

    name = "inception_classifier"

    def __init__(
        self,
        path: str | Path,
        *,
        classes: int = 0,
        resize: str = "pil_bilinear",
        normalize: str = "minus_one_one",
        background: bool = False,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
    ):
        from .damsm import RESIZES, NORMALIZATIONS, load_exact, read_state_dict, torchvision_inception

        if resize not in RESIZES or normalize not in NORMALIZATIONS:
            raise UsageError(f"is: resize must be one of {', '.join(RESIZES)} and normalize one of {', '.join(NORMALIZATIONS)}")
        self.path = Path(path).expanduser()
        what = "an Inception-v3 classifier in torchvision's layout (Conv2d_1a_3x3 ... Mixed_7c, fc)"
        state = read_state_dict(self.path, "IS classifier")
        fc = state.get("fc.weight")
        if fc is None or fc.dim() != 2 or fc.shape[1] != 2048:
            raise UsageError(f"{self.path} does not hold {what}: no fc.weight of shape (classes, 2048)")
        outputs = int(fc.shape[0])
        scored = outputs - 1 if background else outputs
        if scored < 2 or (classes and classes != scored):
            bg = " after dropping the background class" if background else ""
            raise UsageError(f"{self.path} scores {scored} classes{bg}, expected {classes or 'at least 2'} (is.classes)")
        aux = any(k.startswith("AuxLogits.") for k in state)
        aux_classes = int(state["AuxLogits.fc.weight"].shape[0]) if "AuxLogits.fc.weight" in state else outputs
        net = torchvision_inception(outputs, aux_logits=aux)
        if aux and aux_classes != outputs:  # the auxiliary head is never run: let it keep the file's width
            with torch.device("meta"):
                net.AuxLogits.fc = torch.nn.Linear(net.AuxLogits.fc.in_features, aux_classes)
        self.net = load_exact(net, state, self.path, what).to(device).eval()
        self.device, self.batch_size = torch.device(device), batch_size
        self.resize, self.normalize, self.background = resize, normalize, background
        self.classes = scored
        self.dims = {"logits": scored}
        self.weights_sha256 = file_sha256(self.path)

    @torch.inference_mode()
    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        """uint8 ``(B, H, W, 3)`` -> ``{"logits": (B, classes)}`` float32 on the CPU (background column removed)."""
        from .damsm import inception_input

        parts = []
        for start in range(0, images.shape[0], self.batch_size):
            x = inception_input(images[start : start + self.batch_size], self.resize, self.normalize, self.device)
            logits = self.net(x)
            parts.append((logits[:, 1:] if self.background else logits).float().cpu())
        return {"logits": torch.cat(parts) if parts else torch.empty(0, self.classes)}

    def protocol(self) -> dict[str, Any]:
        """The classifier file and sha256, its classes, resize and normalisation, for the IS protocol."""
        import PIL

        from .damsm import NORMALIZATIONS, RESIZES

        return {
            "extractor": "inception_classifier (torchvision Inception3 from a state dict)",
            "classifier_file": str(self.path),
            "weights_file": self.path.name,
            "weights_sha256": self.weights_sha256,
            "classes": self.classes,
            "background_class_dropped": self.background,
            "resize": RESIZES[self.resize],
            "normalize": NORMALIZATIONS[self.normalize],
            "pillow": PIL.__version__,
        }

    def cache_key(self) -> dict[str, Any]:
        """Name, weights hash and preprocessing: what cached logits of this classifier must match."""
        return {"extractor": self.name, "weights_sha256": self.weights_sha256, "resize": self.resize,
                "normalize": self.normalize, "background": self.background}  # fmt: skip


# -- the formulas ------------------------------------------------------------------------------------
def _mmd2_unbiased(k_xx: Tensor, k_xy: Tensor, k_yy: Tensor) -> float:
    m = k_xx.shape[0]
    sum_xx = k_xx.sum() - k_xx.diagonal().sum()
    sum_yy = k_yy.sum() - k_yy.diagonal().sum()
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def kid_from_features(
    x: Tensor, y: Tensor, *, subsets: int = 100, subset_size: int = 1000, seed: int = 2020
) -> tuple[float, float]:
    """KID between features ``x`` (generated) and ``y`` (real): mean and std of the unbiased MMD^2 over subsets.

    Kernel ``k(a, b) = (a.b / d + 1)^3`` in float64. When both sets are small (<= 4096 rows) the kernel
    matrices are computed once and the subsets index them; otherwise each subset computes its own.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {tuple(x.shape)} and {tuple(y.shape)}")
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise UsageError(f"KID needs at least 2 images on each side, got {x.shape[0]} and {y.shape[0]}")
    x, y = x.double(), y.double()
    d = x.shape[1]

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return (a @ b.T / d + 1) ** 3

    rng = np.random.RandomState(seed)
    full = max(x.shape[0], y.shape[0]) <= 4096
    if full:
        k_xx, k_xy, k_yy = kernel(x, x), kernel(x, y), kernel(y, y)
    mmds = np.zeros(subsets)
    for i in range(subsets):
        ix = torch.from_numpy(rng.choice(x.shape[0], m, replace=False))
        iy = torch.from_numpy(rng.choice(y.shape[0], m, replace=False))
        if full:
            mmds[i] = _mmd2_unbiased(k_xx[ix][:, ix], k_xy[ix][:, iy], k_yy[iy][:, iy])
        else:
            a, b = x[ix], y[iy]
            mmds[i] = _mmd2_unbiased(kernel(a, a), kernel(a, b), kernel(b, b))
    return float(mmds.mean()), float(mmds.std())


def inception_score_from_logits(logits: Tensor, *, splits: int = 10, seed: int = 2020) -> tuple[float, float]:
    """IS from ``(N, C)`` logits: seeded shuffle, ``splits`` parts, ``exp(mean KL(p(y|x) || p(y)))`` per part.

    Raises ``RuntimeError`` if any part scores outside ``[1, C]`` (mathematically impossible: a bug).
    """
    if logits.dim() != 2 or logits.shape[0] < 1:
        raise ValueError(f"logits must be (N, C) with N >= 1, got {tuple(logits.shape)}")
    n, classes = logits.shape
    splits = min(splits, n)
    order = torch.from_numpy(np.random.RandomState(seed).permutation(n))
    logits = logits[order].double()
    log_p = logits.log_softmax(dim=1)
    p = log_p.exp()
    scores = []
    for i in range(splits):
        part_p, part_log_p = p[i * n // splits : (i + 1) * n // splits], log_p[i * n // splits : (i + 1) * n // splits]
        log_q = part_p.mean(0, keepdim=True).log()
        kl = (part_p * (part_log_p - log_q)).nan_to_num(0.0).sum(1).mean()  # 0 * log 0 = 0
        scores.append(math.exp(kl.item()))
    tol = 1e-9
    bad = [s for s in scores if not (1 - tol <= s <= classes * (1 + tol))]
    if bad:
        raise RuntimeError(f"Inception Score {bad[0]} is outside [1, {classes}]: this is a bug in t2i, please report it")
    return float(np.mean(scores)), float(np.std(scores))


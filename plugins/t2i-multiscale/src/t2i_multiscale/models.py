"""pix2pixHD's multi-scale discriminator for any registered discriminator: ``multiscale``.

Wang et al. (*High-Resolution Image Synthesis and Semantic Manipulation with Conditional GANs*, CVPR 2018,
"pix2pixHD") judge an image with the same discriminator architecture at several scales: the image itself and
its downsampled copies. The coarse scale sees the global layout with a large receptive field, the fine one
the detail. ``multiscale`` does that for t2i's text-conditional discriminators::

    t2i run --disc multiscale -D base=dcgan -D base_options="ndf=32" -D scales=2 --resolution 64

- ``base`` is any registered single-scale discriminator, built through the registry at each scale
  (``factory(cfg, resolution=s, text_dim=D)``) with ``base_options``;
- ``scales = n`` judges the resolution R and its n - 1 halvings: ``R / 2^(n-1), ..., R / 2, R``, smallest
  first (:attr:`MultiScaleDiscriminator.scales`, the engine's multi-scale contract, :mod:`t2i.engine.scales`);
- separate weights per scale by default (pix2pixHD's); ``shared = true`` ties them: one set of weights
  judges every scale (:func:`tie_parameters`), while buffers (BatchNorm's running statistics, spectral norm's
  vectors) stay each scale's own. That needs a base that builds the same parameters at every size, such as
  a fully convolutional one or ``clipd`` (its head reads CLIP's fixed-size grid); the others build one more
  down block per doubling and are refused, naming the first parameter that differs (:func:`first_difference`);
- ``scale_weights``: each scale's weight in the losses (default 1.0 each; the engine takes the weighted mean).

The engine gives the discriminator one image per scale: a multi-scale generator's own outputs (AttnGAN's
stages) when it has those sizes, else the final image downsampled by area averaging, as the real images
always are. :meth:`MultiScaleDiscriminator.forward` returns one :class:`~t2i.interfaces.DiscOutput` per
scale, each with that scale's logits and features, and every loss term applies per scale.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from torch import Tensor, nn

from t2i.engine.scales import downsample, scales_of
from t2i.errors import UsageError
from t2i.interfaces import DiscOutput, Discriminator, WordFeatures
from t2i.nn import check_context
from t2i.options import config_to_dict, parse_option_string, require_choices
from t2i.plugins import registry

__all__ = [
    "MultiScaleConfig",
    "MultiScaleDiscriminator",
    "pyramid",
    "resolutions_for",
    "first_difference",
    "tie_parameters",
]

NAME = "multiscale"


def pyramid(resolution: int, scales: int) -> tuple[int, ...]:
    """The sizes judged at ``resolution`` with ``scales`` scales, smallest first: ``(16, 32, 64)`` for 64 px
    and 3 scales. A one-line ``ValueError`` when ``resolution`` cannot be halved ``scales - 1`` times."""
    if resolution % 2 ** (scales - 1):
        raise ValueError(f"scales={scales}: {resolution} px cannot be halved {scales - 1} times; "
                         f"use fewer scales")
    return tuple(resolution >> k for k in reversed(range(scales)))


def resolutions_for(base_resolutions: Sequence[int], scales: int) -> tuple[int, ...]:
    """The resolutions at which a base declaring ``base_resolutions`` can judge all ``scales`` scales:
    ``(64, 128)`` for dcgan's 32, 64, 128 px and 2 scales."""
    declared = {int(r) for r in base_resolutions}
    return tuple(r for r in sorted(declared)
                 if r % 2 ** (scales - 1) == 0 and set(pyramid(r, scales)) <= declared)


Shape = tuple[int, ...]


def first_difference(a: nn.Module, b: nn.Module) -> tuple[str, Shape | None, Shape | None] | None:
    """The first parameter (in ``a``'s order, then ``b``'s) that ``a`` and ``b`` do not both have with one
    shape: ``(name, shape in a, shape in b)``, ``None`` for a missing one; ``None`` when they agree."""
    shapes_a = {n: tuple(p.shape) for n, p in a.named_parameters()}
    shapes_b = {n: tuple(p.shape) for n, p in b.named_parameters()}
    for name in [*shapes_a, *(n for n in shapes_b if n not in shapes_a)]:
        if shapes_a.get(name) != shapes_b.get(name):
            return name, shapes_a.get(name), shapes_b.get(name)
    return None


def tie_parameters(source: nn.Module, target: nn.Module) -> None:
    """Make every parameter of ``target`` the very ``nn.Parameter`` of ``source`` with the same name (the
    two must have the same names and shapes: :func:`first_difference`). Buffers are left alone.

    The tie survives what the engine does to a network: ``.to(device / dtype / memory_format)`` converts a
    parameter in place, ``load_state_dict`` copies into it, ``copy.deepcopy`` and pickling keep shared
    objects shared, and ``parameters()`` (what optimisers, DDP and parameter counts see) lists a tied one
    once. ``state_dict()`` still has each scale's keys (checkpoints store the tied weights once per scale).
    """
    for name, param in source.named_parameters():
        owner, _, attr = name.rpartition(".")
        setattr(target.get_submodule(owner), attr, param)


def _shape(shape: Shape | None) -> str:
    return "missing" if shape is None else f"of shape {tuple(shape)}"


@dataclass
class MultiScaleConfig:
    base: str = field(
        default="dcgan", metadata={"help": "the registered discriminator applied at every scale"}
    )
    base_options: dict[str, Any] | str = field(
        default_factory=dict,
        metadata={"help": "the base's options: a TOML table, or 'key=value,key=value' on the command line"},
    )
    scales: int = field(
        default=2,
        metadata={"help": "how many scales: the resolution and its scales-1 halvings (2 at 64 px: 32, 64)"},
    )
    shared: bool = field(
        default=False,
        metadata={"help": "one set of weights for every scale (the base must build the same parameters at "
                          "each size); false: a separate base per scale, as pix2pixHD"},
    )
    scale_weights: list[float] = field(
        default_factory=list,
        metadata={"help": "each scale's loss weight, smallest scale first (empty: 1.0 each); e.g. 0.5,1"},
    )

    def __post_init__(self) -> None:
        if not isinstance(self.base, str) or not self.base:
            raise ValueError(f"base must name a registered discriminator, got {self.base!r}")
        if self.base == NAME:
            raise ValueError(f"base: '{NAME}' cannot be its own base; name a single-scale discriminator")
        if isinstance(self.base_options, str):
            self.base_options = parse_option_string(self.base_options)
        if isinstance(self.scales, bool) or not isinstance(self.scales, int) or self.scales < 2:
            raise ValueError(f"scales must be an integer >= 2 (one scale is the base itself: "
                             f"--disc {self.base}), got {self.scales!r}")
        require_choices(self, "shared")
        weights = list(self.scale_weights)
        if weights and len(weights) != self.scales:
            raise ValueError(f"scale_weights has {len(weights)} values for scales={self.scales}; give one "
                             f"per scale, smallest first, or none for 1.0 each")
        if any(not math.isfinite(w) or w < 0 for w in weights) or (weights and not sum(weights) > 0):
            raise ValueError(f"scale_weights must be finite, >= 0 and not all 0, got {weights}")


class MultiScaleDiscriminator(Discriminator):
    """Another registered discriminator at several scales (pix2pixHD): ``nets[k]`` judges ``scales[k]``.

    Takes a list of images, one per scale, smallest first (or one full-resolution image, which it
    downsamples by area averaging as the engine does) and returns a list of :class:`DiscOutput`, one per
    scale.
    :meth:`image_features` and :meth:`condition` are those of the full-resolution scale, as AttnGAN's
    multi-scale discriminator's are its last stage's.

    Capabilities are the base's: ``uses_words``, ``provides_features`` (each scale's output carries that
    scale's features), and the instance's ``resolutions``, those at which the base judges every scale. The
    class declares 16 to 256 px, so that the engine's early check lets a run through; the base refuses what
    it cannot build, in one line naming the scale. The class also declares ``uses_words`` so that the engine
    passes ``word_dim``, which a base that reads words needs; each instance says whether its base does.
    """

    resolutions = (16, 32, 64, 128, 256)
    uses_words = True  # the engine then passes word_dim; the instance's value is the base's

    def __init__(self, cfg: MultiScaleConfig | None = None, *, resolution: int = 64, text_dim: int = 128,
                 word_dim: int | None = None) -> None:
        super().__init__()
        cfg = cfg or MultiScaleConfig()
        check_context(type(self), resolution, text_dim)
        self.cfg, self.resolution, self.text_dim = cfg, resolution, text_dim
        self._scales = pyramid(resolution, cfg.scales)

        discriminators = registry("discriminators")
        try:
            base_cfg = discriminators.make_config(cfg.base, cfg.base_options)
        except UsageError as exc:  # an unknown base, or options the base rejects: names both
            raise ValueError(f"base: {exc}") from None
        context: dict[str, Any] = {"text_dim": text_dim}
        if getattr(discriminators.get(cfg.base).factory, "uses_words", False):
            context["word_dim"] = word_dim
        base_cfgs = [copy.deepcopy(base_cfg) for _ in self._scales]  # each its own: a base may write into it
        nets = [self._build_base(discriminators, c, s, context) for c, s in zip(base_cfgs, self._scales)]
        first = nets[0]
        # written back so that the run's config.toml records the base's defaults and the weights as well
        cfg.base_options = config_to_dict(base_cfgs[0]) if dataclasses.is_dataclass(base_cfgs[0]) else {}
        self.scale_weights = tuple(float(w) for w in cfg.scale_weights) or (1.0,) * len(self._scales)
        cfg.scale_weights = list(self.scale_weights)

        if cfg.shared:
            for s, net in zip(self._scales[1:], nets[1:]):
                diff = first_difference(first, net)
                if diff is not None:
                    name, at_first, at_s = diff
                    raise ValueError(
                        f"shared=true needs the same parameters at every scale, but base '{cfg.base}' builds "
                        f"'{name}' {_shape(at_first)} at {self._scales[0]} px and {_shape(at_s)} at {s} px; "
                        f"use shared=false or a fully convolutional base")
                tie_parameters(first, net)
        self.nets = nn.ModuleList(nets)
        self.uses_words = bool(getattr(first, "uses_words", False))
        self.provides_features = bool(getattr(first, "provides_features", True))
        self.resolutions = resolutions_for(getattr(first, "resolutions", ()), cfg.scales)

    def _build_base(self, discriminators: Any, base_cfg: Any, size: int,
                    context: dict[str, Any]) -> Discriminator:
        """The base at ``size`` px, checked to be a single-scale, fixed-size t2i discriminator."""
        base, scales = self.cfg.base, ", ".join(map(str, self._scales))
        try:
            net = discriminators.create(base, base_cfg, resolution=size, **context)
        except (ValueError, TypeError) as exc:
            n = self.cfg.scales
            works = resolutions_for(getattr(discriminators.get(base).factory, "resolutions", ()), n)
            hint = (f"with scales={n} it judges {', '.join(map(str, works))} px images" if works
                    else f"no resolution works with scales={n}: use fewer scales or another base")
            raise ValueError(f"base '{base}' cannot judge the {size} px scale (scales {scales} px at "
                             f"{self.resolution} px): {exc} ({hint})") from None
        if not isinstance(net, Discriminator):
            raise ValueError(f"base '{base}' built a {type(net).__name__}, not a t2i Discriminator")
        if getattr(net, "progressive", False):
            raise ValueError(f"base '{base}' grows progressively; {NAME} judges fixed scales: choose a "
                             f"fixed-resolution discriminator")
        if len(scales_of(net)) > 1:
            sizes = ", ".join(map(str, scales_of(net)))
            raise ValueError(f"base '{base}' is itself multi-scale (it judges {sizes} px); choose a "
                             f"single-scale discriminator")
        return net

    @property
    def scales(self) -> tuple[int, ...]:
        return self._scales

    def on_train_step(self, step: int, images_seen: int) -> None:
        for net in self.nets:
            net.on_train_step(step, images_seen)

    def image_features(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        return self.nets[-1].image_features(image)

    def condition(self, h: Tensor, text: Tensor,  # type: ignore[override]
                  words: WordFeatures | None = None) -> Tensor:
        if self.uses_words:
            return self.nets[-1].condition(h, text, words)  # type: ignore[call-arg]
        return self.nets[-1].condition(h, text)

    def forward(self, images: Tensor | Sequence[Tensor], text: Tensor,  # type: ignore[override]
                mismatched_text: Tensor | None = None, *, words: WordFeatures | None = None,
                mismatched_words: WordFeatures | None = None) -> list[DiscOutput]:
        if isinstance(images, Tensor):
            images = [downsample(images, s) for s in self._scales]
        sizes = [int(x.shape[-1]) for x in images]
        if sizes != list(self._scales):
            expected = ", ".join(map(str, self._scales))
            raise ValueError(f"the {NAME} discriminator judges images of {expected} px, smallest first; "
                             f"got {', '.join(map(str, sizes)) or 'none'}")
        kwargs = {"words": words, "mismatched_words": mismatched_words} if self.uses_words else {}
        return [net(x, text, mismatched_text, **kwargs) for net, x in zip(self.nets, images)]

"""``clipd``: GALIP's discriminator (Tao et al., CVPR 2023): a frozen CLIP ViT and a small trainable head.

After the authors' release (tobran/GALIP, ``code/models/GALIP.py``: ``CLIP_IMG_ENCODER``, ``NetD``, ``NetC``,
``D_Block``), written for any open-clip ViT and any text embedding:

- :meth:`ClipDiscriminator.image_features` (their ``CLIP_IMG_ENCODER`` + ``NetD``): the image, resized to
  CLIP's input size and normalised, goes through the frozen ViT (:class:`~t2i_clipd.vit.TappedViT`), which
  returns the patch-token grids after the blocks in ``layers`` (GALIP: 1, 4 and 8 of ViT-B/32's 12, each
  768 x 7 x 7). The first grid starts the trunk; each further grid is added by a :class:`DBlock` as
  ``x + gamma * conv(x) + beta * grid`` (``gamma``, ``beta`` learned from 0); a last block maps the CLIP
  width to ``head_width`` (512) as ``shortcut(x) + gamma * conv(x)``.
- :meth:`ClipDiscriminator.condition` (their ``NetC``): the sentence embedding tiled over the grid and
  concatenated, a conv to ``joint_width`` (128), LeakyReLU(0.2), a conv to one logit. GALIP's kernels are
  4 and 4 on the 7 x 7 grid (7 -> 4 -> 1); here the first kernel is ``min(4, g)`` and the second covers
  what is left, which is the same at g = 7 and works on any grid.

The ViT is frozen and outside the module tree: not in ``parameters()`` (so not in D's optimiser, nor in
DDP's buckets), not in ``state_dict()`` (checkpoints hold the head only, and a 32-byte ``clip_id``, the sha256 of
the CLIP model's name and weights, so that loading the head onto other CLIP weights is refused in one line),
never switched to train mode; it moves with the module (``.to``, dtypes). Gradients flow
through it to the image, so the generator learns from CLIP's features.

What differs from the authors' code: images are resized with antialiased bicubic interpolation and
normalised once with CLIP's mean and std (``ClipBundle.preprocess``); the release resizes with nearest
neighbours and maps [-1, 1] to [0, 1] twice before normalising (its inputs lie in [0.5, 1]). The 1x1
shortcut conv exists only where the width changes (the release builds one in every block and leaves two
unused). GALIP's MA-GP takes the gradient with respect to the CLIP features and the sentence: that is the
``clip_ma_gp`` term of this plugin (:mod:`t2i_clipd.objective`); the core's ``ma_gp`` takes it with respect
to the image, through the ViT (a double backward through attention: several times slower).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from t2i.errors import UsageError
from t2i.interfaces import Discriminator
from t2i.nn import check_context
from t2i.options import require_choices, require_positive

from .vit import TappedViT, load_vit

__all__ = ["ClipDConfig", "ClipDiscriminator", "DBlock", "parameter_count"]


def _layers(value: object) -> tuple[int, ...]:
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not items or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in items):
        raise ValueError(f"layers must be transformer block indices (0-based), e.g. 1,4,8, got {value!r}")
    if list(items) != sorted(set(items)):
        raise ValueError(f"layers must be increasing block indices, e.g. 1,4,8, got {value!r}")
    return items


@dataclass
class ClipDConfig:
    model: str = field(default="ViT-B-32-quickgelu", metadata={
        "help": "open-clip ViT model name or JSON config path (GALIP: OpenAI's ViT-B/32, a QuickGELU model)"})
    pretrained: str = field(default="openai", metadata={
        "help": "open-clip pretrained tag, used when no weights file is given (downloads when online)"})
    weights: str = field(default="", metadata={
        "help": "CLIP weights file (else $T2I_CLIP_WEIGHTS, else the pretrained tag); random:SEED builds random "
                "frozen weights from SEED (a random feature extractor: tests and offline toys only)"})
    quick_gelu: bool = field(default=False, metadata={
        "help": "QuickGELU activations: needed for OpenAI's weights unless the model name ends in -quickgelu"})
    layers: tuple[int, ...] = field(default=(1, 4, 8), metadata={
        "help": "ViT blocks whose token grids the head reads, 0-based and increasing (GALIP: 1,4,8 of 12); "
                "the first starts the trunk, each further one is added by a D block"})
    head_width: int = field(default=512, metadata={
        "help": "channels of the trunk's last block, which the sentence is concatenated to (GALIP: 512)"})
    joint_width: int = field(default=128, metadata={
        "help": "channels of the conditional head's hidden conv (GALIP's NetC: 128)"})
    head: Literal["concat", "hybrid"] = field(default="concat", metadata={
        "help": "'concat': GALIP's NetC (sentence tiled over the grid); 'hybrid': plus a projection term "
                "(embedded sentence . mean-pooled trunk features), not in the paper (as t2i-dfgan's head=hybrid)"})
    gate_init: float = field(default=0.0, metadata={
        "help": "start value of the D blocks' learned gates gamma and beta (GALIP: 0, which keeps the trunk "
                "near its first grid for thousands of steps; 1 opens them from the start, README)"})

    def __post_init__(self) -> None:
        require_positive(self, "head_width", "joint_width")
        require_choices(self)
        self.layers = _layers(self.layers)


class DBlock(nn.Module):
    """GALIP's ``D_Block``: ``shortcut(x) + gamma * conv(x) [+ beta * clip_feature]``, gates learned from
    ``gate_init`` (GALIP: 0).

    ``conv`` is conv3x3, LeakyReLU(0.2), conv3x3, LeakyReLU(0.2), without biases, keeping the grid size; the
    1x1 shortcut conv is built only where the width changes.
    """

    def __init__(self, in_ch: int, out_ch: int, *, clip_feature: bool, gate_init: float = 0.0):
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False),
            nn.LeakyReLU(0.2),
            nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False),
            nn.LeakyReLU(0.2),
        )
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.gamma = nn.Parameter(torch.full((1,), float(gate_init)))
        self.beta = nn.Parameter(torch.full((1,), float(gate_init))) if clip_feature else None

    def forward(self, x: Tensor, clip_feature: Tensor | None = None) -> Tensor:
        out = self.shortcut(x) + self.gamma * self.residual(x)
        if self.beta is not None:
            assert clip_feature is not None, "this block adds a CLIP feature grid"
            out = out + self.beta * clip_feature
        return out


class ClipDiscriminator(Discriminator):
    """GALIP's discriminator: frozen CLIP ViT features (``NetD``'s input), a trainable trunk and sentence head."""

    resolutions = (32, 64, 128, 256)

    def __init__(self, cfg: ClipDConfig | None = None, *, resolution: int = 256, text_dim: int = 512) -> None:
        super().__init__()
        cfg = cfg or ClipDConfig()
        check_context(type(self), resolution, text_dim)
        self.cfg, self.resolution, self.text_dim = cfg, resolution, text_dim
        bundle = load_vit(cfg.model, weights=cfg.weights, pretrained=cfg.pretrained, quick_gelu=cfg.quick_gelu)
        object.__setattr__(self, "vit", TappedViT(bundle, cfg.layers))  # not a submodule: see the module docstring
        width, grid = self.vit.width, self.vit.grid

        self.blocks = nn.ModuleList(DBlock(width, width, clip_feature=True, gate_init=cfg.gate_init)
                                    for _ in cfg.layers[1:])
        self.main = DBlock(width, cfg.head_width, clip_feature=False, gate_init=cfg.gate_init)
        # which CLIP this head was trained on, saved with it: loading it onto other CLIP weights is refused
        self.register_buffer("clip_id", _clip_id(bundle.name, bundle.weights_sha256 or bundle.weights))
        first = min(4, grid)
        self.head = nn.Sequential(
            nn.Conv2d(cfg.head_width + text_dim, cfg.joint_width, first, 1, 0, bias=False),
            nn.LeakyReLU(0.2),
            nn.Conv2d(cfg.joint_width, 1, grid - first + 1, 1, 0, bias=False),
        )
        # hybrid: the projection discriminator's term (Miyato & Koyama 2018) beside NetC's concat head
        self.embed = nn.Linear(text_dim, cfg.head_width, bias=False) if cfg.head == "hybrid" else None

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "ClipDiscriminator":
        """Moves (``.to(device)``, dtypes, memory format) apply to the frozen ViT too."""
        super()._apply(fn, *args, **kwargs)
        self.vit.apply(fn)
        return self

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        saved = state_dict.get(prefix + "clip_id")
        if saved is not None and not torch.equal(saved.cpu(), self.clip_id.cpu()):
            raise UsageError(f"this clipd head was trained on other CLIP weights than {self.vit.bundle.name} / "
                             f"{self.vit.bundle.weights}: pass the model and weights it was trained with")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def image_features(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        return self.trunk(self.vit(image))

    def trunk(self, grids: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """The trainable trunk (GALIP's ``NetD``) on the ViT's grids: (its output, each block's output).
        Separate so that ``clip_ma_gp`` can differentiate with respect to the grids."""
        x, features = grids[0], []
        for block, grid in zip(self.blocks, grids[1:]):
            x = block(x, grid.to(x.dtype))
            features.append(x)
        x = self.main(x)
        return x, features + [x]

    def condition(self, h: Tensor, text: Tensor) -> Tensor:
        tiled = text[:, :, None, None].to(h.dtype).expand(-1, -1, h.shape[2], h.shape[3])
        logits = self.head(torch.cat([h, tiled], dim=1)).flatten()
        if self.embed is not None:  # mean-pooled, as t2i-dfgan's: MA-GP (k 2, p 6) expects gradients near 1
            logits = logits + (self.embed(text.to(h.dtype)) * h.mean(dim=(2, 3))).sum(dim=1)
        return logits


def _clip_id(name: str, weights: str) -> Tensor:
    """32 bytes naming a CLIP: sha256 of its model name and its weights' sha256 (or tag, or ``random:SEED``)."""
    return torch.tensor(list(hashlib.sha256(f"{name}|{weights}".encode()).digest()), dtype=torch.uint8)


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters of ``module`` (the frozen ViT is not among them)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


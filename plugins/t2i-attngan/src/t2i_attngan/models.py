"""AttnGAN (Xu et al., CVPR 2018) as a t2i generator and discriminator: stages of growing size, word attention.

The networks of the authors' release (taoxugit/AttnGAN, ``code/model.py`` and ``code/GlobalAttention.py``),
written anew, with the same layers and shapes and so the same parameter counts (README: "Parameter counts").

Generator (:class:`AttnGANGenerator`, their ``G_NET``), ``stages`` (1 to 3) images, smallest first:

- conditioning augmentation (:class:`ConditioningAugmentation`, ``CA_NET``): ``Linear(sentence) -> GLU`` gives
  ``mu`` and ``logvar`` (``condition_dim`` each); the condition is ``mu + exp(logvar / 2) * eps``. ``eps`` is
  the last ``condition_dim`` entries of the noise the engine draws (:attr:`AttnGANGenerator.z_dim` is
  ``z_dim + condition_dim``), so an image is a function of its noise and caption, reproducible from the seed
  like any other generator's; the distribution is the authors' (``eps ~ N(0, I)``, drawn anew for every image).
  The generator keeps ``(mu, logvar)`` of its last call in :attr:`AttnGANGenerator.ca_stats`, which the core's
  ``ca_kl`` term reads. It samples in eval mode too, as the authors' sampling code does (``CA_NET`` has no
  train/eval switch); ``-G ca_sample_eval=false`` uses ``mu`` when sampling instead.
- the first stage (:class:`InitStage`, ``INIT_STAGE_G``): ``[c; z] -> Linear -> BatchNorm1d -> GLU`` to a 4x4
  map, then up blocks (x2 nearest, conv3x3, BatchNorm, GLU) halving the width to ``ngf`` channels at the first
  stage's size;
- each next stage (:class:`NextStage`, ``NEXT_STAGE_G``): word attention (:class:`WordAttention`,
  ``GlobalAttentionGeneral``) gives every pixel a context vector (the words projected to ``ngf`` channels,
  weighted by a softmax over the caption's real words), ``[h; context]`` goes through ``r_num`` residual blocks
  and one up block back to ``ngf`` channels at twice the size;
- an image per stage (``GET_IMAGE_G``): conv3x3 to RGB, tanh.

Stage sizes: the last stage is the resolution and each earlier one is half the next: 64 -> 128 -> 256 at 256 px
(the paper), 16 -> 32 -> 64 at 64 px, 8 -> 16 -> 32 at 32 px. The first stage must be 8 to 64 px. Widths: the
authors' first stage is 16 ngf at 4x4 halving to ngf at 64 px; a first stage of size s starts at
``ngf * s / 4`` channels (2 ngf at 8 px), so every stage works at ``ngf`` channels as theirs do.

Discriminator (:class:`AttnGANDiscriminator`): one network per stage (:class:`StageDiscriminator`, their
``D_NET64`` / ``D_NET128`` / ``D_NET256``), each with a conditional logit (``D_GET_LOGITS`` with the sentence
tiled at 4x4, conv3x3 + BatchNorm + LeakyReLU, conv4x4) and an unconditional one (conv4x4 on the trunk). The
trunk of a 64 px stage is ``encode_image_by_16times`` (4 stride-2 convs, ndf -> 8 ndf at 4x4); larger stages add
a down block per doubling and as many conv3x3 blocks back to 8 ndf (their 128 and 256 px nets); smaller stages
keep the first ``log2(s / 4)`` of those convs (ndf at the image, ``ndf * s / 8`` at 4x4). The sigmoid of the
authors' heads is left out: t2i's losses take logits (``bce`` is their ``BCELoss`` on the sigmoid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from t2i.interfaces import DiscOutput, Discriminator, Generator, WordFeatures
from t2i.nn import check_context, trunk_features
from t2i.options import require_positive

__all__ = [
    "AttnGANGeneratorConfig",
    "AttnGANDiscriminatorConfig",
    "AttnGANGenerator",
    "AttnGANDiscriminator",
    "StageDiscriminator",
    "StageDiscriminatorConfig",
    "ConditioningAugmentation",
    "WordAttention",
    "InitStage",
    "NextStage",
    "stage_sizes",
    "parameter_count",
]

MAX_FIRST_STAGE = 64  # the paper's first stage; larger ones would start from a 32 ngf map
MIN_FIRST_STAGE = 8


def stage_sizes(resolution: int, stages: int) -> tuple[int, ...]:
    """The image size of each stage, smallest first: ``resolution / 2^(stages-1)``, ..., ``resolution``.

    Raises ``ValueError`` when the first stage would be smaller than 8 or larger than 64 px."""
    if not 1 <= stages <= 3:
        raise ValueError(f"stages must be 1, 2 or 3, got {stages}")
    sizes = tuple(resolution // 2 ** (stages - 1 - i) for i in range(stages))
    if not MIN_FIRST_STAGE <= sizes[0] <= MAX_FIRST_STAGE:
        raise ValueError(f"stages={stages} at {resolution} px gives a first stage of {sizes[0]} px; it must be "
                         f"{MIN_FIRST_STAGE} to {MAX_FIRST_STAGE} px (the paper: 3 stages at 256 px, 64 -> 128 -> 256)")
    return sizes


@dataclass
class AttnGANGeneratorConfig:
    ngf: int = field(default=32, metadata={
        "help": "channels of every stage's map (the authors' GAN.GF_DIM: 32 birds, 48 COCO); the first stage starts "
                "at ngf * size / 4 (16 ngf at 4x4 for a 64 px stage)"})
    z_dim: int = field(default=100, metadata={"help": "size of the noise vector z (GAN.Z_DIM: 100)"})
    condition_dim: int = field(default=100, metadata={
        "help": "size of the conditioning-augmentation code c (GAN.CONDITION_DIM: 100)"})
    r_num: int = field(default=2, metadata={"help": "residual blocks per refinement stage (GAN.R_NUM: 2 birds, 3 COCO)"})
    stages: int = field(default=3, metadata={
        "help": "images produced, each twice the size of the previous, the last at the resolution (TREE.BRANCH_NUM: 3)"})
    word_dim: int = field(default=0, metadata={
        "help": "size of the word features (0: the text encoder's, which the engine passes; else the sentence size)"})
    ca_sample_eval: bool = field(default=True, metadata={
        "help": "sample the CA code when sampling (eval mode) too, as the authors do; false: use mu"})

    def __post_init__(self) -> None:
        require_positive(self, "ngf", "z_dim", "condition_dim")
        if self.r_num < 0 or self.word_dim < 0:
            raise ValueError(f"r_num and word_dim must be >= 0, got r_num={self.r_num}, word_dim={self.word_dim}")
        if not 1 <= self.stages <= 3:
            raise ValueError(f"stages must be 1, 2 or 3, got {self.stages}")


@dataclass
class AttnGANDiscriminatorConfig:
    ndf: int = field(default=64, metadata={
        "help": "channels of each stage's first conv (the authors' GAN.DF_DIM: 64 birds, 96 COCO); 8 ndf at 4x4 "
                "for stages of 64 px and more"})
    stages: int = field(default=3, metadata={
        "help": "one discriminator per generator stage, smallest first (the generator's stages)"})

    def __post_init__(self) -> None:
        require_positive(self, "ndf")
        if not 1 <= self.stages <= 3:
            raise ValueError(f"stages must be 1, 2 or 3, got {self.stages}")


@dataclass
class StageDiscriminatorConfig:
    ndf: int = field(default=64, metadata={
        "help": "channels of the first conv (GAN.DF_DIM: 64 birds, 96 COCO); 8 ndf at 4x4 for 64 px and more"})

    def __post_init__(self) -> None:
        require_positive(self, "ndf")


# --------------------------------------------------------------------------------------------------
# Generator blocks


def _conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False)


class GLU(nn.Module):
    """Gated linear unit over channels: the first half times the sigmoid of the second (the authors' ``GLU``)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.glu(x, dim=1)


def up_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """x2 nearest, conv3x3 to ``2 out_ch``, BatchNorm, GLU (``upBlock``)."""
    return nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"), _conv3x3(in_ch, out_ch * 2),
                         nn.BatchNorm2d(out_ch * 2), GLU())


class ResBlock(nn.Module):
    """``x + BN(conv3x3(GLU(BN(conv3x3(x)))))`` (the authors' ``ResBlock``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(_conv3x3(channels, channels * 2), nn.BatchNorm2d(channels * 2), GLU(),
                                   _conv3x3(channels, channels), nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class ConditioningAugmentation(nn.Module):
    """Sentence -> ``(c, mu, logvar)``: ``Linear(text_dim, 4 c_dim) -> GLU`` splits into ``mu`` and ``logvar``,
    and ``c = mu + exp(logvar / 2) * eps`` for a standard-normal ``eps`` (``eps=None``: ``c = mu``)."""

    def __init__(self, text_dim: int, condition_dim: int):
        super().__init__()
        self.condition_dim = condition_dim
        self.fc = nn.Linear(text_dim, condition_dim * 4)

    def forward(self, text: Tensor, eps: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        x = F.glu(self.fc(text), dim=1)
        mu, logvar = x[:, : self.condition_dim], x[:, self.condition_dim :]
        if eps is None:
            return mu, mu, logvar
        return mu + eps.to(mu.dtype) * torch.exp(0.5 * logvar), mu, logvar


class WordAttention(nn.Module):
    """Each pixel's context vector from the caption's words (the authors' ``GlobalAttentionGeneral``).

    The words ``(B, L, word_dim)`` are projected to the map's ``channels`` (a 1x1 conv without bias, as
    ``conv_context``); pixel ``p`` scores word ``l`` by the dot product ``h_p . e_l``; a softmax over the real
    words (the padding of :attr:`WordFeatures.mask` gets ``-inf``, so padded words never count) weights the
    projected words into a context ``(B, channels, H, W)``. The attention maps ``(B, L, H, W)`` of the last call
    are kept in :attr:`last_attention` (for plots).
    """

    def __init__(self, channels: int, word_dim: int):
        super().__init__()
        self.project = nn.Linear(word_dim, channels, bias=False)
        self.last_attention: Tensor | None = None

    def forward(self, h: Tensor, words: WordFeatures) -> Tensor:
        b, c, height, width = h.shape
        source = self.project(words.features.to(h.dtype))  # (B, L, C)
        query = h.flatten(2).transpose(1, 2)  # (B, HW, C)
        scores = torch.bmm(query, source.transpose(1, 2))  # (B, HW, L)
        scores = scores.float().masked_fill(~words.mask.to(torch.bool)[:, None, :], float("-inf"))
        attention = scores.softmax(dim=2).to(h.dtype)
        context = torch.bmm(attention, source)  # (B, HW, C)
        self.last_attention = attention.detach().transpose(1, 2).reshape(b, -1, height, width)
        return context.transpose(1, 2).reshape(b, c, height, width)


class InitStage(nn.Module):
    """``[c; z]`` -> ``(B, ngf, size, size)``: Linear + BatchNorm1d + GLU to 4x4, then up blocks halving the width
    (the authors' ``INIT_STAGE_G``)."""

    def __init__(self, in_dim: int, ngf: int, size: int):
        super().__init__()
        ups = int(math.log2(size // 4))
        self.width = ngf * 2**ups  # 16 ngf at 4x4 for a 64 px stage
        self.fc = nn.Sequential(nn.Linear(in_dim, self.width * 16 * 2, bias=False),
                                nn.BatchNorm1d(self.width * 16 * 2), GLU())
        self.ups = nn.Sequential(*(up_block(self.width // 2**i, self.width // 2 ** (i + 1)) for i in range(ups)))

    def forward(self, cz: Tensor) -> Tensor:
        return self.ups(self.fc(cz).view(cz.shape[0], self.width, 4, 4))


class NextStage(nn.Module):
    """``h`` ``(B, ngf, s, s)`` + words -> ``(B, ngf, 2s, 2s)``: word attention, ``[h; context]`` through ``r_num``
    residual blocks, one up block (the authors' ``NEXT_STAGE_G``)."""

    def __init__(self, ngf: int, word_dim: int, r_num: int):
        super().__init__()
        self.attention = WordAttention(ngf, word_dim)
        self.residual = nn.Sequential(*(ResBlock(ngf * 2) for _ in range(r_num)))
        self.up = up_block(ngf * 2, ngf)

    def forward(self, h: Tensor, words: WordFeatures) -> Tensor:
        return self.up(self.residual(torch.cat([h, self.attention(h, words)], dim=1)))


def _to_image(ngf: int) -> nn.Sequential:
    return nn.Sequential(_conv3x3(ngf, 3), nn.Tanh())  # GET_IMAGE_G


class AttnGANGenerator(Generator):
    """AttnGAN's ``G_NET``: conditioning augmentation, a first stage, refinement stages with word attention; one
    image per stage, smallest first. Called as ``G(z, sentence, words=WordFeatures)`` with ``z`` of
    :attr:`z_dim` = ``cfg.z_dim + cfg.condition_dim``: the noise, then the CA's ``eps``."""

    resolutions = (32, 64, 128, 256)
    uses_words = True

    def __init__(self, cfg: AttnGANGeneratorConfig | None = None, *, resolution: int = 256, text_dim: int = 256,
                 word_dim: int | None = None) -> None:
        super().__init__()
        cfg = cfg or AttnGANGeneratorConfig()
        check_context(type(self), resolution, text_dim)
        self.cfg, self.resolution, self.text_dim = cfg, resolution, text_dim
        self.z_dim = cfg.z_dim + cfg.condition_dim  # the noise z, then CA's eps
        if word_dim and cfg.word_dim and word_dim != cfg.word_dim:
            raise ValueError(f"word_dim={cfg.word_dim} but the text encoder's word features are {word_dim}-d")
        self.word_dim = word_dim or cfg.word_dim or text_dim  # the engine passes the text encoder's
        self._scales = stage_sizes(resolution, cfg.stages)
        self.ca = ConditioningAugmentation(text_dim, cfg.condition_dim)
        self.init_stage = InitStage(cfg.condition_dim + cfg.z_dim, cfg.ngf, self._scales[0])
        self.next_stages = nn.ModuleList(NextStage(cfg.ngf, self.word_dim, cfg.r_num) for _ in self._scales[1:])
        self.to_rgb = nn.ModuleList(_to_image(cfg.ngf) for _ in self._scales)
        self.ca_stats: tuple[Tensor, Tensor] | None = None

    @property
    def scales(self) -> tuple[int, ...]:
        return self._scales

    def forward(self, z: Tensor, text: Tensor, words: WordFeatures | None = None) -> list[Tensor]:  # type: ignore[override]
        if words is None and self.next_stages:
            raise ValueError("the attngan generator attends to words: call it as G(z, text, words=WordFeatures) "
                             "(a text encoder with word features, e.g. --text-encoder gru or damsm)")
        if words is not None and words.dim != self.word_dim:
            raise ValueError(f"the attngan generator was built for {self.word_dim}-d word features, got {words.dim}-d "
                             f"(set -G word_dim={words.dim})")
        z, eps = z[:, : self.cfg.z_dim], z[:, self.cfg.z_dim :]
        c, mu, logvar = self.ca(text, eps if self.training or self.cfg.ca_sample_eval else None)
        self.ca_stats = (mu, logvar)
        h = self.init_stage(torch.cat([c, z], dim=1))
        images = [self.to_rgb[0](h)]
        for stage, to_rgb in zip(self.next_stages, self.to_rgb[1:]):
            h = stage(h, words)
            images.append(to_rgb(h))
        return images

    def __getstate__(self) -> dict:
        """Copies and pickles leave ``ca_stats`` behind (tensors in a graph cannot be deep-copied)."""
        state = super().__getstate__()
        state["ca_stats"] = None
        return state


# --------------------------------------------------------------------------------------------------
# Discriminator


def _down(in_ch: int, out_ch: int, norm: bool = True) -> nn.Sequential:
    """conv4x4 stride 2 (no bias), BatchNorm (not on the first layer), LeakyReLU(0.2) (``downBlock``)."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=False)]
    if norm:
        layers.append(nn.BatchNorm2d(out_ch))
    return nn.Sequential(*layers, nn.LeakyReLU(0.2))


def _block3x3(in_ch: int, out_ch: int) -> nn.Sequential:
    """conv3x3 (no bias), BatchNorm, LeakyReLU(0.2) (``Block3x3_leakRelu``)."""
    return nn.Sequential(_conv3x3(in_ch, out_ch), nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.2))


def stage_trunk(ndf: int, size: int) -> tuple[nn.ModuleList, int]:
    """The trunk of the ``size`` px stage's discriminator, to a 4x4 map, and that map's width.

    64 px: the authors' ``encode_image_by_16times`` (ndf, 2, 4, 8 ndf). Smaller: its first ``log2(size/4)``
    convs. Larger: a down block per doubling (16, 32 ndf), then conv3x3 blocks back to 8 ndf (``D_NET128/256``).
    """
    n = min(int(math.log2(size // 4)), 4)
    widths = [ndf * 2**i for i in range(n)]
    blocks = [_down(i, o, norm=k > 0) for k, (i, o) in enumerate(zip([3] + widths[:-1], widths))]
    extra = int(math.log2(size // 64)) if size > 64 else 0
    width = widths[-1]
    for _ in range(extra):
        blocks.append(_down(width, width * 2))
        width *= 2
    for _ in range(extra):
        blocks.append(_block3x3(width, width // 2))
        width //= 2
    return nn.ModuleList(blocks), width


class StageDiscriminator(Discriminator):
    """One stage's discriminator (``D_NET64/128/256``): the trunk to 4x4, a conditional head (the sentence tiled
    over the 4x4 map, conv3x3 + BatchNorm + LeakyReLU, conv4x4 to a logit: ``COND_DNET``) and an unconditional one
    (conv4x4 on the trunk: ``UNCOND_DNET``). A single-scale t2i discriminator on its own."""

    resolutions = (8, 16, 32, 64, 128, 256)

    def __init__(self, cfg: StageDiscriminatorConfig | AttnGANDiscriminatorConfig | None = None, *,
                 resolution: int = 64, text_dim: int = 256) -> None:
        super().__init__()
        cfg = cfg or StageDiscriminatorConfig()
        check_context(type(self), resolution, text_dim)
        self.cfg, self.resolution, self.text_dim = cfg, resolution, text_dim
        self.blocks, width = stage_trunk(cfg.ndf, resolution)
        self.joint = _block3x3(width + text_dim, width)
        self.cond_logits = nn.Conv2d(width, 1, 4, 4)
        self.uncond_logits = nn.Conv2d(width, 1, 4, 4)

    def image_features(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        return trunk_features(image, self.blocks)

    def condition(self, h: Tensor, text: Tensor) -> Tensor:
        tiled = text[:, :, None, None].to(h.dtype).expand(-1, -1, h.shape[2], h.shape[3])
        return self.cond_logits(self.joint(torch.cat([h, tiled], dim=1))).flatten()

    def unconditional(self, h: Tensor) -> Tensor:
        return self.uncond_logits(h).flatten()

    def forward(self, image: Tensor, text: Tensor, mismatched_text: Tensor | None = None, *,
                words: WordFeatures | None = None, mismatched_words: WordFeatures | None = None) -> DiscOutput:
        h, features = self.image_features(image)
        mismatched = None if mismatched_text is None else self.condition(h, mismatched_text)
        return DiscOutput(logits=self.condition(h, text), features=features, mismatched_logits=mismatched,
                          uncond_logits=self.unconditional(h))


class AttnGANDiscriminator(Discriminator):
    """One :class:`StageDiscriminator` per generator stage: takes the list of images (smallest first) and returns
    a list of :class:`DiscOutput`. Given one full-resolution image instead, it judges that image resized (area)
    to every stage. :meth:`image_features` and :meth:`condition` are those of the last stage."""

    resolutions = (32, 64, 128, 256)

    def __init__(self, cfg: AttnGANDiscriminatorConfig | None = None, *, resolution: int = 256,
                 text_dim: int = 256) -> None:
        super().__init__()
        cfg = cfg or AttnGANDiscriminatorConfig()
        check_context(type(self), resolution, text_dim)
        self.cfg, self.resolution, self.text_dim = cfg, resolution, text_dim
        self._scales = stage_sizes(resolution, cfg.stages)
        self.stages = nn.ModuleList(StageDiscriminator(cfg, resolution=s, text_dim=text_dim) for s in self._scales)
        self.scale_weights = (1.0,) * len(self._scales)  # the authors sum the stages' losses

    @property
    def scales(self) -> tuple[int, ...]:
        return self._scales

    def image_features(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        return self.stages[-1].image_features(image)

    def condition(self, h: Tensor, text: Tensor) -> Tensor:
        return self.stages[-1].condition(h, text)

    def forward(self, images: Tensor | list[Tensor], text: Tensor, mismatched_text: Tensor | None = None, *,  # type: ignore[override]
                words: WordFeatures | None = None, mismatched_words: WordFeatures | None = None) -> list[DiscOutput]:
        if isinstance(images, Tensor):
            images = [images if s == images.shape[-1] else F.interpolate(images, size=(s, s), mode="area")
                      for s in self._scales]
        if len(images) != len(self.stages):
            raise ValueError(f"the attngan discriminator judges {len(self.stages)} scales "
                             f"({', '.join(map(str, self._scales))} px), got {len(images)} images")
        return [d(x, text, mismatched_text) for d, x in zip(self.stages, images)]


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)

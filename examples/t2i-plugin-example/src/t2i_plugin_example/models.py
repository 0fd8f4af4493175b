"""``tiny_mlp``: a text-conditional generator made of linear layers only.

``[z; LeakyReLU(Linear(text))]`` -> ``layers`` x (Linear + LeakyReLU) -> Linear to ``3 * R * R`` pixels
-> tanh.
It will not win any benchmark; it is the smallest generator that honours the contract in
:class:`t2i.interfaces.Generator`:

- built as ``factory(cfg, resolution=R, text_dim=D)``, with the options in a config dataclass whose
  fields carry ``help`` (shown by ``t2i describe generator tiny_mlp``, set with ``-G hidden=128``);
- supported resolutions declared in the class attribute ``resolutions`` (checked before step 1, and
  again by :func:`t2i.nn.check_context` when it is built);
- ``forward(z, text)`` returns ``(B, 3, R, R)`` images in ``[-1, 1]``;
- bad options raise ``ValueError`` (:func:`t2i.options.require_positive` writes the message; the engine
  turns it into a one-line error naming the component).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from t2i.interfaces import Generator
from t2i.nn import check_context
from t2i.options import require_positive
from torch import Tensor, nn

__all__ = ["TinyMLPConfig", "TinyMLPGenerator"]


@dataclass
class TinyMLPConfig:
    hidden: int = field(default=256, metadata={"help": "width of every hidden layer"})
    layers: int = field(default=2, metadata={"help": "number of hidden layers"})
    z_dim: int = field(default=32, metadata={"help": "size of the noise vector z"})
    text_proj_dim: int = field(default=32, metadata={"help": "the text embedding is projected to this size"})

    def __post_init__(self) -> None:
        require_positive(self, "hidden", "layers", "z_dim", "text_proj_dim")


class TinyMLPGenerator(Generator):
    """Text-conditional MLP generator: every pixel from one linear layer on a small hidden code."""

    resolutions = (16, 32, 64)  # 3 * R * R outputs per image: an MLP is no place for 128 px

    def __init__(self, cfg: TinyMLPConfig | None = None, *, resolution: int = 32, text_dim: int = 128):
        super().__init__()
        cfg = cfg or TinyMLPConfig()
        check_context(type(self), resolution, text_dim)  # a resolution not in `resolutions`: ValueError
        self.cfg, self.resolution, self.text_dim, self.z_dim = cfg, resolution, text_dim, cfg.z_dim
        self.text_proj = nn.Sequential(nn.Linear(text_dim, cfg.text_proj_dim), nn.LeakyReLU(0.2))
        widths = [cfg.z_dim + cfg.text_proj_dim] + [cfg.hidden] * cfg.layers
        body: list[nn.Module] = []
        for w_in, w_out in itertools.pairwise(widths):
            body += [nn.Linear(w_in, w_out), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*body)
        self.to_pixels = nn.Linear(cfg.hidden, 3 * resolution * resolution)

    def forward(self, z: Tensor, text: Tensor) -> Tensor:
        h = self.body(torch.cat([z, self.text_proj(text)], dim=1))
        return torch.tanh(self.to_pixels(h)).view(-1, 3, self.resolution, self.resolution)

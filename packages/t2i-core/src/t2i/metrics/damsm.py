"""AttnGAN / DM-GAN's DAMSM encoders, read from the authors' released files, as an R-precision encoder pair.

AttnGAN (Xu et al. 2018) scores text-to-image models with R-precision measured by its Deep Attentional
Multimodal Similarity Model (DAMSM): a text RNN and an Inception-based image CNN trained together on the data
set. The authors release the trained pair as two PyTorch state dicts, ``text_encoder200.pth`` and
``image_encoder200.pth`` (CUB; ``text_encoder100.pth`` / ``image_encoder100.pth`` for COCO), plus the
vocabulary the text encoder was trained with, inside ``captions.pickle``. DM-GAN (Zhu et al. 2019), DF-GAN and
most later papers report R-precision with exactly these files. This module rebuilds the two networks with the
authors' parameter names, loads the files with ``torch.load(weights_only=True)`` (tensors only: no code runs)
and reads the pickle with :func:`t2i.data.safe_pickle.load_pickle` (plain data only).

The networks (AttnGAN's ``code/model.py``, identical in DM-GAN):

- :class:`DamsmTextEncoder` (``RNN_ENCODER``): ``encoder`` (``nn.Embedding(n_words, 300)``) and ``rnn`` (a one-layer
  bidirectional ``nn.LSTM``, ``batch_first``, 128 hidden units per direction, so 256 in all: the authors pass
  ``nhidden=EMBEDDING_DIM=256`` and halve it per direction). A caption's embedding is the LSTM's final hidden
  state of both directions, ``[h_forward; h_backward]`` (256-d), over the caption's words only (packed sequence).
  Dropout (on the embeddings) is inactive at evaluation.
- :class:`DamsmImageEncoder` (``CNN_ENCODER``): torchvision's Inception-v3 layers ``Conv2d_1a_3x3`` ...
  ``Mixed_7c`` (ImageNet weights, frozen during DAMSM training, stored in the file), then
  ``emb_features`` (1x1 convolution 768 -> 256 on ``Mixed_6e``'s 17x17 map: the word-level region features) and
  ``emb_cnn_code`` (linear 2048 -> 256 on ``Mixed_7c`` average-pooled over its 8x8 map: the image's global code,
  the one R-precision uses). Images enter as ``[-1, 1]`` floats (AttnGAN's ``Normalize((0.5,) * 3, (0.5,) * 3)``)
  and are resized by ``nn.Upsample(size=(299, 299), mode='bilinear', align_corners=True)``.

Sizes are read from the files (vocabulary, embedding, hidden and code widths), then every key and shape is
checked: a file with other names or shapes is a one-line :class:`~t2i.errors.UsageError` naming the file and
what was expected. Parameter counts (computed from these modules) for the authors' CUB files, vocabulary 5,450:
text encoder 2,075,320 (embedding 5,450 x 300 = 1,635,000 + LSTM 2 x 220,160 = 440,320; with 256 units per
direction it would be 2,777,784); image encoder 22,506,720 (Inception-v3 layers without ``AuxLogits`` and ``fc``
21,785,568 + ``emb_features`` 196,608 + ``emb_cnn_code`` 524,544; BatchNorm statistics are buffers, not counted).
:func:`parameter_counts` recomputes them for any loaded pair; the protocol records them.

Tokenisation (AttnGAN's ``datasets.py``): ``caption.replace("\\ufffd\\ufffd", " ")``, lower-case, tokens are the
runs of word characters (NLTK's ``RegexpTokenizer(r'\\w+')``, Unicode-aware), each reduced to its ASCII
characters (empty ones dropped); words missing from the vocabulary are dropped. A caption longer than
``words`` (AttnGAN's ``WORDS_NUM``: 18; DM-GAN's evaluation configs: 25 for birds, 20 for COCO) keeps a random
subset of ``words`` of its words in their original order, as the authors' ``get_caption`` does; here the subset
is seeded by the caption's text and ``seed``, so it is the same on every run. A caption with no known word is
encoded as the lone ``<end>`` token (id 0); the protocol counts such captions and the dropped words, so a
vocabulary that does not fit the data shows.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from ..weights import file_sha256

__all__ = [
    "RESIZES", "NORMALIZATIONS", "inception_input", "read_state_dict", "load_exact", "torchvision_inception",
    "DamsmTextEncoder", "DamsmImageEncoder", "DamsmSmallImageEncoder", "load_text_encoder", "load_image_encoder",
    "load_vocabulary", "tokenize", "caption_ids", "DamsmPair", "load_damsm_pair", "parameter_counts",
]  # fmt: skip

_SIZE = 299

# -- images into a torchvision Inception-v3 --------------------------------------------------------------------
Resize = Literal["pil_bilinear", "bilinear", "bilinear_align_corners"]
Normalize = Literal["minus_one_one", "imagenet"]

RESIZES: dict[str, str] = {
    "pil_bilinear": "PIL bilinear resize of the uint8 image to 299x299, kept uint8 (scipy.misc.imresize(interp="
                    "'bilinear') in StackGAN's inception_score.py; torchvision's Resize on PIL images)",
    "bilinear": "F.interpolate bilinear to 299x299 of the float image (align_corners=False, no antialias)",
    "bilinear_align_corners": "F.interpolate bilinear to 299x299 with align_corners=True (nn.Upsample in "
                              "AttnGAN/DM-GAN's CNN_ENCODER)",
}  # fmt: skip
NORMALIZATIONS: dict[str, str] = {
    "minus_one_one": "x / 127.5 - 1, i.e. [-1, 1] (StackGAN's Inception; AttnGAN's Normalize((0.5,)*3, (0.5,)*3))",
    "imagenet": "x / 255, then (x - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225) (torchvision's ImageNet "
                "normalisation)",
}  # fmt: skip
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def inception_input(images: Tensor, resize: str, normalize: str, device: str | torch.device = "cpu") -> Tensor:
    """uint8 ``(B, H, W, 3)`` -> float32 ``(B, 3, 299, 299)`` on ``device``, resized and normalised as named
    (:data:`RESIZES`, :data:`NORMALIZATIONS`). The PIL resize works on the uint8 image; the others on floats."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (B, H, W, 3), got {images.dtype} {tuple(images.shape)}")
    if resize not in RESIZES or normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown resize {resize!r} or normalisation {normalize!r}")
    if resize == "pil_bilinear":
        from PIL import Image

        resized = [np.asarray(Image.fromarray(im).resize((_SIZE, _SIZE), Image.BILINEAR))
                   for im in images.cpu().numpy()]
        images = torch.from_numpy(np.stack(resized)) if resized else images.new_zeros((0, _SIZE, _SIZE, 3))
    x = images.to(device).permute(0, 3, 1, 2).float()
    if normalize == "minus_one_one":
        x = x / 127.5 - 1
    else:
        mean = torch.tensor(_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(_STD, device=x.device).view(1, 3, 1, 1)
        x = (x / 255 - mean) / std
    if resize != "pil_bilinear":
        x = F.interpolate(x, size=(_SIZE, _SIZE), mode="bilinear", align_corners=resize == "bilinear_align_corners")
    return x.contiguous()


# -- state-dict files --------------------------------------------------------------------------------------------
def read_state_dict(path: str | Path, what: str) -> dict[str, Tensor]:
    """The tensors in PyTorch file ``path`` (``torch.load(weights_only=True)``: no pickled code runs).

    ``what`` names the file's role in errors ("DAMSM text encoder"). A missing file, a file torch cannot read
    and a file that is not a flat ``{name: tensor}`` dict are one-line :class:`UsageError` s naming ``path``. A
    ``module.`` prefix on every key (a model saved from ``nn.DataParallel``) is removed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"{what}: {path} is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UsageError(f"{what}: {path} cannot be read as a PyTorch state dict ({detail})") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise UsageError(f"{what}: {path} does not hold a state dict (a dict of tensors), got {type(state).__name__}")
    out = {str(k): v for k, v in state.items()}
    if all(k.startswith("module.") for k in out):
        out = {k[len("module."):]: v for k, v in out.items()}
    return out


def _examples(names: Sequence[str], k: int = 3) -> str:
    shown = ", ".join(sorted(names)[:k])
    return shown + (f" (+{len(names) - k} more)" if len(names) > k else "")


def load_exact(module: nn.Module, state: Mapping[str, Tensor], path: str | Path, what: str) -> nn.Module:
    """Load ``state`` into ``module`` (built on the ``meta`` device or not) requiring exactly its keys and shapes.

    BatchNorm's ``num_batches_tracked`` counters may be missing (files saved by PyTorch < 0.4.1 have none) or
    present; they do not change the forward pass. Anything else missing, unexpected or of another shape is
    one :class:`UsageError` line naming ``path``, ``what`` was expected and the first offending keys.
    """
    expected = module.state_dict()
    given = {k: v for k, v in state.items() if not (k.endswith("num_batches_tracked") and k not in expected)}
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in given:
            given[key] = torch.zeros((), dtype=torch.long)
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} is {tuple(given[k].shape)}, expected {tuple(v.shape)}" for k, v in expected.items()
              if k in given and tuple(given[k].shape) != tuple(v.shape)]  # fmt: skip
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} keys missing ({_examples(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_examples(unexpected)})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape ({'; '.join(shapes[:2])})")
        raise UsageError(f"{path} does not hold {what}: {', '.join(parts)}")
    module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in given.items()},
                           strict=True, assign=True)  # fmt: skip
    return module


def torchvision_inception(num_classes: int = 1000, aux_logits: bool = False) -> nn.Module:
    """torchvision's ``Inception3`` built on the ``meta`` device (no memory, no initialisation): its layers and
    parameter names are those of the state dicts that fine-tuned Inceptions and DAMSM's image encoder store.
    Fill it with :func:`load_exact`."""
    from torchvision.models.inception import Inception3

    with torch.device("meta"):
        return Inception3(num_classes=num_classes, aux_logits=aux_logits, transform_input=False, init_weights=False)


# -- the networks ------------------------------------------------------------------------------------------------
class DamsmTextEncoder(nn.Module):
    """AttnGAN's ``RNN_ENCODER`` at evaluation: word ids -> (word features, sentence embedding).

    ``n_words`` x ``embedding`` embedding table ``encoder``; one-layer LSTM ``rnn`` with ``hidden`` units per
    direction (bidirectional by default: the sentence embedding is ``2 * hidden`` wide).
    """

    def __init__(self, n_words: int, embedding: int = 300, hidden: int = 128, bidirectional: bool = True):
        super().__init__()
        self.encoder = nn.Embedding(n_words, embedding)
        self.rnn = nn.LSTM(embedding, hidden, num_layers=1, batch_first=True, bidirectional=bidirectional)

    @property
    def width(self) -> int:
        """Size of a sentence embedding."""
        return self.rnn.hidden_size * (2 if self.rnn.bidirectional else 1)

    def forward(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``ids`` ``(B, T)`` (padded with 0 past each length), ``lengths`` ``(B,)`` >= 1 ->
        words ``(B, width, T')`` and sentences ``(B, width)``, where ``T' = max(lengths)``."""
        packed = nn.utils.rnn.pack_padded_sequence(self.encoder(ids), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)  # fmt: skip
        output, (h_n, _) = self.rnn(packed)
        words = nn.utils.rnn.pad_packed_sequence(output, batch_first=True)[0].transpose(1, 2)
        return words, h_n.transpose(0, 1).reshape(ids.shape[0], self.width)  # [h_forward; h_backward]


class DamsmImageEncoder(nn.Module):
    """AttnGAN's ``CNN_ENCODER``: normalised ``(B, 3, 299, 299)`` -> (region features ``(B, nef, 17, 17)``,
    global code ``(B, nef)``). Inception-v3 (torchvision's layers) to ``Mixed_6e`` for the regions, on to
    ``Mixed_7c`` and an 8x8 average pool for the global code."""

    TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "Mixed_5b",
             "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a",
             "Mixed_7b", "Mixed_7c")  # fmt: skip

    def __init__(self, nef: int = 256):
        super().__init__()
        inception = torchvision_inception()
        for name in self.TRUNK:
            setattr(self, name, getattr(inception, name))
        with torch.device("meta"):
            self.emb_features = nn.Conv2d(768, nef, kernel_size=1, bias=False)
            self.emb_cnn_code = nn.Linear(2048, nef)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in self.TRUNK[5:13]:  # Mixed_5b ... Mixed_6e: 17 x 17 x 768
            x = getattr(self, name)(x)
        regions = x
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # 8 x 8 x 2048
        code = self.emb_cnn_code(F.avg_pool2d(x, kernel_size=8).flatten(1))
        return self.emb_features(regions), code


def load_text_encoder(path: str | Path) -> DamsmTextEncoder:
    """AttnGAN's ``text_encoder*.pth`` as a :class:`DamsmTextEncoder` (sizes read from ``encoder.weight`` and
    ``rnn.weight_hh_l0``), every key and shape checked."""
    what = "an AttnGAN/DM-GAN DAMSM text encoder (RNN_ENCODER: encoder.weight, rnn.weight_ih_l0, ...)"
    state = read_state_dict(path, "DAMSM text encoder")
    table, recurrent = state.get("encoder.weight"), state.get("rnn.weight_hh_l0")
    if table is None or recurrent is None:
        raise UsageError(f"{path} does not hold {what}: no encoder.weight / rnn.weight_hh_l0")
    if table.dim() != 2 or recurrent.dim() != 2 or recurrent.shape[0] != 4 * recurrent.shape[1]:
        found = f"encoder.weight {tuple(table.shape)}, rnn.weight_hh_l0 {tuple(recurrent.shape)}: not an LSTM's"
        raise UsageError(f"{path} does not hold {what}: {found}")
    module = DamsmTextEncoder(int(table.shape[0]), int(table.shape[1]), int(recurrent.shape[1]),
                              bidirectional="rnn.weight_hh_l0_reverse" in state)  # fmt: skip
    return load_exact(module, state, path, what).eval()


class DamsmSmallImageEncoder(nn.Module):
    """A small CNN in place of Inception-v3, for DAMSM pretrained on a CPU (``t2i damsm pretrain --trunk small``,
    plugin t2i-attngan): the same outputs as :class:`DamsmImageEncoder` and the same head names.

    Images in ``[-1, 1]`` of any size are resized (bilinear) to ``input_size`` (a buffer, so the file records it);
    ``regions``: two conv4x4 stride 2 + BatchNorm + LeakyReLU(0.2) (``width``, ``2 width`` channels) to a
    ``input_size / 4`` map, ``emb_features`` (1x1, no bias) to ``nef``; ``global_``: one more such conv
    (``4 width``), average-pooled, ``emb_cnn_code`` (linear) to ``nef``.
    """

    def __init__(self, nef: int = 256, width: int = 32, input_size: int = 32):
        super().__init__()

        def down(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]

        self.register_buffer("input_size", torch.tensor(int(input_size)))
        self.regions = nn.Sequential(*down(3, width), *down(width, 2 * width))
        self.global_ = nn.Sequential(*down(2 * width, 4 * width))
        self.emb_features = nn.Conv2d(2 * width, nef, kernel_size=1, bias=False)
        self.emb_cnn_code = nn.Linear(4 * width, nef)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        size = int(self.input_size)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        regions = self.regions(x)
        code = self.emb_cnn_code(self.global_(regions).mean(dim=(2, 3)))
        return self.emb_features(regions), code


def load_image_encoder(path: str | Path) -> DamsmImageEncoder | DamsmSmallImageEncoder:
    """AttnGAN's ``image_encoder*.pth`` as a :class:`DamsmImageEncoder` (code width read from
    ``emb_cnn_code.weight``), every key and shape checked; a file of :class:`DamsmSmallImageEncoder` (keys
    ``regions.*``, ``global_.*``, ``input_size``) as one of those."""
    what = "an AttnGAN/DM-GAN DAMSM image encoder (CNN_ENCODER: Conv2d_1a_3x3 ... Mixed_7c, emb_features, emb_cnn_code)"
    state = read_state_dict(path, "DAMSM image encoder")
    code = state.get("emb_cnn_code.weight")
    if code is None or code.dim() != 2:
        raise UsageError(f"{path} does not hold {what}: no emb_cnn_code.weight")
    if "regions.0.weight" in state and "input_size" in state:
        small = DamsmSmallImageEncoder(int(code.shape[0]), int(state["regions.0.weight"].shape[0]),
                                       int(state["input_size"]))
        return load_exact(small, state, path, "a small DAMSM image encoder (regions, global_, emb_features, "
                                              "emb_cnn_code)").eval()
    return load_exact(DamsmImageEncoder(int(code.shape[0])), state, path, what).eval()


def load_vocabulary(path: str | Path) -> dict[str, int]:
    """``wordtoix`` from AttnGAN's ``captions.pickle`` (``[train_captions, test_captions, ixtoword, wordtoix]``),
    or from a pickle holding just that dict; read without running code from it."""
    from ..data.safe_pickle import load_pickle

    data = load_pickle(path)
    if isinstance(data, (list, tuple)) and len(data) == 4 and isinstance(data[3], dict):
        data = data[3]
    pairs = data.items() if isinstance(data, dict) else ()
    if not pairs or not all(isinstance(k, str) and isinstance(v, int) for k, v in pairs):
        raise UsageError(f"{path}: expected AttnGAN's captions.pickle ([train_captions, test_captions, ixtoword, "
                         f"wordtoix]) or a word -> index dict, got {type(data).__name__}")  # fmt: skip
    return dict(data)


# -- captions into word ids --------------------------------------------------------------------------------------
_WORD = re.compile(r"\w+")


def tokenize(caption: str) -> list[str]:
    """AttnGAN's tokens of ``caption``: lower-cased runs of word characters, ASCII only, empty ones dropped."""
    tokens = _WORD.findall(caption.replace("\ufffd\ufffd", " ").lower())
    return [t for t in (tok.encode("ascii", "ignore").decode("ascii") for tok in tokens) if t]


def caption_ids(caption: str, vocabulary: Mapping[str, int], words: int, seed: int = 0) -> tuple[list[int], int]:
    """(word ids of ``caption``, number of its words not in ``vocabulary``), at most ``words`` ids.

    Longer captions keep ``words`` of their words in order, chosen at random as AttnGAN's ``get_caption`` does,
    from a generator seeded by ``seed`` and the caption's text (CRC-32), so the choice repeats across runs.
    No known word: ``[0]`` (``<end>``).
    """
    tokens = tokenize(caption)
    ids = [vocabulary[t] for t in tokens if t in vocabulary]
    unknown = len(tokens) - len(ids)
    if len(ids) > words:
        keep = np.random.Generator(np.random.PCG64([seed, zlib.crc32(caption.encode("utf-8"))])).permutation(len(ids))
        ids = [ids[i] for i in np.sort(keep[:words])]
    return (ids or [0]), unknown


# -- the encoder pair --------------------------------------------------------------------------------------------
class DamsmPair:
    """The DAMSM text and image encoders as a :class:`t2i.metrics.retrieval.EncoderPair`: L2-normalised sentence
    embeddings and global image codes, on the CPU; cosine similarity ranks them (DM-GAN's R-precision)."""

    def __init__(
        self,
        text: DamsmTextEncoder,
        image: DamsmImageEncoder,
        vocabulary: Mapping[str, int],
        *,
        words: int = 18,
        seed: int = 0,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        files: Mapping[str, Path] | None = None,
    ):
        if words < 1:
            raise UsageError(f"DAMSM captions need at least 1 word, got words={words}")
        self.device = torch.device(device)
        self.text, self.image = text.to(self.device).eval(), image.to(self.device).eval()
        self.vocabulary, self.words, self.seed, self.batch_size = dict(vocabulary), words, seed, batch_size
        self.files = dict(files or {})
        self.counts = dict.fromkeys(("captions", "words_dropped_unknown", "captions_truncated",
                                     "captions_without_known_words"), 0)  # fmt: skip

    @torch.inference_mode()
    def encode_text(self, captions: Sequence[str]) -> Tensor:
        """Captions -> ``(N, width)`` unit sentence embeddings. ``counts`` (in the protocol) describes this call."""
        self.counts = dict.fromkeys(self.counts, 0)
        out = []
        for start in range(0, len(captions), self.batch_size):
            rows = []
            for caption in captions[start : start + self.batch_size]:
                ids, unknown = caption_ids(caption, self.vocabulary, self.words, self.seed)
                self.counts["captions"] += 1
                self.counts["words_dropped_unknown"] += unknown
                self.counts["captions_truncated"] += len(tokenize(caption)) - unknown > self.words
                self.counts["captions_without_known_words"] += ids == [0]
                rows.append(ids)
            lengths = torch.tensor([len(r) for r in rows])
            ids = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, : len(r)] = torch.tensor(r)
            out.append(self.text(ids.to(self.device), lengths)[1].float().cpu())
        return F.normalize(torch.cat(out), dim=1) if out else torch.zeros(0, self.text.width)

    @torch.inference_mode()
    def encode_images(self, images: Tensor) -> Tensor:
        """uint8 ``(B, H, W, 3)`` -> ``(B, nef)`` unit global image codes."""
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            batch = images[start : start + self.batch_size]
            if isinstance(self.image, DamsmSmallImageEncoder):  # it resizes [-1, 1] images itself, as in training
                x = batch.to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1
            else:
                x = inception_input(batch, "bilinear_align_corners", "minus_one_one", self.device)
            out.append(self.image(x)[1].float().cpu())
        return F.normalize(torch.cat(out), dim=1) if out else torch.zeros(0, self.image.emb_cnn_code.out_features)

    def protocol(self) -> dict[str, Any]:
        """Files and their sha256, network sizes and parameter counts, tokenisation, image preprocessing."""
        return {
            "encoder": "damsm (AttnGAN/DM-GAN's released DAMSM encoders)",
            "files": {role: {"file": str(p), "sha256": file_sha256(p)} for role, p in self.files.items()},
            "vocabulary": len(self.vocabulary),
            "parameters": parameter_counts(self.text, self.image),
            "text": f"bidirectional LSTM final hidden states [h_fwd; h_bwd] ({self.text.width}-d), packed to each "
                    "caption's length",
            "tokenizer": "replace '\\ufffd\\ufffd' with ' ', lower-case, regex \\w+ (NLTK RegexpTokenizer), ASCII only; "
                         "unknown words dropped",
            "words": self.words,
            "truncation": "captions longer than `words` keep a random ordered subset of `words` words (AttnGAN's "
                          "get_caption), seeded by PCG64([seed, crc32(caption)])",
            "caption_counts": dict(self.counts),
            "image": f"uint8 -> {NORMALIZATIONS['minus_one_one']}; {RESIZES['bilinear_align_corners']}; global code "
                     "emb_cnn_code(avgpool(Mixed_7c))",
            "similarity": "cosine",
        }  # fmt: skip


def parameter_counts(text: nn.Module, image: DamsmImageEncoder) -> dict[str, int]:
    """Parameters (not buffers) of each part: ``text`` (embedding + LSTM), ``image_trunk`` (Inception layers),
    ``image_heads`` (``emb_features`` + ``emb_cnn_code``), ``image`` (both)."""
    heads = sum(p.numel() for m in (image.emb_features, image.emb_cnn_code) for p in m.parameters())
    total = sum(p.numel() for p in image.parameters())
    text_total = sum(p.numel() for p in text.parameters())
    return {"text": text_total, "image_trunk": total - heads, "image_heads": heads, "image": total}


def load_damsm_pair(
    text_encoder: str | Path,
    image_encoder: str | Path,
    captions: str | Path,
    *,
    words: int = 18,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> DamsmPair:
    """The authors' three files -> a :class:`DamsmPair`. The vocabulary must have exactly as many words as the
    text encoder's embedding table has rows (AttnGAN's ``n_words = len(ixtoword)``)."""
    text = load_text_encoder(text_encoder)
    vocabulary = load_vocabulary(captions)
    n_words = text.encoder.num_embeddings
    if len(vocabulary) != n_words or max(vocabulary.values()) >= n_words or min(vocabulary.values()) < 0:
        raise UsageError(f"{captions} has {len(vocabulary)} words (ids {min(vocabulary.values())}.."
                         f"{max(vocabulary.values())}) but {text_encoder} embeds {n_words}: not the vocabulary this "
                         "text encoder was trained with")  # fmt: skip
    image = load_image_encoder(image_encoder)
    if image.emb_cnn_code.out_features != text.width:
        raise UsageError(f"{image_encoder} makes {image.emb_cnn_code.out_features}-d image codes but {text_encoder} "
                         f"makes {text.width}-d sentence embeddings: not a DAMSM pair")  # fmt: skip
    files = {"text_encoder": Path(text_encoder).expanduser(), "image_encoder": Path(image_encoder).expanduser(),
             "captions": Path(captions).expanduser()}  # fmt: skip
    return DamsmPair(text, image, vocabulary, words=words, seed=seed, device=device, batch_size=batch_size, files=files)

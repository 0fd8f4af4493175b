"""Pretraining DAMSM: the text encoder (bi-LSTM) and the image encoder trained together with DAMSM's losses.

The authors' ``pretrain_DAMSM.py``, on any t2i data set: each step draws a batch of training images and one of
each image's captions, encodes them, and minimises ``words_loss + sent_loss`` (:mod:`t2i_attngan.damsm`; pairs
with identical captions are not negatives) with Adam (lr 0.002, betas (0.5, 0.999): DAMSM/bird.yml) and the LSTM's
gradient norm clipped at 0.25 (``RNN_GRAD_CLIP``).

Image trunks:

- ``inception`` (the paper): torchvision's Inception-v3 with ImageNet weights (found by :mod:`t2i.weights`:
  ``--inception-weights PATH``, ``$T2I_INCEPTION_V3_WEIGHTS``, torch hub's cache, or a download), frozen (its
  parameters and, unlike the authors' training loop, its BatchNorm statistics); only ``emb_features`` and
  ``emb_cnn_code`` train. Images are resized to 299 px.
- ``small``: :class:`t2i.metrics.damsm.DamsmSmallImageEncoder`, trained whole, so DAMSM trains on a CPU in
  minutes (Shapes, tests).

Files written to ``out`` (the authors' formats, so that ``r_precision``'s DAMSM backend, the ``damsm`` text encoder
and the ``damsm`` term load them): ``text_encoder.pth`` and ``image_encoder.pth`` (state dicts with the authors'
key names), ``captions.pickle`` (``[[], [], ixtoword, wordtoix]``: the vocabulary where their file has it) and
``damsm.json`` (what was trained, the losses).
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from torch import nn

from t2i.errors import UsageError
from t2i.interfaces import CaptionedImages, WordFeatures

from .damsm import attngan_vocabulary, image_input, same_caption_mask, sent_loss, words_loss

__all__ = ["INCEPTION_FILES", "INCEPTION_URL", "inception_image_encoder", "pretrain_damsm"]

INCEPTION_FILES = ("inception_v3_google-0cc3c7bd.pth", "inception_v3_google-1a9a5a14.pth")  # torchvision's, now and then
INCEPTION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"


def inception_image_encoder(nef: int, weights: str | None = None) -> nn.Module:
    """The authors' ``CNN_ENCODER``: ImageNet Inception-v3 layers (frozen) + fresh ``emb_features`` and
    ``emb_cnn_code`` (uniform in [-0.1, 0.1], as their ``init_trainable_weights``)."""
    from torchvision.models.inception import Inception3

    from t2i.metrics.damsm import DamsmImageEncoder, read_state_dict
    from t2i.weights import resolve_weights

    path = resolve_weights("Inception-v3 (torchvision, ImageNet)", filenames=INCEPTION_FILES, explicit=weights,
                           env="T2I_INCEPTION_V3_WEIGHTS", option="--inception-weights", url=INCEPTION_URL)
    inception = Inception3(aux_logits=True, transform_input=False, init_weights=False)
    state = read_state_dict(path, "Inception-v3 ImageNet weights")
    try:
        inception.load_state_dict(state)
    except RuntimeError as exc:
        raise UsageError(f"{path} is not torchvision's Inception-v3 ({str(exc).splitlines()[0]})") from None
    encoder = DamsmImageEncoder(nef)
    for name in DamsmImageEncoder.TRUNK:
        setattr(encoder, name, getattr(inception, name).requires_grad_(False))
    encoder.emb_features = nn.Conv2d(768, nef, kernel_size=1, bias=False)
    encoder.emb_cnn_code = nn.Linear(2048, nef)
    nn.init.uniform_(encoder.emb_features.weight, -0.1, 0.1)
    nn.init.uniform_(encoder.emb_cnn_code.weight, -0.1, 0.1)
    return encoder


def _freeze_trunk_statistics(encoder: nn.Module) -> None:
    for module in encoder.children():
        if not any(p.requires_grad for p in module.parameters()):
            module.eval()


def pretrain_damsm(
    train: CaptionedImages,
    out: str | Path,
    *,
    trunk: Literal["small", "inception"] = "small",
    inception_weights: str | None = None,
    steps: int = 1000,
    batch_size: int = 48,
    lr: float = 0.002,
    words: int = 18,
    nef: int = 256,
    small_width: int = 32,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    gamma3: float = 10.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train a DAMSM pair on ``train`` and write it to ``out``; returns what ``damsm.json`` records."""
    from t2i.metrics.damsm import DamsmSmallImageEncoder, DamsmTextEncoder, caption_ids

    if len(train) < 2:
        raise UsageError(f"damsm pretrain: the train split has {len(train)} image(s); it needs at least 2")
    if steps < 1 or batch_size < 2 or nef < 2 or nef % 2:
        raise UsageError(f"damsm pretrain: steps >= 1, batch size >= 2 and an even nef, got {steps}, {batch_size}, {nef}")
    device = torch.device(device)
    out = Path(out).expanduser()
    start = time.perf_counter()
    vocabulary = attngan_vocabulary(train.captions)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text = DamsmTextEncoder(len(vocabulary), 300, nef // 2)
        nn.init.uniform_(text.encoder.weight, -0.1, 0.1)
        if trunk == "inception":
            image = inception_image_encoder(nef, inception_weights)
        elif trunk == "small":
            image = DamsmSmallImageEncoder(nef, small_width, train.resolution)
        else:
            raise UsageError(f"damsm pretrain: trunk must be small or inception, got {trunk!r}")
    text.to(device).train()
    image.to(device).train()
    _freeze_trunk_statistics(image)
    ids = [caption_ids(c, vocabulary, words, seed)[0] for c in train.captions]
    params = [p for p in [*text.parameters(), *image.parameters()] if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))
    batch = min(batch_size, len(train))
    losses: list[float] = []
    for step in range(steps):
        rows = torch.randperm(len(train), generator=gen)[:batch]
        pick = (torch.rand(batch, generator=gen) * train.caption_counts[rows]).long()
        chosen = train.caption_ids[rows, pick].tolist()
        lengths = torch.tensor([len(ids[c]) for c in chosen])
        tokens = torch.zeros(batch, int(lengths.max()), dtype=torch.long)
        for k, c in enumerate(chosen):
            tokens[k, : len(ids[c])] = torch.tensor(ids[c])
        x = train.images[rows].to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
        word_out, sentence = text(tokens.to(device), lengths)
        mask = torch.arange(word_out.shape[2])[None, :] < lengths[:, None]
        regions, code = image(image_input(image, x))
        exclude = same_caption_mask(chosen, device)
        loss = (words_loss(regions, WordFeatures(word_out.transpose(1, 2), mask.to(device)), gamma1, gamma2, gamma3,
                           exclude) + sent_loss(code, sentence, gamma3, exclude))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(text.parameters(), 0.25)
        opt.step()
        losses.append(round(loss.item(), 4))
        if log is not None and (step + 1) % max(1, steps // 10) == 0:
            log(f"step {step + 1}/{steps}: loss {loss.item():.4f}")
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in text.state_dict().items()}, out / "text_encoder.pth")
    torch.save({k: v.cpu() for k, v in image.state_dict().items()}, out / "image_encoder.pth")
    ixtoword = {i: w for w, i in vocabulary.items()}
    with open(out / "captions.pickle", "wb") as f:
        pickle.dump([[], [], ixtoword, vocabulary], f, protocol=2)
    k = max(1, min(10, steps // 5))
    info = {"trunk": trunk, "steps": steps, "batch_size": batch, "lr": lr, "words": words, "nef": nef,
            "gammas": [gamma1, gamma2, gamma3], "seed": seed, "resolution": train.resolution,
            "train_size": len(train), "vocabulary_size": len(vocabulary),
            "first_loss": round(sum(losses[:k]) / k, 4), "last_loss": round(sum(losses[-k:]) / k, 4),
            "seconds": round(time.perf_counter() - start, 1), "data": train.info,
            "files": ["text_encoder.pth", "image_encoder.pth", "captions.pickle"]}
    (out / "damsm.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return info

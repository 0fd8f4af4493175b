"""Pretraining a CLIP on a t2i data set: both towers trained contrastively, as open-clip trains them.

GALIP's discriminator (``clipd``), the ``clip`` text encoder and the ``clip_sim`` term all rely on what a
pretrained CLIP knows. Where no weights exist (a 32 px toy ViT, or a domain far from the web's images),
:func:`pretrain_clip` trains one on the captioned images of any t2i data set's ``train`` split:

- **Model**: any open-clip model name or JSON config (``t2i.clip._model_name`` registers the file), with random
  weights drawn from ``seed`` (torch's global RNG is left as it was) or, to fine-tune, loaded from ``weights``
  (a state-dict file, as open-clip's ``load_checkpoint`` reads it). Models whose loss is not CLIP's (SigLIP,
  CoCa) are refused.
- **Data**: each step draws ``batch_size`` images without replacement and one of each image's captions, at random
  from ``seed``. Images go from uint8 through CLIP's input normalisation (:meth:`t2i.clip.ClipBundle.preprocess`:
  resized to CLIP's input size if they are not already, CLIP's mean and std); no augmentation (a flip would make
  "left" captions lie). Captions become tokens through ``open_clip.get_tokenizer(name)`` (longer ones are cut at
  the model's context length), each distinct caption tokenized once.
- **Loss**: open-clip's ``ClipLoss``: the mean of the image->text and text->image cross-entropies over the batch's
  similarity matrix, scaled by a learnable temperature ``exp(logit_scale)`` (initialised at 1/0.07 and clamped to
  at most 100 after every step, as open-clip's training loop does). Identical captions of identical images in
  one batch count as negatives, as in open-clip.
- **Optimiser**: AdamW with open-clip's betas (0.9, 0.98) and eps 1e-6; no weight decay on gains, biases,
  embeddings (token, positional, class) and ``logit_scale``; learning rate warmed up linearly over ``warmup``
  steps, then cosine-decayed to 0 at the last step (open-clip's ``cosine_lr``).

Written: the full model state dict at ``out`` (atomically), which ``t2i.clip.load_clip(model, weights=out)`` and
``clipd``/``clip_sim``'s ``weights=out`` load; and ``out`` + ``.json`` beside it: the settings, the data, the first
and last loss, the time, and the held-out **retrieval accuracy** before and after training (:func:`retrieval_accuracy`):
on the ``test`` split, within batches of 100 image-caption pairs, the share of images whose most similar caption is
their own, and of captions whose most similar image is theirs (chance 1/100). That is the figure that shows the
CLIP learned the domain.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from t2i.clip import ClipBundle, _model_name
from t2i.errors import UsageError
from t2i.fileio import atomic_path, write_text
from t2i.interfaces import CaptionedImages
from t2i.weights import file_sha256

__all__ = ["pretrain_clip", "check_settings", "default_warmup", "retrieval_accuracy", "format_retrieval",
           "clip_image_size", "RETRIEVAL_BATCH", "WARMUP", "WEIGHT_SUFFIXES"]

RETRIEVAL_BATCH = 100  # image-caption pairs per retrieval batch: chance is 1 / RETRIEVAL_BATCH
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin")  # torch.save files that open-clip's load_checkpoint reads
MAX_LOGIT_SCALE = math.log(100)  # open-clip clamps the learnable temperature to at most 100
WARMUP = 100  # default warmup steps (at most a tenth of the run)


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """Silence open-clip's "no pretrained weights loaded" warning: a random start is what was asked for."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def clip_image_size(model: str) -> int:
    """The input side in pixels of the open-clip ``model`` (a name or JSON config), read from its config."""
    import open_clip

    name = _model_name(model)
    size = (open_clip.get_model_config(name) or {}).get("vision_cfg", {}).get("image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _build(model: str, weights: str | Path | None, seed: int) -> tuple[nn.Module, str]:
    """The open-clip ``model``: weights from ``weights`` if given, else random from ``seed``; and its name."""
    import open_clip

    name = _model_name(model)
    with torch.random.fork_rng(devices=[]), _quiet_open_clip():
        torch.manual_seed(seed)
        net = open_clip.create_model(name, pretrained=None)
    if not isinstance(net, (open_clip.CLIP, open_clip.CustomTextCLIP)) or getattr(net, "logit_bias", None) is not None:
        raise UsageError(f"clip pretrain: '{name}' is not trained with CLIP's contrastive loss (SigLIP and CoCa "
                         f"models are not supported); use a CLIP model name or config")
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UsageError(f"clip pretrain: --weights {path} is not a file")
        try:
            open_clip.load_checkpoint(net, str(path))
        except (RuntimeError, KeyError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"clip pretrain: --weights {path} do not fit model '{name}': {first[:300]}") from None
    return net, name


def _bundle(net: nn.Module, name: str, tokenizer: Callable[[list[str]], Tensor]) -> ClipBundle:
    """``net`` with its tokenizer and normalisation, for :meth:`ClipBundle.preprocess` and retrieval."""
    import open_clip

    visual = net.visual
    size = getattr(visual, "image_size", 224)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    return ClipBundle(net, tokenizer, name, "", "", size, mean, std)


def _vit_blocks(net: nn.Module) -> int | None:
    """The transformer blocks of a ViT image tower that ``clipd`` and ``galip`` can tap; ``None`` for other towers."""
    visual = getattr(net, "visual", None)
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    return len(blocks) if blocks is not None and hasattr(visual, "conv1") else None


def _param_groups(net: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open-clip's convention: decay matrices and kernels; not gains, biases, embeddings or the temperature."""
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim < 2 or "embedding" in name or "logit_scale" in name
        (no_decay if exempt else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def _learning_rate(step: int, steps: int, lr: float, warmup: int) -> float:
    """open-clip's ``cosine_lr``: linear warmup to ``lr`` over ``warmup`` steps, then a cosine to 0."""
    if step < warmup:
        return lr * (step + 1) / warmup
    done = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * done)) * lr


class _Tokens:
    """Token ids of a split's captions by caption id, each distinct caption tokenized once, on first use."""

    def __init__(self, captions: list[str], tokenizer: Callable[[list[str]], Tensor]):
        self.captions, self.tokenizer = captions, tokenizer
        self.cache: dict[int, Tensor] = {}

    def __call__(self, ids: list[int]) -> Tensor:
        missing = sorted({i for i in ids if i not in self.cache})
        if missing:
            for i, row in zip(missing, self.tokenizer([self.captions[i] for i in missing])):
                self.cache[i] = row
        return torch.stack([self.cache[i] for i in ids])


def _draw_captions(ids: Tensor, gen: torch.Generator) -> Tensor:
    """One caption id per row of ``ids`` ``(N, K)``, uniformly among the row's valid (``>= 0``) ones."""
    counts = (ids >= 0).sum(1)
    pick = (torch.rand(len(ids), generator=gen) * counts).long()
    order = torch.argsort((ids < 0).int(), dim=1, stable=True)  # valid ids first, in their order
    return ids.gather(1, order).gather(1, pick[:, None]).squeeze(1)


@torch.no_grad()
def retrieval_accuracy(bundle: ClipBundle, split: CaptionedImages, *, size: int = 1000,
                       batch: int = RETRIEVAL_BATCH, seed: int = 0) -> dict[str, Any]:
    """Top-1 retrieval on the first ``size`` images of ``split``, within consecutive batches of ``batch`` pairs.

    Each image is paired with one of its captions (drawn from ``seed``, so every call with the same split pairs
    the same captions). ``image_to_caption``: the share of images whose most similar caption in their batch is
    their own; ``caption_to_image``: the share of captions whose most similar image is theirs. A pick of an
    image identical pixel for pixel to the right one counts as right (its caption describes it just as truly:
    Shapes repeats attribute combinations). ``chance`` is ``1 / batch``; ``chance_with_duplicates`` what a
    random ranking scores once identical images count. Caption sets: ``captions`` (the split's own), and each
    of ``split.extra_caption_ids`` (Shapes' test split: ``held_out_phrasings``)."""
    import hashlib

    n = min(size, len(split))
    n = n - n % batch if n >= batch else n  # whole batches only; a smaller split is one batch
    if n < 2:
        raise UsageError(f"retrieval needs at least 2 images, the split has {len(split)}")
    per = min(batch, n)
    first: dict[bytes, int] = {}  # each distinct image's first index: identical images share a group
    group = torch.tensor([first.setdefault(hashlib.sha256(split.images[i].numpy().tobytes()).digest(), i)
                          for i in range(n)])
    same = [group[s: s + per, None] == group[None, s: s + per] for s in range(0, n, per)]
    was_training = bundle.model.training
    bundle.model.eval()
    device = next(bundle.model.parameters()).device
    images = torch.cat([bundle.encode_image(split.images[s: s + per]) for s in range(0, n, per)]).cpu()
    tokens = _Tokens(split.captions, bundle.tokenizer)
    counts = torch.arange(split.caption_ids.shape[1])[None, :] < split.caption_counts[:, None]
    sets = {"captions": torch.where(counts, split.caption_ids, -1)[:n],
            **{k: v[:n] for k, v in split.extra_caption_ids.items()}}
    result: dict[str, Any] = {"split": split.info.get("split", "test"), "images": n, "batch": per,
                              "chance": round(1 / per, 4),
                              "chance_with_duplicates": round(float(torch.cat(same).float().mean()), 4)}
    for name, ids in sets.items():
        if bool(((ids >= 0).sum(1) == 0).any()):
            continue  # some image has no caption in this set
        chosen = _draw_captions(ids, torch.Generator().manual_seed(seed)).tolist()
        texts = torch.cat([bundle.encode_tokens(tokens(chosen[s: s + per]).to(device))[0]
                           for s in range(0, n, per)]).cpu()
        hits_i2t = hits_t2i = 0
        for b, s in enumerate(range(0, n, per)):
            sim = images[s: s + per] @ texts[s: s + per].T  # (image, caption)
            rows = torch.arange(len(sim))
            hits_i2t += int(same[b][rows, sim.argmax(1)].sum())
            hits_t2i += int(same[b][sim.argmax(0), rows].sum())
        result[name] = {"image_to_caption": round(hits_i2t / n, 4), "caption_to_image": round(hits_t2i / n, 4)}
    bundle.model.train(was_training)
    return result


def default_warmup(steps: int) -> int:
    """:data:`WARMUP` steps, or a tenth of ``steps`` where that is fewer (a short run still decays)."""
    return min(WARMUP, max(0, steps) // 10)


def check_settings(out: str | Path, *, steps: int, batch_size: int, lr: float, weight_decay: float, warmup: int,
                   eval_size: int) -> None:
    """Refuse settings :func:`pretrain_clip` cannot train with, in one line (before any data is loaded)."""
    if Path(out).suffix not in WEIGHT_SUFFIXES:
        raise UsageError(f"clip pretrain: -o {out}: write the weights to a .pt file, e.g. -o shapes-clip.pt")
    if steps < 1 or batch_size < 2:
        raise UsageError(f"clip pretrain: --steps must be >= 1 and --batch-size >= 2, got {steps} and {batch_size}")
    if not lr > 0 or weight_decay < 0:
        raise UsageError(f"clip pretrain: --lr must be > 0 and --weight-decay >= 0, got {lr} and {weight_decay}")
    if not 0 <= warmup < steps:
        raise UsageError(f"clip pretrain: --warmup must be >= 0 and less than --steps {steps}, got {warmup}")
    if eval_size == 1 or eval_size < 0:
        raise UsageError(f"clip pretrain: --eval-size must be >= 2 (or 0 for no retrieval check), got {eval_size}")


def pretrain_clip(
    train: CaptionedImages,
    out: str | Path,
    *,
    model: str,
    weights: str | Path | None = None,
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 0.1,
    warmup: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
    test: CaptionedImages | None = None,
    eval_size: int = 1000,
) -> dict[str, Any]:
    """Train the CLIP ``model`` on ``train`` (from ``weights`` or random from ``seed``) and write it to ``out``
    (a ``.pt`` file) and ``out.json``; returns what the JSON records. ``test``: the split retrieval is measured
    on before and after training (its first ``eval_size`` images), or ``None`` to skip it. ``warmup``: ``None``
    is :data:`WARMUP` steps, or a tenth of ``steps`` where that is fewer."""
    import open_clip

    out = Path(out).expanduser()
    warmup = default_warmup(steps) if warmup is None else warmup
    check_settings(out, steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup=warmup,
                   eval_size=eval_size if test is not None else 0)
    if len(train) < 2:
        raise UsageError(f"clip pretrain: the train split has {len(train)} image(s); it needs at least 2")
    device = torch.device(device)
    start = time.perf_counter()
    say = log or (lambda message: None)

    net, name = _build(model, weights, seed)
    net.to(device).train()
    bundle = _bundle(net, name, open_clip.get_tokenizer(name))
    if train.resolution != bundle.image_size:
        say(f"images are {train.resolution} px; resized to the CLIP's {bundle.image_size} px input")
    before = retrieval_accuracy(bundle, test, size=eval_size) if test is not None else None
    if before is not None:
        say(f"retrieval before: {format_retrieval(before)}")

    opt = torch.optim.AdamW(_param_groups(net, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = open_clip.ClipLoss()
    tokens = _Tokens(train.captions, bundle.tokenizer)
    gen = torch.Generator().manual_seed(seed)
    batch = min(batch_size, len(train))
    losses: list[float] = []
    for step in range(steps):
        # determine and set the learning rate for this step
        for group in opt.param_groups:
            group["lr"] = _learning_rate(step, steps, lr, warmup)
        # draw the batch: images without replacement, one random caption of each
        rows = torch.randperm(len(train), generator=gen)[:batch]
        chosen = _draw_captions(train.caption_ids[rows], gen).tolist()
        images = bundle.preprocess(train.images[rows].to(device))
        text = tokens(chosen).to(device)
        # forward, backward, update; then clamp the temperature as open-clip does
        loss = loss_fn(net.encode_image(images, normalize=True), net.encode_text(text, normalize=True),
                       net.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            net.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        losses.append(round(loss.item(), 4))
        if (step + 1) % max(1, steps // 10) == 0:
            say(f"step {step + 1}/{steps}: loss {loss.item():.4f}, temperature 1/{net.logit_scale.exp().item():.1f}")

    after = retrieval_accuracy(bundle, test, size=eval_size) if test is not None else None
    net.eval()
    with atomic_path(out) as tmp:
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, tmp)
    k = max(1, min(50, steps // 10))
    info: dict[str, Any] = {
        "model": model, "model_name": name, "model_config": _config(model, name),
        "vit_blocks": _vit_blocks(net), "image_size": bundle.image_size, "weights": str(weights) if weights else None,
        "parameters": sum(p.numel() for p in net.parameters()),
        "steps": steps, "batch_size": batch, "lr": lr, "weight_decay": weight_decay, "warmup": warmup, "seed": seed,
        "resolution": train.resolution, "train_size": len(train), "data": train.info,
        "first_loss": round(sum(losses[:k]) / k, 4), "last_loss": round(sum(losses[-k:]) / k, 4),
        "logit_scale": round(net.logit_scale.item(), 4), "device": str(device),
        "seconds": round(time.perf_counter() - start, 1),
        "retrieval": None if before is None else {**{key: v for key, v in before.items() if not isinstance(v, dict)},
                                                  "before": _scores(before), "after": _scores(after)},
        "file": out.name, "sha256": file_sha256(out),
    }
    write_text(out.with_name(out.name + ".json"), json.dumps(info, indent=2, default=str) + "\n")
    return info


def _config(model: str, name: str) -> dict[str, Any] | None:
    """The model's open-clip config, saved with the weights so that they stay loadable if the JSON moves."""
    import open_clip

    return open_clip.get_model_config(name) if model.endswith(".json") else None


def _scores(result: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (result or {}).items() if isinstance(v, dict)}


def format_retrieval(result: dict[str, Any], when: str | None = None) -> str:
    """One line of a :func:`retrieval_accuracy` result, or of the JSON's ``retrieval`` ``when`` ("before", "after")."""
    parts = [f"{name}: image->caption {v['image_to_caption']:.3f}, caption->image {v['caption_to_image']:.3f}"
             for name, v in (result[when] if when else _scores(result)).items()]
    return "; ".join(parts) + f" (top-1 in batches of {result['batch']}; chance {result['chance']})"

"""Where pretrained weights come from: one resolution order for every pretrained network t2i uses.

1. an explicit path (a component option such as ``weights=/data/pt_inception-2015-12-05.pth``);
2. an environment variable naming the file (``T2I_INCEPTION_WEIGHTS``, ``T2I_VGG16_WEIGHTS``, ...);
3. the standard caches, by the file names their own tools use: ``$T2I_WEIGHTS_DIR``, torch hub's
   ``$TORCH_HOME/hub/checkpoints`` (where torchvision and torch-fidelity keep theirs), then any extra
   folders the caller knows (e.g. the Hugging Face cache);
4. a download into torch hub's checkpoints folder, when a URL is known and ``T2I_OFFLINE`` is not set.

Without a file at the end of that list the caller gets a :class:`WeightsNotFound` (a usage error: one
line naming the file expected and where to put it). t2i never falls back to random or other weights.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import torch

from .errors import UsageError

__all__ = ["WeightsNotFound", "resolve_weights", "hub_checkpoints_dir", "file_sha256", "module_sha256", "offline"]

ENV_WEIGHTS_DIR = "T2I_WEIGHTS_DIR"
ENV_OFFLINE = "T2I_OFFLINE"


class WeightsNotFound(UsageError):
    """Pretrained weights that are neither given, nor cached, nor downloadable."""


def hub_checkpoints_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def offline() -> bool:
    """True when ``T2I_OFFLINE`` (or ``HF_HUB_OFFLINE``) is set to a true value."""
    flags = (os.environ.get(ENV_OFFLINE, ""), os.environ.get("HF_HUB_OFFLINE", ""))
    return any(v.strip().lower() in {"1", "true", "yes", "on"} for v in flags)


def _search_dirs(extra: Sequence[str | Path]) -> list[Path]:
    dirs = []
    if os.environ.get(ENV_WEIGHTS_DIR):
        dirs.append(Path(os.environ[ENV_WEIGHTS_DIR]).expanduser())
    dirs.append(hub_checkpoints_dir())
    dirs.extend(Path(d).expanduser() for d in extra)
    return dirs


def resolve_weights(
    what: str,
    *,
    filenames: Sequence[str],
    explicit: str | os.PathLike | None = None,
    env: str | None = None,
    option: str = "weights",
    search_dirs: Sequence[str | os.PathLike] = (),
    url: str | None = None,
) -> Path:
    """Return the weights file for ``what`` (e.g. ``"Inception-v3 (torch-fidelity)"``) or raise.

    ``filenames``: the names the file goes by in caches, the first being the canonical one (the name a
    download is saved under). ``option`` and ``env`` are named in the error so the user knows both ways
    to point t2i at the file.
    """
    if not filenames:
        raise ValueError("resolve_weights needs at least one file name")
    if explicit is not None and str(explicit) != "":
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsNotFound(f"{what} weights: {option}={path} is not a file")
        return path
    if env and os.environ.get(env):
        path = Path(os.environ[env]).expanduser()
        if not path.is_file():
            raise WeightsNotFound(f"{what} weights: {env}={path} is not a file")
        return path
    dirs = _search_dirs(search_dirs)
    for folder in dirs:
        for name in filenames:
            if (folder / name).is_file():
                return folder / name
    target = hub_checkpoints_dir() / filenames[0]
    how = f"pass {option}=PATH" + (f" or set {env}" if env else "") + f", or put {filenames[0]} in {dirs[0]}"
    if url is None:
        raise WeightsNotFound(f"{what} weights not found: {how}")
    if offline():
        raise WeightsNotFound(f"{what} weights not found and {ENV_OFFLINE} is set: {how} (download from {url})")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), progress=True)
    except Exception as exc:  # no network, proxy, HTTP error: all mean the same to the user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsNotFound(f"{what} weights not found and the download from {url} failed ({reason}): {how}") from None
    return target


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file (hex), memoised by path, size and modification time: metrics record which weights they used."""
    p = Path(path)
    stat = p.stat()
    key = (str(p.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def module_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's weights (name, dtype, shape and bytes of each tensor, in name order), not of a file:
    trained evaluators record it so a figure names the exact network that produced it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()

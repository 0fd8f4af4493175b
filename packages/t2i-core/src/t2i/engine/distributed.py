"""Training on several processes with ``torch.distributed``: one process per device, started by torchrun.

``torchrun --nproc_per_node=N -m t2i run ...`` starts N copies of ``t2i run`` with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment. :func:`session`
reads them, joins the process group (NCCL between CUDA GPUs, Gloo on CPU), pins the process to GPU
``LOCAL_RANK`` and leaves the group when training ends. Without those variables it does nothing: one
process, rank 0, and every helper below is a no-op.

Every collective waits at most ``T2I_DIST_TIMEOUT`` seconds (default 1800). If a rank crashes, Gloo's
peers fail at once ("connection closed"), NCCL's when the timeout expires; either way the surviving
ranks stop with one line naming their rank (:class:`RankFailure`), and torchrun stops the job and
reports the rank that failed first. Nothing waits forever.

The rest of the module is the small vocabulary the trainer needs: wrap a network in
DistributedDataParallel, convert batch norm to SyncBatchNorm, agree on flags, average tensors,
broadcast a Python object from rank 0.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UsageError

__all__ = [
    "DistContext",
    "RankFailure",
    "TIMEOUT_ENV",
    "torchrun_env",
    "timeout",
    "session",
    "is_distributed",
    "local_device",
    "wrap",
    "gradient_sync",
    "check_sync_bn",
    "convert_sync_batchnorm",
    "barrier",
    "broadcast_object",
    "all_gather_object",
    "all_reduce_mean",
    "any_rank",
    "decided_by_rank_zero",
    "launch",
]

T = TypeVar("T")

TIMEOUT_ENV = "T2I_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0  # long enough for rank 0 to evaluate while the others wait at a barrier

_control_group: Any = None  # a Gloo group for per-step CPU flags, so NCCL runs do not sync the GPU each step


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node, ``backend``
    (``""`` when there is no process group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class RankFailure(RuntimeError):
    """A collective failed: another process crashed, hung past the timeout, or the network broke."""


def torchrun_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's variables, or ``None`` outside torchrun."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)") from None
    if not 0 <= rank < world:
        raise UsageError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    return rank, world, local


def timeout() -> timedelta:
    """How long a collective may wait: ``T2I_DIST_TIMEOUT`` seconds, default 1800."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        raise UsageError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds") from None
    if seconds <= 0:
        raise UsageError(f"{TIMEOUT_ENV}={raw!r}: the timeout must be > 0 seconds")
    return timedelta(seconds=seconds)


def _wants_cuda(device: str) -> bool:
    if device == "auto":
        return torch.cuda.is_available()
    return device.startswith("cuda")


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[DistContext]:
    """Join torchrun's process group for the duration of the block (no-op outside torchrun).

    ``device`` is ``train.device``: CUDA (``auto`` with a GPU, ``cuda``) uses NCCL with process
    ``LOCAL_RANK`` on GPU ``LOCAL_RANK``; ``cpu`` uses Gloo. A failed collective inside the block becomes
    a :class:`RankFailure` naming this rank.
    """
    env = torchrun_env()
    if env is None or env[1] == 1:
        yield DistContext()
        return
    rank, world, local = env
    if dist.is_initialized():  # someone (a notebook, a test) already joined: use their group
        yield DistContext(dist.get_rank(), dist.get_world_size(), local, str(dist.get_backend()))
        return
    if device.startswith("mps"):
        raise UsageError("distributed training runs on CUDA GPUs (NCCL) or CPUs (Gloo), not mps; use --device cpu")
    device_id = None
    if _wants_cuda(device):
        if not torch.cuda.is_available():
            raise UsageError("train.device asks for CUDA but no GPU is visible; use --device cpu for Gloo on CPUs")
        count = torch.cuda.device_count()
        if local >= count:
            raise UsageError(
                f"LOCAL_RANK {local} needs GPU {local}, but this node has {count}; "
                f"start at most {count} processes per node (--nproc_per_node)"
            )
        device_id = torch.device("cuda", local)
        torch.cuda.set_device(device_id)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, timeout=timeout(), device_id=device_id)
    global _control_group
    _control_group = dist.new_group(backend="gloo", timeout=timeout()) if backend != "gloo" else None
    ctx = DistContext(rank, world, local, backend)
    try:
        yield ctx
    except RuntimeError as exc:  # DistError is one; Gloo reports a lost peer as a plain RuntimeError
        if not _is_collective_failure(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RankFailure(
            f"rank {rank} of {world}: a collective failed ({first}); another process crashed or hung "
            f"(collective timeout {timeout().total_seconds():g} s, {TIMEOUT_ENV}); torchrun names the failed rank"
        ) from exc
    finally:
        _control_group = None
        with contextlib.suppress(Exception):  # a broken group cannot always be torn down cleanly
            dist.destroy_process_group()


def _is_collective_failure(exc: BaseException) -> bool:
    if isinstance(exc, (dist.DistError, RankFailure)):
        return not isinstance(exc, RankFailure)
    text = str(exc)
    return any(mark in text for mark in ("gloo", "Gloo", "NCCL", "Connection closed by peer", "Connection reset by peer"))


def is_distributed() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def local_device(device: torch.device) -> torch.device:
    """The GPU of this process (``cuda:LOCAL_RANK``, set by :func:`session`) when training on CUDA
    across processes; ``device`` otherwise."""
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def wrap(module: nn.Module, device: torch.device, *, find_unused_parameters: bool = False) -> nn.Module:
    """``module`` in DistributedDataParallel (rank 0's weights and buffers are broadcast to every rank).

    DDP's default buffer synchronisation is kept on purpose: rank 0's buffers (batch-norm running
    statistics, spectral norm's power-iteration vectors) are copied to every rank at the start of each
    forward through the wrapper, so buffers cannot drift apart between processes. Pass
    ``find_unused_parameters=True`` for networks that leave parameters out of some forwards (progressive
    growing's unfinished layers).
    """
    return nn.parallel.DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )


def gradient_sync(module: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """A context in which backward passes through ``module`` all-reduce its gradients (``sync``) or only
    accumulate them locally (DDP's ``no_sync()``: every micro-batch but the last of an optimiser step; the
    first synced backward then reduces the accumulated sum). A plain or compiled-plain module: a no-op."""
    inner = getattr(module, "_orig_mod", module)  # torch.compile wraps the DDP module
    if sync or not isinstance(inner, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return inner.no_sync()


def check_sync_bn(device: torch.device, world_size: int) -> None:
    """SyncBatchNorm needs CUDA (torch computes it with NCCL kernels); refuse it on CPU processes."""
    if world_size > 1 and device.type != "cuda":
        raise UsageError(
            f"train.sync_bn needs CUDA GPUs (torch's SyncBatchNorm has no {device.type} kernel); "
            "drop --set train.sync_bn=true on CPU"
        )


_SYNC_CLASSES: dict[type, type] = {}


def _synced_class(cls: type) -> type:
    if cls not in _SYNC_CLASSES:
        try:
            _SYNC_CLASSES[cls] = type(f"Sync{cls.__name__}", (cls, nn.SyncBatchNorm), {"__module__": cls.__module__})
        except TypeError as exc:
            raise UsageError(f"train.sync_bn: cannot convert {cls.__qualname__} to SyncBatchNorm ({exc})") from None
    return _SYNC_CLASSES[cls]


def convert_sync_batchnorm(module: nn.Module) -> int:
    """Make every batch norm in ``module`` synchronise its batch statistics across processes; returns how many.

    Unlike :meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm` this keeps each layer's own class: the
    layer's class becomes ``Sync<Class>(Class, SyncBatchNorm)``, so a subclass with its own ``forward``
    (one that takes a conditioning argument, say) still runs it, and its ``super().forward`` lands in
    SyncBatchNorm's. Parameters and buffers are the same tensors, so optimisers built before stay valid.
    """
    converted = 0
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
            child.__class__ = _synced_class(type(child))
            child.process_group = None  # SyncBatchNorm's attribute: None = the whole world
            converted += 1
    return converted


def barrier() -> None:
    """Wait until every process gets here (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (any picklable object)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_control_group)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=_control_group)
    return out


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over ranks (a new tensor; a NaN or inf on any rank stays non-finite)."""
    if not is_distributed():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def any_rank(flags: Sequence[bool]) -> list[bool]:
    """For each flag: is it set on at least one rank? One small all-reduce on CPU (Gloo), no GPU sync."""
    if not is_distributed():
        return list(flags)
    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_control_group)
    return [bool(v) for v in t.tolist()]



def decided_by_rank_zero(decide: Callable[[], T]) -> T:
    """``decide()`` run on rank 0 alone, its result handed to every rank (a :class:`UsageError` it raises is
    raised on every rank), e.g. a new run folder's timestamped name, which two clocks could disagree on."""
    if not is_distributed():
        return decide()
    outcome: tuple[str, Any] = ("", None)
    if dist.get_rank() == 0:
        try:
            outcome = ("ok", decide())
        except UsageError as exc:
            outcome = ("usage", str(exc))
    kind, value = broadcast_object(outcome)
    if kind == "usage":
        raise UsageError(value)
    return value


def launch(nproc: int, args: Sequence[str]) -> int:
    """``torchrun --standalone --nproc_per_node NPROC -m t2i ARGS`` on this machine; returns its exit code.

    ``--standalone`` lets torchrun pick a free port, so several launches can share a machine. A Ctrl-C
    reaches the workers directly (same terminal); they finish their step, rank 0 saves, and this waits.
    """
    if nproc < 1:
        raise UsageError(f"--nproc must be >= 1, got {nproc}")
    if torchrun_env() is not None:
        raise UsageError("--nproc starts torchrun itself; inside torchrun, drop --nproc")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "t2i", *args]
    proc = subprocess.Popen(cmd)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue

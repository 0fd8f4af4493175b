"""The training engine: one D step (or ``d_steps``) and one G step, composed from registered parts.

The step is ``adversarial loss + sum(weight * term)`` for D and for G; what the terms need (mismatched
captions, D on real images during the G step, gradients w.r.t. real images) is declared by the terms and
computed here once, so a new regulariser is a registered term, not a branch in this file.

Reproducibility: the data order of epoch ``e`` is a permutation seeded by ``(seed, e)``; captions and
noise come from ``torch.Generator`` objects whose states are checkpointed with everything else, so on CPU
a resumed run ends bit-identical to an uninterrupted one.

Several processes (torchrun; :mod:`t2i.engine.distributed`): G, D and a trainable text encoder are wrapped
in DistributedDataParallel; rank ``r`` of ``W`` takes images ``perm[r::W]`` and the same rows of the noise
drawn for the global batch, so the union of the ranks' batches is one process's batch of ``W x`` the size.
Rank 0 alone writes (logs, samples, checkpoints, summary); every rank stops at the same step.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .. import __version__
from ..config import ExperimentConfig, save_toml
from ..data.splits import load_split
from ..device import pick_device
from ..metrics.keys import evaluation_table
from ..errors import UsageError
from ..augment import DiffAugment
from ..interfaces import CaptionedImages, StepOutputs, TextEncoder
from ..text.cache import cached_embeddings
from . import distributed
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .components import Components, build_components
from .evaluate import build_metrics, evaluate
from .grid import caption_grid
from .optim import Precision, make_optimizer, make_scheduler, steps_for_epochs
from .health import HealthMonitor, read_records, verdict_lines
from .progress import Progress
from .writer import RunWriter

__all__ = ["Trainer", "RunResult", "count_parameters", "SAMPLE_ROWS", "SAMPLE_COLUMNS"]

SAMPLE_ROWS = 8  # test captions per grid
SAMPLE_COLUMNS = 8  # fixed noise vectors per caption
_SAMPLE_SEED_OFFSET = 1_000_003
_NOISE_SEED_OFFSET = 2_000_003  # the noise generator's seed is train.seed + this
_RANK_SEED_STRIDE = 7_919  # rank r > 0 reseeds torch's global RNG with train.seed + r * this (dropout, ...)


@dataclass
class RunResult:
    run_dir: Path
    status: str  # "finished", "interrupted" or "diverged"
    step: int
    elapsed: float
    images_per_second: float
    samples: Path | None
    checkpoint: Path | None
    last: dict[str, float] = field(default_factory=dict)
    message: str = ""
    evaluation: dict[str, float] = field(default_factory=dict)


class CaptionTable:
    """Every distinct caption of a split, ready for the text encoder.

    A frozen encoder is run once over all captions (embeddings cached on the device); a trainable one
    keeps the tokenised captions and runs every step.
    """

    def __init__(self, encoder: TextEncoder, captions: list[str], device: torch.device, key: dict[str, Any] | None = None,
                 chunk: int = 1024):
        self.encoder = encoder
        self.frozen = not encoder.trainable
        if self.frozen and encoder.cache_embeddings and key is not None:  # expensive encoders: on disk, once
            self.table = cached_embeddings(encoder, captions, key, chunk=chunk).to(device)
            return
        tokens = encoder.tokenize(captions).to(device)
        if self.frozen:
            with torch.no_grad():
                self.table = torch.cat([encoder(tokens[i : i + chunk]) for i in range(0, len(captions), chunk)]).float()
        else:
            self.table = tokens

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids] if self.frozen else self.encoder(self.table[ids])


class Trainer:
    """Train ``cfg`` into ``run_dir``; ``resume=True`` continues from the folder's latest checkpoint."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: str | Path,
        *,
        resume: bool = False,
        quiet: bool = False,
        rank: int = 0,
        world_size: int = 1,
        tensorboard: bool = True,
    ):
        self.cfg = cfg
        self.t = cfg.train
        self.run_dir = Path(run_dir)
        self.quiet = quiet
        self.rank, self.world_size = rank, world_size
        if world_size > 1 and not distributed.is_distributed():
            raise UsageError(f"world_size={world_size} needs a torch.distributed process group: start the run with "
                             "torchrun (or t2i run --nproc N), which t2i.engine.distributed.session joins")
        self.device = distributed.local_device(pick_device(self.t.device))  # cuda:LOCAL_RANK under torchrun
        self.precision = Precision(self.t.precision, self.device)

        torch.manual_seed(self.t.seed)
        self.parts: Components = build_components(cfg, fit_text=self._fit_text)
        self.metrics = build_metrics(cfg.eval.metrics, cfg.eval.options)
        self.resolved = dataclasses.replace(
            self.parts.resolved, eval=dataclasses.replace(cfg.eval, options={n: o for n, _, o in self.metrics if o})
        )
        self.reference = load_split(self.parts.dataset, cfg.eval.split, cfg.data.resolution) if self.metrics else None
        self.train_data: CaptionedImages = self._train_split
        self.needs = self.parts.needs

        self.G = self.parts.generator.to(self.device)
        self.D = self.parts.discriminator.to(self.device)
        self.encoder = self.parts.text_encoder.to(self.device)
        if self.t.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        if self.t.sync_bn and world_size > 1:
            distributed.check_sync_bn(self.device, world_size)
            distributed.convert_sync_batchnorm(self.G)
            distributed.convert_sync_batchnorm(self.D)
        self.G_params = [p for p in self.G.parameters() if p.requires_grad]
        self.D_params = [p for p in self.D.parameters() if p.requires_grad]
        if self.encoder.trainable:
            self.D_params += [p for p in self.encoder.parameters() if p.requires_grad]
        # Learning rates are used as given whatever the number of processes (the global batch grows with it);
        # train.scale_lr multiplies them by the number of processes (the linear scaling rule).
        lr_scale = world_size if self.t.scale_lr else 1
        self.opt_g = make_optimizer(self.G_params, self.t.lr_g * lr_scale, self.t)
        self.opt_d = make_optimizer(self.D_params, self.t.lr_d * lr_scale, self.t)

        self.batches_per_epoch = len(self.train_data) // (self.t.batch_size * world_size)
        if self.batches_per_epoch < 1:
            raise UsageError(
                f"train split has {len(self.train_data)} images, fewer than one batch of "
                f"{self.t.batch_size} x {world_size} process(es); lower --batch-size"
            )
        self.total_steps = self._total_steps()
        if self.total_steps is None and self.t.minutes is None:
            raise UsageError("no stop condition: set train.steps, train.epochs or train.minutes")
        self.sched_g = make_scheduler(self.opt_g, self.t, self.total_steps)
        self.sched_d = make_scheduler(self.opt_d, self.t, self.total_steps)
        G_train, D_train = self._ddp(self.G), self._ddp(self.D)  # before the EMA copies G: rank 0's weights
        # a trainable text encoder learns with D, so its gradients are averaged over processes like D's
        self._encoder_train = self._ddp(self.encoder) if self.encoder.trainable else self.encoder
        # EMA of G's parameters; buffers (BN running statistics, counters) are copied, not averaged
        self.ema = (
            AveragedModel(self.G, multi_avg_fn=get_ema_multi_avg_fn(self.t.ema), use_buffers=False)
            if self.t.ema > 0
            else None
        )
        self.G_step = torch.compile(G_train) if self.t.compile else G_train
        self.D_step = torch.compile(D_train) if self.t.compile else D_train
        # D in the G step. D is frozen there (requires_grad off) and must not take part in DDP's gradient
        # reduction: through the DDP wrapper, its reducer would wait for gradients that never come (or, with
        # find_unused_parameters, all-reduce nothing every step). So the G step calls the plain module: G's
        # gradient flows through D's (identical) weights as usual and only G's wrapper reduces. D's buffers
        # stay consistent: spectral norm's power iteration depends on the weights only, which are equal on
        # every rank, and rank 0's buffers are broadcast again at D's next forward through the wrapper.
        if world_size > 1:
            self.D_frozen = torch.compile(self.D) if self.t.compile else self.D
        else:
            self.D_frozen = self.D_step

        self.captions = self._caption_table()
        self._hooked = [self.G, self.D, self.encoder, self.parts.adversarial, *(t for _, _, t in self.parts.terms)]
        if self.ema is not None:
            self._hooked.append(self.ema.module)
        self.images = self.train_data.images  # uint8 (N, R, R, 3), stays where the data set put it
        self.caption_ids = self.train_data.caption_ids
        self.caption_counts = self.train_data.caption_counts
        self.rng = torch.Generator().manual_seed(self.t.seed)
        # Noise has its own generator, identical on every rank; each rank takes its rows of the global
        # batch's noise (see _noise), so ranks get distinct noise and the union is what one process drew.
        self.noise_rng = torch.Generator().manual_seed(self.t.seed + _NOISE_SEED_OFFSET)
        if rank > 0:  # weights are built; global-RNG users (dropout, ...) now differ per rank
            torch.manual_seed(self.t.seed + rank * _RANK_SEED_STRIDE)
        self.step = 0
        self.epoch = 0
        self.position = 0  # batches consumed in the current epoch
        self.elapsed = 0.0
        self._perm: torch.Tensor | None = None
        self._batch_captions: list[str] | None = None  # the batch's caption strings, for terms that need them
        self._stop_signal: str | None = None
        self._time_up = False
        self.t_eval_every = cfg.eval.every
        self._evaluated: dict[int, dict[str, float]] = {}
        self._sample_captions, self._sample_noise = self._fixed_samples()

        self.augment = DiffAugment(cfg.augment).to(self.device)  # identity when cfg.augment.policy is empty
        self.writer = RunWriter(self.run_dir, enabled=rank == 0, tensorboard=tensorboard)
        if resume:
            self._restore()
        elif rank == 0:
            save_toml(self.resolved, self.run_dir / "config.toml")
        self.health = HealthMonitor({"generator": self.G, "discriminator": self.D}, replay=read_records(self.run_dir) if resume else ())

    # -- setup -----------------------------------------------------------------------------------------
    def _fit_text(self, encoder: TextEncoder, dataset: Any) -> None:
        """Load the training split (at the random crop's larger size when it is on) and fit the text encoder."""
        from ..data.augment import BatchAugment

        d = self.cfg.data
        self.data_augment = BatchAugment(d.resolution, random_crop=d.random_crop, flip=d.flip, jitter=d.jitter, dataset=dataset)
        self._train_split = load_split(dataset, d.train_split, self.data_augment.load_resolution)
        encoder.fit(self._train_split.captions)

    def _total_steps(self) -> int | None:
        candidates = []
        if self.t.steps is not None:
            candidates.append(self.t.steps)
        if self.t.epochs is not None:
            candidates.append(steps_for_epochs(self.t.epochs, self.batches_per_epoch, self.t.d_steps))
        return min(candidates) if candidates else None

    def _fixed_samples(self) -> tuple[list[str], torch.Tensor]:
        if self.reference is not None and self.cfg.data.sample_split == self.cfg.eval.split:
            split = self.reference
        else:
            split = load_split(self.parts.dataset, self.cfg.data.sample_split, self.cfg.data.resolution)
        n = len(split)
        picks = [int(i * n / SAMPLE_ROWS) for i in range(min(SAMPLE_ROWS, n))]
        captions = [split.captions_of(i)[0] for i in picks]
        g = torch.Generator().manual_seed(self.t.seed + _SAMPLE_SEED_OFFSET)
        noise = torch.randn(SAMPLE_COLUMNS, self.G.z_dim, generator=g)
        return captions, noise

    # -- data --------------------------------------------------------------------------------------------
    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Real images ``(B, 3, R, R)`` in [-1, 1] and one caption id per image."""
        if self.position >= self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
            self._perm = None
        if self._perm is None:
            g = torch.Generator().manual_seed(self.t.seed * 1_000_003 + self.epoch)
            self._perm = torch.randperm(len(self.images), generator=g)[self.rank :: self.world_size]
        b = self.t.batch_size
        idx = self._perm[self.position * b : (self.position + 1) * b]
        self.position += 1
        # drawn for the global batch and sliced like the data, so W processes pick the captions one would
        draws = torch.rand(b * self.world_size, generator=self.rng)[self.rank :: self.world_size]
        choice = (draws * self.caption_counts[idx]).long()
        cid = self.caption_ids[idx, choice]
        # uint8 (B, 3, R, R): random crop / flip when configured (random numbers from self.rng), else whole
        real = self.data_augment.pixels(self.images, idx, self.rng, self.device, channels_last=self.t.channels_last)
        if not self.t.channels_last:
            real = real.contiguous()
        real = real.float().div_(127.5).sub_(1.0)
        real = self.data_augment.colour(real, self.rng)  # jitter (off: as is)
        return real, cid.to(self.device)

    def _noise(self, n: int) -> torch.Tensor:
        """``n`` noise vectors for this rank: rows ``rank, rank + W, ...`` of the ``n x W`` vectors drawn for
        the global batch (W processes), the same slicing as the data's ``perm[rank::W]``. So W processes
        with batch ``n`` see exactly the images and noise that one process with batch ``n x W`` sees."""
        z = torch.randn(n * self.world_size, self.G.z_dim, generator=self.noise_rng)
        return z[self.rank :: self.world_size].to(self.device)

    # -- one step ------------------------------------------------------------------------------------------
    def _d_step(self, real: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        mismatched = text.roll(1, 0) if "mismatched" in self.needs else None
        z = self._noise(real.shape[0])
        with torch.no_grad(), self.precision.autocast():
            fake = self.G_step(z, text.detach())
        if "real_grad" in self.needs:
            real = real.detach().requires_grad_(True)
        # DiffAugment (identity when off): D sees augmented images; terms get the originals, so R1's gradient
        # with respect to the real images flows back through the augmentation
        real_seen, fake_seen = self.augment(real, fake)
        with self.precision.autocast():
            real_out = self.D_step(real_seen, text, mismatched)
            fake_out = self.D_step(fake_seen, text)
        self.augment.observe(real_out.logits)
        out = StepOutputs(real_out, fake_out, real, fake, text, self.parts.adversarial, self.D, self.G, self.step,
                          self._batch_captions)
        losses = {"adv": self.parts.adversarial.d_loss(out)}
        total = losses["adv"]
        for name, weight, term in self.parts.terms:
            value = term.d_loss(out)
            if value is not None:
                losses[name] = value
                total = total + weight * value
        self.precision.step(total, self.opt_d, self.D_params, self.t.grad_clip)
        losses["total"] = total
        losses["real_logit"] = real_out.logits.float().mean()
        losses["fake_logit"] = fake_out.logits.float().mean()
        return {f"d/{k}": v.detach() for k, v in losses.items()}

    def _g_step(self, real: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        text = text.detach()
        z = self._noise(real.shape[0])
        for p in self.D_params:
            p.requires_grad_(False)
        try:
            with self.precision.autocast():
                fake = self.G_step(z, text)
                fake_seen, real_seen = self.augment(fake, real)  # the same augmentations as in the D step
                fake_out = self.D_frozen(fake_seen, text)
                real_out = None
                if "real_in_g_step" in self.needs:
                    with torch.no_grad():
                        real_out = self.D_frozen(real_seen, text)
            out = StepOutputs(real_out, fake_out, real, fake, text, self.parts.adversarial, self.D, self.G, self.step,
                              self._batch_captions)
            losses = {"adv": self.parts.adversarial.g_loss(out)}
            total = losses["adv"]
            for name, weight, term in self.parts.terms:
                value = term.g_loss(out)
                if value is not None:
                    losses[name] = value
                    total = total + weight * value
            self.precision.step(total, self.opt_g, self.G_params, self.t.grad_clip)
        finally:
            for p in self.D_params:
                p.requires_grad_(True)
        losses["total"] = total
        return {f"g/{k}": v.detach() for k, v in losses.items()}

    @property
    def images_seen(self) -> int:
        """Real images shown to D so far, over all processes (drives schedules such as progressive growing)."""
        per_batch = self.t.batch_size * self.world_size
        return (self.epoch * self.batches_per_epoch + self.position) * per_batch

    def train_step(self) -> dict[str, torch.Tensor]:
        """``d_steps`` discriminator steps, then one generator step on the last batch's captions."""
        seen = self.images_seen
        for component in self._hooked:
            component.on_train_step(self.step, seen)
        for _ in range(self.t.d_steps):
            real, cid = self._next_batch()
            text = self.captions(cid)
            if "captions" in self.needs:  # terms that read the caption strings (the contrastive term)
                self._batch_captions = [self.train_data.captions[i] for i in cid.tolist()]
            logs = self._d_step(real, text)
        logs.update(self._g_step(real, text))
        if self.augment.enabled:
            self.augment.update(self.step)
            logs["aug/p"] = self.augment.p.detach().clone()
        if self.ema is not None:
            self.ema.update_parameters(self.G)
            with torch.no_grad():
                for ema_buffer, buffer in zip(self.ema.module.buffers(), self.G.buffers()):
                    ema_buffer.copy_(buffer)
        self.sched_g.step()
        self.sched_d.step()
        self.step += 1
        return logs

    # -- the loop -------------------------------------------------------------------------------------------
    def fit(self) -> RunResult:
        previous = _install_signals(self._on_signal)
        progress = Progress(self.total_steps, self.t.minutes, self.step, quiet=self.quiet) if self.rank == 0 else _Silent()
        sums: dict[str, torch.Tensor] = {}
        window_start, window_steps = time.perf_counter(), 0
        start_elapsed, loop_start = self.elapsed, time.perf_counter()
        status, message, last, samples_path, ckpt, evaluation = "finished", "", {}, None, None, {}
        saved_step: int | None = None  # the same on every rank (only rank 0 gets a path from save())
        self._time_up = self.t.minutes is not None and self.elapsed >= self.t.minutes * 60
        try:
            with progress:
                while not self._done():
                    logs = self.train_step()
                    for k, v in logs.items():
                        sums[k] = sums[k] + v if k in sums else v.clone()
                    window_steps += 1
                    self.elapsed = start_elapsed + time.perf_counter() - loop_start
                    self._agree_to_stop()
                    at_log = self.step % self.t.log_every == 0
                    at_ckpt = self.t.checkpoint_every and self.step % self.t.checkpoint_every == 0
                    if at_log or at_ckpt:
                        # losses averaged over ranks: a non-finite value on any rank is non-finite on all,
                        # so every rank stops at the same step
                        reduced = self._mean_over_ranks(sums)
                        if not bool(torch.stack(list(reduced.values())).isfinite().all()):  # one device sync
                            status = "diverged"
                            bad = sorted(k for k, v in reduced.items() if not torch.isfinite(v))
                            message = f"non-finite {', '.join(bad)} before step {self.step}"
                            break
                    if at_log:
                        now = time.perf_counter()
                        last = self._log(reduced, window_steps, now - window_start)
                        progress.update(self.step, self.elapsed, last)
                        sums, window_start, window_steps = {}, now, 0
                    else:
                        progress.update(self.step, self.elapsed, None)
                    if self.t.sample_every and self.step % self.t.sample_every == 0:
                        samples_path = self.write_samples()
                    if self.t_eval_every and self.step % self.t_eval_every == 0:
                        evaluation = self._evaluate_on_rank_zero()
                    if at_ckpt:
                        ckpt, saved_step = self.save(), self.step
                    if self._stop_signal:
                        status = "interrupted"
                        break
            if status != "diverged":
                if window_steps:
                    last = self._log(self._mean_over_ranks(sums), window_steps, time.perf_counter() - window_start)
                if samples_path is None or f"{self.step:08d}" not in samples_path.name:
                    samples_path = self.write_samples()
                if saved_step != self.step:
                    ckpt = self.save()
                if status == "finished" and self.metrics and self.rank == 0:  # no barrier: the others are done
                    evaluation = self._evaluated.get(self.step) or self.evaluate()
            else:
                ckpt = latest_checkpoint(self.run_dir / "checkpoints")
        finally:
            _restore_signals(previous)
        ips = self._images_per_second()
        result = RunResult(self.run_dir, status, self.step, self.elapsed, ips, samples_path, ckpt, last, message, evaluation)
        self.writer.text("summary.md", self.summary(result))
        self.writer.close()
        return result

    def _done(self) -> bool:
        if self.total_steps is not None and self.step >= self.total_steps:
            return True
        return self._time_up  # train.minutes, agreed by every rank (_agree_to_stop)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # A second Ctrl-C stops now, without saving. A SIGTERM never does: torchrun sends one to every
        # process after the terminal's SIGINT, and schedulers send one before killing a job.
        if self._stop_signal and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._stop_signal = self._stop_signal or signal.Signals(signum).name

    def _agree_to_stop(self) -> None:
        """Every rank stops after the same step: a signal to any process, or the time limit reached on any
        rank's clock, stops all of them (one tiny all-reduce on the CPU per step)."""
        time_up = self.t.minutes is not None and self.elapsed >= self.t.minutes * 60
        if self.world_size > 1:
            time_up, signalled = distributed.any_rank([time_up, self._stop_signal is not None])
            if signalled and self._stop_signal is None:
                self._stop_signal = "a signal to another process"
        self._time_up = time_up

    def _mean_over_ranks(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The summed losses averaged over processes (one all-reduce); unchanged in a single process."""
        if self.world_size == 1 or not sums:
            return sums
        keys = sorted(sums)
        mean = distributed.all_reduce_mean(torch.stack([sums[k].float() for k in keys]))
        return dict(zip(keys, mean.unbind()))

    def _evaluate_on_rank_zero(self) -> dict[str, float]:
        """Metrics computed on rank 0 while the other ranks wait at a barrier.

        Why not split the work over ranks and gather: a metric receives ``generate`` and the reference and
        returns aggregate figures (FID needs every feature at once), so splitting it would change the
        metric interface, and the figures would no longer be those ``t2i eval`` gives for the checkpoint.
        Every rank holds the same weights, so rank 0's figures are the run's. The barrier waits at most
        ``T2I_DIST_TIMEOUT`` seconds (default 1800); raise it for evaluations that take longer.
        """
        values = self.evaluate() if self.rank == 0 else {}
        distributed.barrier()
        return values

    def _ddp(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in DistributedDataParallel when training on several processes, else ``module``."""
        if self.world_size == 1:
            return module
        return distributed.wrap(module, self.device, find_unused_parameters=bool(getattr(module, "progressive", False)))

    def _caption_table(self) -> CaptionTable:
        table = CaptionTable(self.encoder, self.train_data.captions, self.device, self._caption_key())
        if not table.frozen:
            table.encoder = self._encoder_train  # the DDP wrapper (made once) when training on several processes
        return table

    def _log(self, sums: dict[str, torch.Tensor], steps: int, seconds: float) -> dict[str, float]:
        record = {k: float(v) / steps for k, v in sums.items()}
        record["lr/g"] = self.opt_g.param_groups[0]["lr"]
        record["lr/d"] = self.opt_d.param_groups[0]["lr"]
        record["img_per_s"] = steps * self.t.d_steps * self.t.batch_size * self.world_size / max(seconds, 1e-9)
        record["epoch"] = self.epoch + self.position / self.batches_per_epoch
        record["elapsed_s"] = self.elapsed
        record.update(self.health.network_health(self.step))  # health/g_update, health/d_update
        verdicts = self.health.observe(self.step, record)
        if verdicts:  # the codes of the problems that hold now, for metrics.jsonl and the progress display
            record["health"] = sorted({v.code for v in verdicts})
        self.writer.log(self.step, record)
        return record

    def _images_per_second(self) -> float:
        if self.elapsed <= 0:
            return 0.0
        return self.step * self.t.d_steps * self.t.batch_size * self.world_size / self.elapsed

    # -- evaluation --------------------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """The configured metrics on the sampling generator; logged as ``eval/...`` and kept in eval.json."""
        if not self.metrics or self.reference is None:
            return {}
        values, protocols = evaluate(
            self.metrics, self.sample_generator(), self.encoder, self.reference, self.device,
            seed=self.t.seed, autocast=self.precision.autocast,
        )
        self._evaluated[self.step] = values
        record: dict[str, Any] = {f"eval/{k}": v for k, v in values.items()}
        verdicts = self.health.observe_eval(self.step, values)  # mode collapse, stalled metrics
        if verdicts:
            record["health"] = sorted({v.code for v in verdicts})
        self.writer.log(self.step, record)
        self.writer.text("eval.json", json.dumps(
            {"step": self.step, "split": self.cfg.eval.split, "values": values, "protocol": protocols}, indent=2
        ) + "\n")
        return values

    # -- samples, checkpoints, summary ---------------------------------------------------------------------------
    def sample_generator(self) -> torch.nn.Module:
        """The network samples come from: the EMA of G when enabled, else G."""
        return self.ema.module if self.ema is not None and int(self.ema.n_averaged) > 0 else self.G

    @torch.no_grad()
    def write_samples(self) -> Path | None:
        if self.rank != 0:
            return None
        G = self.sample_generator()
        was_training = G.training
        G.eval()
        try:
            text = self.encoder.encode(self._sample_captions).to(self.device).float()
            rows, cols = len(self._sample_captions), SAMPLE_COLUMNS
            z = self._sample_noise.to(self.device).repeat(rows, 1)
            with self.precision.autocast():
                images = G(z, text.repeat_interleave(cols, 0)).float()
        finally:
            G.train(was_training)
        return self.writer.samples(self.step, caption_grid(images.cpu(), self._sample_captions, columns=cols))

    def state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        weights = {
            "generator": self.G.state_dict(),
            "discriminator": self.D.state_dict(),
            "text_encoder": self.encoder.state_dict(),
        }
        if self.ema is not None:
            weights["generator_ema"] = self.ema.module.state_dict()
        if self.augment.enabled:  # ADA's p and its running statistics
            weights["augment"] = self.augment.state_dict()
        return weights

    def save(self) -> Path | None:
        """Write a checkpoint (rank 0) and return its folder; ``None`` on other ranks.

        Every rank must call it at the same step: each contributes its own RNG state (dropout and the like
        differ per rank), so a resumed run continues every rank's stream, not rank 0's everywhere.
        """
        rank_rng = distributed.all_gather_object(self._local_rng_state()) if self.world_size > 1 else None
        if self.rank != 0:
            return None
        state = {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "elapsed": self.elapsed,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
            "scaler": self.precision.scaler.state_dict(),
            "ema_n_averaged": self.ema.n_averaged.clone() if self.ema is not None else torch.tensor(0),
            "rng": self.rng.get_state(),
            "noise_rng": self.noise_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            **({"cuda_rng": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {}),
            "world_size": self.world_size,
            **({"rank_rng": rank_rng} if rank_rng is not None else {}),
        }
        meta = {"t2i_version": __version__, "text_encoder": self.encoder.extra_state(), "config": self.resolved.to_dict()}
        return save_checkpoint(self.run_dir / "checkpoints", self.step, self.state_dicts(), state, meta, keep=self.t.keep_checkpoints)

    def _local_rng_state(self) -> dict[str, torch.Tensor]:
        state = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _restore(self) -> None:
        # rank 0 picks the checkpoint and every rank loads that one (not whatever each finds on its disk)
        path = distributed.broadcast_object(latest_checkpoint(self.run_dir / "checkpoints") if self.rank == 0 else None)
        if path is None:
            raise UsageError(f"{self.run_dir} has no checkpoint to resume from (no checkpoints/step_* folder)")
        ckpt = load_checkpoint(path, map_location=self.device)
        self.encoder.load_extra_state(ckpt.meta.get("text_encoder", {}))
        self.encoder.to(self.device)
        self.G.load_state_dict(ckpt.weights["generator"])
        self.D.load_state_dict(ckpt.weights["discriminator"])
        self.encoder.load_state_dict(ckpt.weights["text_encoder"])
        if "augment" in ckpt.weights:
            self.augment.load_state_dict(ckpt.weights["augment"])
        if self.ema is not None and "generator_ema" in ckpt.weights:
            self.ema.module.load_state_dict(ckpt.weights["generator_ema"])
            self.ema.n_averaged.copy_(ckpt.state["ema_n_averaged"])
        s = ckpt.state
        saved_world = int(s.get("world_size", 1))
        if saved_world != self.world_size:
            raise UsageError(
                f"{self.run_dir} was trained on {saved_world} process(es); resume it on {saved_world} "
                f"(this is {self.world_size}): the data position and the random streams depend on the count"
            )
        self.opt_g.load_state_dict(s["opt_g"])
        self.opt_d.load_state_dict(s["opt_d"])
        self.sched_g.load_state_dict(s["sched_g"])
        self.sched_d.load_state_dict(s["sched_d"])
        self.precision.scaler.load_state_dict(s["scaler"])
        self.rng.set_state(s["rng"].cpu())
        if "noise_rng" in s:  # older checkpoints drew the noise from ``rng``
            self.noise_rng.set_state(s["noise_rng"].cpu())
        own = s["rank_rng"][self.rank] if "rank_rng" in s else {"torch": s["torch_rng"], "cuda": s.get("cuda_rng")}
        torch.set_rng_state(own["torch"].cpu())
        if own.get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(own["cuda"].cpu(), self.device)
        self.step, self.epoch, self.position = int(s["step"]), int(s["epoch"]), int(s["position"])
        self.elapsed = float(s["elapsed"])
        self.writer.forget_after(self.step)  # lines a killed process logged after its last checkpoint
        self.captions = self._caption_table()

    def _caption_key(self) -> dict[str, Any]:
        """What the cached caption embeddings depend on (the encoder's weights are fingerprinted too)."""
        r = self.resolved
        return {"data": {"name": r.data.name, "options": r.data.options, "split": r.data.train_split},
                "encoder": {"name": r.text_encoder.name, "options": r.text_encoder.options}}

    def summary(self, result: RunResult) -> str:
        r = self.resolved
        lines = [
            f"# Run {self.run_dir.name}",
            "",
            f"- status: **{result.status}**" + (f" ({result.message})" if result.message else ""),
            f"- steps: {result.step} generator steps ({self.epoch + self.position / self.batches_per_epoch:.2f} epochs "
            f"of {len(self.train_data)} {r.data.train_split} images), batch {self.t.batch_size}",
            f"- training time: {result.elapsed / 60:.1f} min; throughput {result.images_per_second:.0f} images/s "
            f"(real images through D per second, device {self.device.type}, precision {self.precision.name})",
            f"- data: {r.data.name} at {r.data.resolution}x{r.data.resolution}",
            f"- parameters: generator {count_parameters(self.G):,}, discriminator {count_parameters(self.D):,}, "
            f"text encoder {count_parameters(self.encoder):,} ({'trained with D' if self.encoder.trainable else 'frozen'})",
            f"- text encoder: {r.text_encoder.name} {json.dumps(r.text_encoder.options)}",
            f"- generator: {r.generator.name} {json.dumps(r.generator.options)}",
            f"- discriminator: {r.discriminator.name} {json.dumps(r.discriminator.options)}",
            f"- loss: {r.loss.adversarial} + " + (", ".join(f"{w:g} x {n}" for n, w, _ in self.parts.terms) or "no terms"),
            f"- optimiser: Adam lr G {self.t.lr_g:g} / D {self.t.lr_d:g}, betas {tuple(self.t.betas)}, "
            f"{self.t.d_steps} D step(s) per G step, schedule {self.t.schedule}, EMA {self.t.ema:g}",
            "",
            "## Last logged losses",
            "",
            "| metric | value |",
            "|---|---|",
            *[f"| {k} | {v:.4g} |" for k, v in sorted(result.last.items()) if k.startswith(("d/", "g/"))],
            "",
        ]
        if result.evaluation:
            lines += [f"## Evaluation at step {self.step} ({self.cfg.eval.split} split; protocol in eval.json)", "",
                      *evaluation_table(result.evaluation), ""]
        lines += ["## Health (health.json)", "", *verdict_lines(self.write_health(result)), ""]
        if result.samples is not None:
            rel = Path(result.samples).relative_to(self.run_dir)
            lines += ["## Samples", "", f"Fixed noise (columns) x fixed {r.data.sample_split} captions (rows):", "", f"![samples]({rel})", ""]
        if result.checkpoint is not None:
            lines += [f"Checkpoint: `{Path(result.checkpoint).relative_to(self.run_dir)}`; resume with "
                      f"`t2i run --resume {self.run_dir}`.", ""]
        return "\n".join(lines)

    def write_health(self, result: RunResult) -> list:
        """Close the health diagnosis (a diverged run names the losses and networks that went bad) and write
        every verdict to ``health.json``; return the verdicts."""
        self.health.observe_stop(result.step, result.status, result.message)
        self.writer.text("health.json", self.health.to_json())
        return self.health.verdicts


def count_parameters(module: torch.nn.Module) -> int:
    """Number of scalars in ``module``'s parameters (spectral norm's ``original`` counted once)."""
    return sum(p.numel() for p in module.parameters())


def _ckpt_step(path: Path) -> int:
    return int(path.name.split("_")[-1])


class _Silent:
    """The progress display of ranks other than 0: nothing (rank 0 speaks for the job)."""

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C, and what schedulers send before killing a job


def _install_signals(handler: Any) -> dict[int, Any]:
    """Finish the current step, save and stop on Ctrl-C / SIGTERM. Not in the main thread: no handling."""
    try:
        return {sig: signal.signal(sig, handler) for sig in _STOP_SIGNALS}
    except ValueError:
        return {}


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)

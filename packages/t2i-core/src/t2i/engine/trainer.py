"""The training engine: :meth:`Trainer.fit` is the loop, and each collaborator owns its state and timing.

- :class:`~t2i.engine.feed.DataFeed`: real images, captions and noise, reproducibly;
- :class:`~t2i.engine.step.GANStep`: one D and one G update, ``adversarial + sum(weight * term)``;
- :class:`~t2i.engine.log.TrainingLog`, :class:`~t2i.engine.samples.SampleGrids`,
  :class:`~t2i.engine.evaluate.Evaluator`, :class:`~t2i.engine.checkpointer.Checkpointer`: each says
  when it is ``due(step)``;
- :class:`~t2i.engine.stopping.Stopping`: the run's length, time limit and signals, agreed by every rank.

Reproducibility: every source of randomness is a stateful part that the checkpointer saves (the feed's
generators, every rank's global RNG), so on CPU a resumed run ends bit-identical to an uninterrupted one.

Several processes (torchrun; :mod:`t2i.engine.distributed`): G, D and a trainable text encoder are wrapped
in DistributedDataParallel, each rank trains its share of the global batch (see :mod:`t2i.engine.feed`),
rank 0 alone writes (logs, samples, checkpoints, summary), and every rank stops at the same step.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..augment import DiffAugment
from ..config import ExperimentConfig, save_toml
from ..data.splits import load_split
from ..device import pick_device
from ..errors import UsageError
from . import distributed
from .captions import CaptionTable, caption_cache_key
from .checkpoint import latest_checkpoint
from .checkpointer import Checkpointer, Stateful
from .components import build_components
from .evaluate import Evaluator
from .feed import SAMPLE_COLUMNS, SAMPLE_ROWS, DataFeed, process_batch
from .health import HealthMonitor, Verdict, read_records
from .log import TrainingLog
from .networks import place_networks
from .preflight import PREFLIGHT_BATCH, check_networks, tuning_warnings
from .optim import Precision, learning_rates, make_optimizer, make_scheduler, steps_for_epochs
from .progress import Progress, Silent
from .rng import ProcessRNG
from .samples import SampleGrids
from .step import GANStep
from .stopping import Stopping
from .summary import RunFacts, RunResult, count_parameters, peak_memory, summary_markdown
from .writer import RunWriter

__all__ = ["Trainer", "RunResult", "count_parameters", "SAMPLE_ROWS", "SAMPLE_COLUMNS"]


class Trainer:
    """Train ``cfg`` into ``run_dir``; ``resume=True`` continues from the folder's latest checkpoint.
    ``tensorboard=False`` leaves TensorBoard out of the run's loggers (``cfg.log.loggers``), as tests do."""

    def __init__(self, cfg: ExperimentConfig, run_dir: str | Path, *, resume: bool = False, quiet: bool = False,
                 rank: int = 0, world_size: int = 1, tensorboard: bool = True):
        self.cfg, self.t, self.run_dir, self.quiet = cfg, cfg.train, Path(run_dir), quiet
        self.rank, self.world_size = rank, world_size
        if world_size > 1 and not distributed.is_distributed():
            raise UsageError(f"world_size={world_size} needs a torch.distributed process group: start the run with "
                             "torchrun (or t2i run --nproc N), which t2i.engine.distributed.session joins")
        self.device = distributed.local_device(pick_device(self.t.device))  # cuda:LOCAL_RANK under torchrun
        self.precision = Precision(self.t.precision, self.device)
        torch.manual_seed(self.t.seed)  # the networks' initial weights
        self.parts = build_components(cfg)
        self.evaluator = Evaluator(cfg.eval, self.parts.dataset, cfg.data.resolution, seed=self.t.seed, rank=rank)
        self.resolved = dataclasses.replace(
            self.parts.resolved, eval=dataclasses.replace(cfg.eval, options=self.evaluator.options))
        self.train_data = self.parts.train_split
        nets = place_networks(self.parts.generator, self.parts.discriminator, self.parts.text_encoder, self.t,
                              self.device, world_size)
        self.nets, self.G, self.D, self.encoder, self.ema = nets, nets.G, nets.D, nets.encoder, nets.ema
        # train.batch_size is the global batch; this process's share, split into micro-batches inside the step
        self.process_batch, self.accumulation = process_batch(self.t.batch_size, world_size, self.t.micro_batch)
        self.feed = DataFeed(self.train_data, self.parts.batch_augment, batch_size=self.process_batch, seed=self.t.seed,
                             z_dim=self.G.z_dim, device=self.device, channels_last=self.t.channels_last, rank=rank,
                             world_size=world_size, sample_split=self._sample_split())
        self.stopping = Stopping(self._total_steps(), self.t.minutes, world_size)
        self.augment = DiffAugment(cfg.augment).to(self.device)  # identity when cfg.augment.policy is empty
        self.gan_step = self._gan_step()
        self.captions = None if resume else self._caption_table()  # on resume: once the encoder is restored
        self.random = ProcessRNG(self.device, rank, world_size)
        self.random.seed_rank(self.t.seed)  # weights are built; global-RNG users (dropout, ...) now differ per rank
        self.step = 0
        self._preflight()  # before the run folder is written: a broken network leaves nothing behind
        self._open_run_folder(resume, tensorboard)

    # -- setup -------------------------------------------------------------------------------------------------
    def _sample_split(self) -> Any:
        """The split the fixed sample captions come from (the evaluation's reference when it is the same)."""
        d, reference = self.cfg.data, self.evaluator.reference
        if reference is not None and d.sample_split == self.cfg.eval.split:
            return reference
        return load_split(self.parts.dataset, d.sample_split, d.resolution)

    def _total_steps(self) -> int | None:
        candidates = []
        if self.t.steps is not None:
            candidates.append(self.t.steps)
        if self.t.epochs is not None:
            candidates.append(steps_for_epochs(self.t.epochs, self.feed.batches_per_epoch, self.t.d_steps))
        if not candidates and self.t.minutes is None:
            raise UsageError("no stop condition: set train.steps, train.epochs or train.minutes")
        return min(candidates) if candidates else None

    def _gan_step(self) -> GANStep:
        """The optimisers (at the learning rates actually used), their schedules, and the step they drive."""
        n, t = self.nets, self.t
        self.lr_g, self.lr_d = learning_rates(t, self.world_size)
        self.opt_g, self.opt_d = make_optimizer(n.G_params, self.lr_g, t), make_optimizer(n.D_params, self.lr_d, t)
        total = self.stopping.total_steps
        self.sched_g, self.sched_d = make_scheduler(self.opt_g, t, total), make_scheduler(self.opt_d, t, total)
        self._hooked = [n.G, n.D, n.encoder, self.parts.adversarial, *(term for _, _, term in self.parts.terms)]
        if n.ema is not None:
            self._hooked.append(n.ema.module)
        return GANStep(G=n.G, D=n.D, G_train=n.G_train, D_train=n.D_train, D_frozen=n.D_frozen,
                       adversarial=self.parts.adversarial, terms=self.parts.terms, needs=self.parts.needs,
                       augment=self.augment, precision=self.precision, opt_g=self.opt_g, opt_d=self.opt_d,
                       G_params=n.G_params, D_params=n.D_params, noise=self.feed.noise, grad_clip=t.grad_clip,
                       micro_batch=t.micro_batch if self.accumulation > 1 else 0)

    def _preflight(self) -> None:
        """Every network once on two samples, against its contract (:mod:`t2i.engine.preflight`; a one-line
        UsageError), and a warning for each loss term tuned for another discriminator. Touches no state."""
        cfg = self.cfg
        names = {"generator": cfg.generator.name, "discriminator": cfg.discriminator.name,
                 "text_encoder": cfg.text_encoder.name}
        captions = self.train_data.captions[:PREFLIGHT_BATCH]
        # a frozen encoder's embeddings are already in the caption table (maybe read from the disk cache)
        table = self.captions if self.captions is not None and self.captions.frozen else None
        use_table = table is not None and len(captions) == PREFLIGHT_BATCH
        text = table(torch.arange(PREFLIGHT_BATCH, device=self.device)) if use_table else None
        check_networks(self.G, self.D, self.encoder, resolution=cfg.data.resolution, names=names,
                       captions=captions, needs=self.needs, device=self.device, text=text)
        self.warnings = tuning_warnings(self.parts.terms, cfg.discriminator.name)
        if self.rank == 0:
            for line in self.warnings:
                print(f"t2i: warning: {line}", file=sys.stderr, flush=True)

    def _caption_table(self) -> CaptionTable:
        return CaptionTable(self.encoder, self.train_data.captions, self.device, caption_cache_key(self.resolved),
                            train_encoder=self.nets.encoder_train)

    def _open_run_folder(self, resume: bool, tensorboard: bool) -> None:
        """The writers (rank 0 writes), then the checkpoint to resume from or the config of a new run."""
        loggers = [n for n in self.cfg.log.loggers if tensorboard or n != "tensorboard"]  # tensorboard=False: tests
        self.writer = RunWriter(self.run_dir, enabled=self.rank == 0, loggers=loggers, options=self.cfg.log.options,
                                config=self.resolved.to_dict(), resumed=resume)
        self.health = HealthMonitor({"generator": self.G, "discriminator": self.D})
        images_per_step = self.t.d_steps * self.t.batch_size
        self.log = TrainingLog(self.writer, self.health, every=self.t.log_every, images_per_step=images_per_step,
                               world_size=self.world_size)
        self.sampler = SampleGrids(self.writer, self.feed.sample_captions, self.feed.sample_noise,
                                   every=self.t.sample_every)
        self.checkpointer = Checkpointer(self.run_dir / "checkpoints", every=self.t.checkpoint_every,
                                         keep=self.t.keep_checkpoints, writer=self.rank == 0)
        if resume:
            self._restore()
        elif self.rank == 0:
            save_toml(self.resolved, self.run_dir / "config.toml")

    @property
    def needs(self) -> frozenset[str]:
        return self.parts.needs

    @property
    def images_seen(self) -> int:
        """Real images shown to D so far, over all processes (what progressive growing's schedule follows)."""
        return self.feed.images_seen

    # -- one step ----------------------------------------------------------------------------------------------
    def train_step(self) -> dict[str, torch.Tensor]:
        """``d_steps`` discriminator updates, then one generator update on the last batch's captions; EMA, ADA
        and the learning-rate schedules advance. Returns the step's losses (tensors, not synced)."""
        seen = self.images_seen
        for component in self._hooked:
            component.on_train_step(self.step, seen)
        for _ in range(self.t.d_steps):
            real, cid = self.feed.next_batch()
            if "words" in self.needs or self.G.uses_words or self.D.uses_words:  # word features only when used
                text, words = self.captions.with_words(cid)
            else:
                text, words = self.captions(cid), None
            captions = self.feed.caption_strings(cid) if "captions" in self.needs else None
            logs = self.gan_step.discriminator(real, text, self.step, captions, words=words)
        logs.update(self.gan_step.generator(real, text, self.step, captions, words=words))
        if self.augment.enabled:
            self.augment.update(self.step)
            logs["aug/p"] = self.augment.p.detach().clone()
        if self.ema is not None:
            self.ema.update(self.G)
        self.sched_g.step()
        self.sched_d.step()
        self.step += 1
        return logs

    # -- the loop ----------------------------------------------------------------------------------------------
    def fit(self) -> RunResult:
        """Train until the run's length or time limit, a signal, or a non-finite loss; then log, sample, save and
        evaluate the last step, and write the summary."""
        status, message, last, evaluation = "finished", "", {}, {}
        progress = Silent() if self.rank != 0 else Progress(self.stopping.total_steps, self.t.minutes, self.step,
                                                             quiet=self.quiet)
        with self.stopping.handling_signals():
            with progress:
                self.stopping.start()
                self.log.start()
                while not self.stopping.done(self.step):
                    # forward, backward, update: d_steps D updates, one G update, EMA and schedules
                    self.log.add(self.train_step())
                    # the training clock; the time limit and signals, agreed by every rank
                    self.stopping.tick()
                    # a non-finite loss (on any rank) stops every rank before it is logged or checkpointed
                    if self.log.due(self.step) or self.checkpointer.due(self.step):
                        bad = self.log.non_finite()
                        if bad:
                            status, message = "diverged", f"non-finite {', '.join(bad)} before step {self.step}"
                            break
                    # log, draw samples, evaluate and checkpoint, each when it is due
                    logged = self.log.due(self.step)
                    if logged:
                        last = self._write_log()
                    progress.update(self.step, self.stopping.elapsed, last if logged else None)
                    if self.sampler.due(self.step):
                        self.write_samples()
                    if self.evaluator.due(self.step):
                        evaluation = self.evaluate()
                    if self.checkpointer.due(self.step):
                        self.save()
                    if self.stopping.signal:
                        status = "interrupted"
                        break
            last, evaluation = self._finish(status, last, evaluation)
        ckpt = latest_checkpoint(self.run_dir / "checkpoints") if status == "diverged" else self.checkpointer.saved
        result = RunResult(self.run_dir, status, self.step, self.stopping.elapsed, self._images_per_second(),
                           self.sampler.last, ckpt, last, message, evaluation)
        self.writer.text("summary.md", self.summary(result))
        self.writer.close(status, {**last, **{f"eval/{k}": v for k, v in evaluation.items()}})
        return result

    def _finish(self, status: str, last: dict[str, Any], evaluation: dict[str, float]) -> tuple[dict, dict]:
        """The last step's log line, sample grid and checkpoint (unless the loop just wrote them), and the final
        evaluation of a finished run. A diverged run writes nothing more: its last good checkpoint stays."""
        if status == "diverged":
            return last, evaluation
        if self.log.pending:
            last = self._write_log()
        if self.sampler.last_step != self.step:
            self.write_samples()
        if self.checkpointer.saved_step != self.step:
            self.save()
        if status == "finished" and self.evaluator.metrics:  # every rank: the images are split between them
            done = self.step in self.evaluator.done
            evaluation = self.evaluator.results.get(self.step, {}) if done else self.evaluate()
        return last, evaluation

    def _write_log(self) -> dict[str, Any]:
        lr = {"lr/g": self.opt_g.param_groups[0]["lr"], "lr/d": self.opt_d.param_groups[0]["lr"]}
        return self.log.write(self.step, lr, self.feed.epochs, self.stopping.elapsed)

    def _images_per_second(self) -> float:
        if self.stopping.elapsed <= 0:
            return 0.0
        return self.step * self.t.d_steps * self.t.batch_size / self.stopping.elapsed

    # -- evaluation and samples --------------------------------------------------------------------------------
    def sample_generator(self) -> torch.nn.Module:
        """The network samples and metrics come from: the EMA of G when enabled (once it has averaged), else G."""
        return self.nets.sampling_generator()

    def evaluate(self, *, wait: bool = True) -> dict[str, float]:
        """The configured metrics on the sampling generator (rank 0; with ``wait`` the other ranks wait),
        logged as ``eval/...`` and kept in eval.json."""
        values = self.evaluator.run(self.step, self.sample_generator(), self.encoder, self.device,
                                    autocast=self.precision.autocast, wait=wait)
        if values:
            self.log.evaluation(self.step, values)
            self.writer.text("eval.json", self.evaluator.report(self.step))
        return values

    def write_samples(self) -> Path | None:
        """The fixed-caption, fixed-noise grid of this step (rank 0; ``None`` elsewhere)."""
        return self.sampler.write(self.step, self.sample_generator(), self.encoder, self.device,
                                  self.precision.autocast)

    # -- checkpoints -------------------------------------------------------------------------------------------
    def stateful_parts(self) -> dict[str, Stateful]:
        """Everything a checkpoint holds: the networks (safetensors) and the training state (state.pt)."""
        parts: dict[str, Stateful] = {"generator": self.G, "discriminator": self.D, "text_encoder": self.encoder}
        if self.ema is not None:
            parts.update(generator_ema=self.ema.module, ema=self.ema)
        if self.augment.enabled:  # ADA's p and its running statistics
            parts["augment"] = self.augment
        for name, _, term in self.parts.terms:  # terms that keep state (path_length's running mean pl_mean)
            if getattr(term, "stateful", False):
                parts[f"term_{name}"] = term
        parts.update(opt_g=self.opt_g, opt_d=self.opt_d, sched_g=self.sched_g, sched_d=self.sched_d,
                     scaler=self.precision.scaler, feed=self.feed, stopping=self.stopping, random=self.random)
        return parts

    def save(self) -> Path | None:
        """Write a checkpoint (rank 0) and return its folder; ``None`` on other ranks.

        Every rank must call it at the same step: each contributes its own RNG state (dropout and the like
        differ per rank), so a resumed run continues every rank's stream, not rank 0's everywhere.
        """
        meta = {"t2i_version": __version__, "text_encoder": self.encoder.extra_state(),
                "config": self.resolved.to_dict()}
        return self.checkpointer.save(self.step, self.stateful_parts(), meta)

    def _restore(self) -> None:
        path = self.checkpointer.latest()  # rank 0 picks it, every rank loads that one
        if path is None:
            raise UsageError(f"{self.run_dir} has no checkpoint to resume from (no checkpoints/step_* folder)")
        ckpt = self.checkpointer.load(path, map_location=self.device)
        saved_world = int(ckpt.state["random"]["world_size"])
        if saved_world != self.world_size:
            raise UsageError(
                f"{self.run_dir} was trained on {saved_world} process(es); resume it on {saved_world} "
                f"(this is {self.world_size}): the data position and the random streams depend on the count"
            )
        self.encoder.load_extra_state(ckpt.meta.get("text_encoder", {}))  # e.g. the vocabulary, before the weights
        self.encoder.to(self.device)
        self.checkpointer.restore(ckpt, self.stateful_parts())
        self.step = ckpt.step
        self.writer.forget_after(self.step)  # lines a killed process logged after its last checkpoint
        self.health.resume(read_records(self.run_dir))  # the verdicts so far, and updates from the restored weights
        self.captions = self._caption_table()

    # -- the end -----------------------------------------------------------------------------------------------
    def summary(self, result: RunResult) -> str:
        """The text of summary.md (and health.json written beside it)."""
        facts = RunFacts(
            epochs=self.feed.epochs, train_images=len(self.train_data), device=self.device.type,
            precision=self.precision.described, lr_g=self.lr_g, lr_d=self.lr_d, world_size=self.world_size,
            parameters={"generator": count_parameters(self.G), "discriminator": count_parameters(self.D),
                        "text encoder": count_parameters(self.encoder)},
            encoder_trainable=self.encoder.trainable, terms=[(n, w) for n, w, _ in self.parts.terms],
            warnings=list(self.warnings), peak_memory=peak_memory(self.device),
        )
        return summary_markdown(result, self.resolved, facts, self.write_health(result))

    def write_health(self, result: RunResult) -> list[Verdict]:
        """Close the health diagnosis (a diverged run names the losses and networks that went bad) and write
        every verdict to ``health.json``; return the verdicts."""
        self.health.observe_stop(result.step, result.status, result.message)
        self.writer.text("health.json", self.health.to_json())
        self.writer.verdicts(result.step, self.health.verdicts)
        return self.health.verdicts

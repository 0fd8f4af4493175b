"""The training engine: one D step (or ``d_steps``) and one G step, composed from registered parts.

The step is ``adversarial loss + sum(weight * term)`` for D and for G; what the terms need (mismatched
captions, D on real images during the G step, gradients w.r.t. real images) is declared by the terms and
computed here once, so a new regulariser is a registered term, not a branch in this file.

Reproducibility: the data order of epoch ``e`` is a permutation seeded by ``(seed, e)``; captions and
noise come from one ``torch.Generator`` whose state is checkpointed with everything else, so on CPU a
resumed run ends bit-identical to an uninterrupted one.
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
from ..errors import UsageError
from ..interfaces import CaptionedImages, StepOutputs, TextEncoder
from ..text.cache import cached_embeddings
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .components import Components, build_components
from .evaluate import build_metrics, evaluate
from .grid import caption_grid
from .optim import Precision, make_optimizer, make_scheduler, pick_device, steps_for_epochs
from .progress import Progress
from .writer import RunWriter

__all__ = ["Trainer", "RunResult", "count_parameters", "SAMPLE_ROWS", "SAMPLE_COLUMNS"]

SAMPLE_ROWS = 8  # test captions per grid
SAMPLE_COLUMNS = 8  # fixed noise vectors per caption
_SAMPLE_SEED_OFFSET = 1_000_003


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
        self.device = pick_device(self.t.device)
        self.precision = Precision(self.t.precision, self.device)

        torch.manual_seed(self.t.seed)
        self.parts: Components = build_components(cfg, fit_text=self._fit_text)
        self.metrics = build_metrics(cfg.eval.metrics, cfg.eval.options)
        self.resolved = dataclasses.replace(
            self.parts.resolved, eval=dataclasses.replace(cfg.eval, options={n: o for n, _, o in self.metrics if o})
        )
        self.reference = _load_split(self.parts.dataset, cfg.eval.split, cfg.data.resolution) if self.metrics else None
        self.train_data: CaptionedImages = self._train_split
        self.needs = self.parts.needs

        self.G = self.parts.generator.to(self.device)
        self.D = self.parts.discriminator.to(self.device)
        self.encoder = self.parts.text_encoder.to(self.device)
        if self.t.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.G_params = [p for p in self.G.parameters() if p.requires_grad]
        self.D_params = [p for p in self.D.parameters() if p.requires_grad]
        if self.encoder.trainable:
            self.D_params += [p for p in self.encoder.parameters() if p.requires_grad]
        self.opt_g = make_optimizer(self.G_params, self.t.lr_g, self.t)
        self.opt_d = make_optimizer(self.D_params, self.t.lr_d, self.t)

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
        # EMA of G's parameters; buffers (BN running statistics, counters) are copied, not averaged
        self.ema = (
            AveragedModel(self.G, multi_avg_fn=get_ema_multi_avg_fn(self.t.ema), use_buffers=False)
            if self.t.ema > 0
            else None
        )
        self.G_step = torch.compile(self.G) if self.t.compile else self.G
        self.D_step = torch.compile(self.D) if self.t.compile else self.D

        self.captions = CaptionTable(self.encoder, self.train_data.captions, self.device, self._caption_key())
        self._hooked = [self.G, self.D, self.encoder, self.parts.adversarial, *(t for _, _, t in self.parts.terms)]
        if self.ema is not None:
            self._hooked.append(self.ema.module)
        self.images = self.train_data.images  # uint8 (N, R, R, 3), stays where the data set put it
        self.caption_ids = self.train_data.caption_ids
        self.caption_counts = self.train_data.caption_counts
        self.rng = torch.Generator().manual_seed(self.t.seed)
        self.step = 0
        self.epoch = 0
        self.position = 0  # batches consumed in the current epoch
        self.elapsed = 0.0
        self._perm: torch.Tensor | None = None
        self._stop_signal: str | None = None
        self.t_eval_every = cfg.eval.every
        self._evaluated: dict[int, dict[str, float]] = {}
        self._sample_captions, self._sample_noise = self._fixed_samples()

        self.writer = RunWriter(self.run_dir, enabled=rank == 0, tensorboard=tensorboard)
        if resume:
            self._restore()
        elif rank == 0:
            save_toml(self.resolved, self.run_dir / "config.toml")

    # -- setup -----------------------------------------------------------------------------------------
    def _fit_text(self, encoder: TextEncoder, dataset: Any) -> None:
        self._train_split = _load_split(dataset, self.cfg.data.train_split, self.cfg.data.resolution)
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
            split = _load_split(self.parts.dataset, self.cfg.data.sample_split, self.cfg.data.resolution)
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
        choice = (torch.rand(b, generator=self.rng) * self.caption_counts[idx]).long()
        cid = self.caption_ids[idx, choice]
        real = self.images[idx].to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        if not self.t.channels_last:
            real = real.contiguous()
        real = real.float().div_(127.5).sub_(1.0)
        return real, cid.to(self.device)

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.G.z_dim, generator=self.rng).to(self.device)

    # -- one step ------------------------------------------------------------------------------------------
    def _d_step(self, real: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        mismatched = text.roll(1, 0) if "mismatched" in self.needs else None
        z = self._noise(real.shape[0])
        with torch.no_grad(), self.precision.autocast():
            fake = self.G_step(z, text.detach())
        if "real_grad" in self.needs:
            real = real.detach().requires_grad_(True)
        with self.precision.autocast():
            real_out = self.D_step(real, text, mismatched)
            fake_out = self.D_step(fake, text)
        out = StepOutputs(real_out, fake_out, real, fake, text, self.parts.adversarial, self.D, self.G, self.step)
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
                fake_out = self.D_step(fake, text)
                real_out = None
                if "real_in_g_step" in self.needs:
                    with torch.no_grad():
                        real_out = self.D_step(real, text)
            out = StepOutputs(real_out, fake_out, real, fake, text, self.parts.adversarial, self.D, self.G, self.step)
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
            logs = self._d_step(real, text)
        logs.update(self._g_step(real, text))
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
        progress = Progress(self.total_steps, self.t.minutes, self.step, quiet=self.quiet or self.rank != 0)
        sums: dict[str, torch.Tensor] = {}
        window_start, window_steps = time.perf_counter(), 0
        start_elapsed, loop_start = self.elapsed, time.perf_counter()
        status, message, last, samples_path, ckpt, evaluation = "finished", "", {}, None, None, {}
        try:
            with progress:
                while not self._done():
                    logs = self.train_step()
                    for k, v in logs.items():
                        sums[k] = sums[k] + v if k in sums else v.clone()
                    window_steps += 1
                    self.elapsed = start_elapsed + time.perf_counter() - loop_start
                    at_log = self.step % self.t.log_every == 0
                    at_ckpt = self.t.checkpoint_every and self.step % self.t.checkpoint_every == 0
                    if at_log or at_ckpt:
                        if not bool(torch.stack(list(sums.values())).isfinite().all()):  # one device sync
                            status = "diverged"
                            bad = sorted(k for k, v in sums.items() if not torch.isfinite(v))
                            message = f"non-finite {', '.join(bad)} before step {self.step}"
                            break
                    if at_log:
                        now = time.perf_counter()
                        last = self._log(sums, window_steps, now - window_start)
                        progress.update(self.step, self.elapsed, last)
                        sums, window_start, window_steps = {}, now, 0
                    else:
                        progress.update(self.step, self.elapsed, None)
                    if self.t.sample_every and self.step % self.t.sample_every == 0:
                        samples_path = self.write_samples()
                    if self.t_eval_every and self.step % self.t_eval_every == 0:
                        evaluation = self.evaluate()
                    if at_ckpt:
                        ckpt = self.save()
                    if self._stop_signal:
                        status = "interrupted"
                        break
            if status != "diverged":
                if window_steps:
                    last = self._log(sums, window_steps, time.perf_counter() - window_start)
                if samples_path is None or f"{self.step:08d}" not in samples_path.name:
                    samples_path = self.write_samples()
                if ckpt is None or self.step != _ckpt_step(ckpt):
                    ckpt = self.save()
                if status == "finished" and self.metrics:
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
        return self.t.minutes is not None and self.elapsed >= self.t.minutes * 60

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal:  # a second Ctrl-C: stop now, without saving
            raise KeyboardInterrupt
        self._stop_signal = signal.Signals(signum).name

    def _log(self, sums: dict[str, torch.Tensor], steps: int, seconds: float) -> dict[str, float]:
        record = {k: float(v) / steps for k, v in sums.items()}
        record["lr/g"] = self.opt_g.param_groups[0]["lr"]
        record["lr/d"] = self.opt_d.param_groups[0]["lr"]
        record["img_per_s"] = steps * self.t.d_steps * self.t.batch_size * self.world_size / max(seconds, 1e-9)
        record["epoch"] = self.epoch + self.position / self.batches_per_epoch
        record["elapsed_s"] = self.elapsed
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
        self.writer.log(self.step, {f"eval/{k}": v for k, v in values.items()})
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
        return weights

    def save(self) -> Path | None:
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
            "torch_rng": torch.get_rng_state(),
            **({"cuda_rng": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {}),
        }
        meta = {"t2i_version": __version__, "text_encoder": self.encoder.extra_state(), "config": self.resolved.to_dict()}
        return save_checkpoint(self.run_dir / "checkpoints", self.step, self.state_dicts(), state, meta, keep=self.t.keep_checkpoints)

    def _restore(self) -> None:
        path = latest_checkpoint(self.run_dir / "checkpoints")
        if path is None:
            raise UsageError(f"{self.run_dir} has no checkpoint to resume from (no checkpoints/step_* folder)")
        ckpt = load_checkpoint(path, map_location=self.device)
        self.encoder.load_extra_state(ckpt.meta.get("text_encoder", {}))
        self.encoder.to(self.device)
        self.G.load_state_dict(ckpt.weights["generator"])
        self.D.load_state_dict(ckpt.weights["discriminator"])
        self.encoder.load_state_dict(ckpt.weights["text_encoder"])
        if self.ema is not None and "generator_ema" in ckpt.weights:
            self.ema.module.load_state_dict(ckpt.weights["generator_ema"])
            self.ema.n_averaged.copy_(ckpt.state["ema_n_averaged"])
        s = ckpt.state
        self.opt_g.load_state_dict(s["opt_g"])
        self.opt_d.load_state_dict(s["opt_d"])
        self.sched_g.load_state_dict(s["sched_g"])
        self.sched_d.load_state_dict(s["sched_d"])
        self.precision.scaler.load_state_dict(s["scaler"])
        self.rng.set_state(s["rng"].cpu())
        torch.set_rng_state(s["torch_rng"].cpu())
        if "cuda_rng" in s and self.device.type == "cuda":
            torch.cuda.set_rng_state(s["cuda_rng"].cpu(), self.device)
        self.step, self.epoch, self.position = int(s["step"]), int(s["epoch"]), int(s["position"])
        self.elapsed = float(s["elapsed"])
        self.writer.forget_after(self.step)  # lines a killed process logged after its last checkpoint
        self.captions = CaptionTable(self.encoder, self.train_data.captions, self.device, self._caption_key())

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
        if result.samples is not None:
            rel = Path(result.samples).relative_to(self.run_dir)
            lines += ["## Samples", "", f"Fixed noise (columns) x fixed {r.data.sample_split} captions (rows):", "", f"![samples]({rel})", ""]
        if result.checkpoint is not None:
            lines += [f"Checkpoint: `{Path(result.checkpoint).relative_to(self.run_dir)}`; resume with "
                      f"`t2i run --resume {self.run_dir}`.", ""]
        return "\n".join(lines)


_SUBSETS = ("seen", "unseen", "real")  # metric keys ending in these are columns of their base key


def evaluation_table(values: dict[str, float]) -> list[str]:
    """Markdown rows: one per metric key, with ``/seen``, ``/unseen`` and ``/real`` (the ceiling) as columns."""
    rows: dict[str, dict[str, float]] = {}
    for key, value in values.items():
        base, _, last = key.rpartition("/")
        if base and last in _SUBSETS:
            rows.setdefault(base, {})[last] = value
        else:
            rows.setdefault(key, {})["all"] = value
    columns = [c for c in ("all", *_SUBSETS) if any(c in r for r in rows.values())]
    header = {"all": "value", "seen": "seen combinations", "unseen": "held-out combinations", "real": "real images (ceiling)"}
    out = ["| metric | " + " | ".join(header[c] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for key, row in rows.items():
        out.append(f"| {key} | " + " | ".join(f"{row[c]:.3f}" if c in row else "" for c in columns) + " |")
    return out


def count_parameters(module: torch.nn.Module) -> int:
    """Number of scalars in ``module``'s parameters (spectral norm's ``original`` counted once)."""
    return sum(p.numel() for p in module.parameters())


def _load_split(dataset: Any, split: str, resolution: int) -> CaptionedImages:
    if split not in dataset.splits:
        raise UsageError(f"data set has no split '{split}'; splits: {', '.join(dataset.splits)}")
    return dataset.load(split, resolution)


def _ckpt_step(path: Path) -> int:
    return int(path.name.split("_")[-1])


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

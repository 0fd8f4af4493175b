"""Training-health diagnosis: name what is going wrong in a GAN run, with evidence and a suggestion.

A :class:`HealthMonitor` is fed every record a run logs (``observe(step, record)``: the lines of
``metrics.jsonl``, ``eval/...`` values included) and keeps a list of :class:`Verdict` objects. A condition
that persists over consecutive records is one verdict whose step range grows; one that goes away and
comes back is a new verdict. A verdict that went away says when (``cleared_at``: the first record, or
evaluation of its metric, at which it no longer held), so a run's summary tells a problem that still holds
at the end from one that cleared. :func:`diagnose` replays a whole ``metrics.jsonl`` for a report.

What is detected, and the thresholds: :mod:`t2i.engine.verdicts`; the conditions themselves:
:mod:`t2i.engine.health_rules`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from .health_rules import Finding, chaos_findings, collapse_findings, finite, stall_findings, window_findings
from .verdicts import (
    CHAOS_WINDOW, EXPLODE_LIMIT, MAX_TRACKED_PARAMETERS, SEVERITIES, STALL_EVALS, SUGGESTIONS, WINDOW, Verdict,
    describe_key, verdict_lines,
)

# the thresholds and the rest of the health vocabulary are in t2i.engine.verdicts
__all__ = ["HealthMonitor", "diagnose", "read_records", "read_health", "Verdict", "verdict_lines", "SEVERITIES"]

_LOSS = re.compile(r"^[dg]/")
_DIVERGED_KEYS = re.compile(r"\b[dg]/[\w.\-]+")


class HealthMonitor:
    """Watches a run's logged records (and optionally its networks) and keeps named :class:`Verdict` s.

    ``networks`` (name -> module, e.g. ``{"generator": G, "discriminator": D}``) lets
    :meth:`network_health` log how far each network's weights moved since the previous call
    (``health/<g|d>_update``) and catch non-finite weights.
    """

    def __init__(self, networks: Mapping[str, torch.nn.Module] | None = None, *, window: int = WINDOW,
                 chaos_window: int = CHAOS_WINDOW, replay: Iterable[Mapping[str, Any]] = ()):
        self.networks = dict(networks or {})
        self.window = window
        self.chaos_window = chaos_window
        self.verdicts: list[Verdict] = []
        self.history: list[tuple[int, dict[str, Any]]] = []  # training records (no eval values)
        self.evals: list[tuple[int, dict[str, float]]] = []
        self._open: dict[tuple[str, str], Verdict] = {}  # (code, key) -> the latest verdict of each
        self._streams: dict[tuple[str, str], str] = {}  # (code, key) -> "train" or "eval": what checks it again
        self._snapshots: dict[str, list[torch.Tensor]] = {}
        self._train_steps: list[int] = []
        self._eval_steps: list[int] = []
        self._last_step: int | None = None
        self.resume(replay)

    def resume(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Take what a run logged before a restart (``records``, the lines of its metrics.jsonl), and measure
        the next update of each watched network from its weights as they are now (restored)."""
        for name, module in self.networks.items():
            self._snapshot(name, [p.detach() for p in module.parameters()])
        for record in records:
            self.observe(int(record.get("step", 0)), record)

    # -- feeding -----------------------------------------------------------------------------------------
    def observe(self, step: int, record: Mapping[str, Any]) -> list[Verdict]:
        """Take one logged record; return the verdicts that hold at ``step``. ``eval/...`` keys are
        passed to :meth:`observe_eval`; other keys are training values."""
        evals = {k[len("eval/"):]: v for k, v in record.items() if k.startswith("eval/")}
        train = {k: v for k, v in record.items() if not k.startswith("eval/") and k != "step"}
        found: list[Verdict] = []
        if any(k.startswith(("d/", "g/")) for k in train):
            self.history.append((step, train))
            found += self._check_training(step, train)
        if evals:
            found += self._check_eval(step, evals)
        return found

    def observe_eval(self, step: int, values: Mapping[str, float]) -> list[Verdict]:
        """Take the metric values of one evaluation (keys without the ``eval/`` prefix)."""
        return self._check_eval(step, dict(values))

    def network_health(self, step: int) -> dict[str, float]:
        """``health/<x>_update``: relative change of each watched network's weights since the last call
        (``||w - w_prev|| / ||w_prev||``), and a ``non_finite`` verdict for networks whose weights are not finite."""
        out: dict[str, float] = {}
        for name, module in self.networks.items():
            params = [p.detach() for p in module.parameters()]
            if not params:
                continue
            finite = bool(torch.stack([p.isfinite().all() for p in params]).all())
            if not finite:
                bad = [n for n, p in module.named_parameters() if not bool(p.detach().isfinite().all())]
                self._nonfinite_weights(step, name, bad)
            previous = self._snapshots.get(name)
            if previous is not None and finite:
                diff = torch.stack([(p.float() - q).pow(2).sum() for p, q in zip(params, previous)]).sum().sqrt()
                norm = torch.stack([q.pow(2).sum() for q in previous]).sum().sqrt()
                out[f"health/{name[0]}_update"] = float(diff / norm.clamp_min(1e-12))
            self._snapshot(name, params)
        return out

    def _snapshot(self, name: str, params: list[torch.Tensor]) -> None:
        """Keep a copy of a network's weights to measure the next update (not for networks above
        :data:`MAX_TRACKED_PARAMETERS`, where the copy would cost too much memory)."""
        if params and sum(p.numel() for p in params) <= MAX_TRACKED_PARAMETERS:
            self._snapshots[name] = [p.float().clone() for p in params]

    def observe_stop(self, step: int, status: str, message: str = "") -> list[Verdict]:
        """Tell the monitor how the run ended; a ``diverged`` run becomes a ``non_finite`` verdict naming the
        loss terms in ``message`` (``"non-finite g/feature_matching before step 40"``) and every network
        whose weights went non-finite."""
        if status != "diverged":
            return []
        keys = sorted(set(_DIVERGED_KEYS.findall(message)))
        self._seen(step, "train")
        self.network_health(step)  # names networks whose weights are no longer finite
        if keys or not any(v.code == "non_finite" for v in self.verdicts):
            what = ", ".join(describe_key(k) for k in keys) or message or "a non-finite value"
            self._raise("non_finite", "error", step, f"training diverged: non-finite {what}",
                        {"keys": keys, "message": message}, key="losses")
        return self.current()

    # -- queries -----------------------------------------------------------------------------------------
    def current(self) -> list[Verdict]:
        """Verdicts that still held at the latest observed step."""
        if self._last_step is None:
            return []
        return [v for v in self.verdicts if v.last_step == self._last_step]

    def to_json(self) -> str:
        return json.dumps([v.to_dict() for v in self.verdicts], indent=2) + "\n"

    # -- detection ---------------------------------------------------------------------------------------
    def _raise(self, code: str, severity: str, step: int, message: str, evidence: dict[str, Any],
               *, key: str = "", first_step: int | None = None, stream: str = "train") -> Verdict:
        """Open a verdict, or extend the one of the same ``(code, key)`` if it held at the previous record of
        its ``stream`` (``"train"`` records or ``"eval"`` evaluations) or if the evidence window of this one
        (from ``first_step``) overlaps it: one stretch of trouble is one verdict, not one per window."""
        steps = self._eval_steps if stream == "eval" else self._train_steps
        previous = max((s for s in steps if s < step), default=None)
        open_one = self._open.get((code, key))
        continues = open_one is not None and (
            open_one.last_step in (step, previous) or (first_step is not None and first_step <= open_one.last_step))
        if continues and open_one.severity == severity:
            open_one.last_step, open_one.message, open_one.evidence = step, message, evidence
            open_one.cleared_at = None  # an evidence window that overlaps it: the same stretch of trouble
            verdict = open_one
        else:
            if open_one is not None and open_one.cleared_at is None and open_one.last_step < step:
                open_one.cleared_at = step  # replaced by one of another severity
            verdict = Verdict(code, severity, first_step if first_step is not None else step, step, message,
                              evidence, SUGGESTIONS[code], key)
            self.verdicts.append(verdict)
            self._open[(code, key)] = verdict
        self._streams[(code, key)] = stream
        return verdict

    def _clear(self, step: int, stream: str, found: list[Verdict], checked: Iterable[str] | None = None) -> None:
        """Mark the verdicts of ``stream`` that were checked at ``step`` and no longer hold as cleared there.
        ``checked``: for evaluations, the metric keys evaluated (a verdict about another metric was not
        checked again)."""
        keys = None if checked is None else set(checked)
        for (code, key), verdict in self._open.items():
            if (self._streams.get((code, key)) != stream or verdict.cleared_at is not None
                    or verdict.last_step >= step or any(v is verdict for v in found)):
                continue
            if keys is not None and key not in keys:
                continue
            verdict.cleared_at = step

    def _seen(self, step: int, stream: str) -> None:
        steps = self._eval_steps if stream == "eval" else self._train_steps
        if not steps or steps[-1] != step:
            steps.append(step)
        self._last_step = step if self._last_step is None else max(self._last_step, step)

    def _check_training(self, step: int, record: dict[str, Any]) -> list[Verdict]:
        self._seen(step, "train")
        found: list[Verdict] = []
        bad = sorted(k for k, v in record.items() if (_LOSS.match(k) or k.startswith("lr/")) and not finite(v))
        if bad:
            what = ", ".join(describe_key(k) for k in bad)
            found.append(self._raise("non_finite", "error", step, f"non-finite {what}", {"keys": bad}, key="losses"))
        huge = {k: v for k, v in record.items() if _LOSS.match(k) and finite(v) and abs(v) > EXPLODE_LIMIT}
        if huge:
            worst = max(huge, key=lambda k: abs(huge[k]))
            found.append(self._raise("loss_explosion", "error", step,
                                     f"{worst} = {huge[worst]:.3g} (|value| > {EXPLODE_LIMIT:g}): the losses exploded",
                                     {k: v for k, v in sorted(huge.items())}))
        window = [r for _, r in self.history[-self.window:]]
        first = self.history[-self.window][0] if len(self.history) >= self.window else step
        if len(window) == self.window:
            found += self._emit(step, window_findings(window, first))
        chaos = [r.get("g/total") for _, r in self.history[-self.chaos_window:]]
        if len(chaos) == self.chaos_window and all(finite(v) for v in chaos):
            found += self._emit(step, chaos_findings(chaos, self.history[-self.chaos_window][0]))
        self._clear(step, "train", found)
        return found

    def _emit(self, step: int, findings: list[Finding], stream: str = "train") -> list[Verdict]:
        return [self._raise(f.code, f.severity, step, f.message, f.evidence, key=f.key, first_step=f.first_step,
                            stream=stream) for f in findings]

    def _check_eval(self, step: int, values: dict[str, Any]) -> list[Verdict]:
        values = {k: v for k, v in values.items() if finite(v)}
        if not values:
            return []
        if not self.evals or self.evals[-1][0] != step:
            self.evals.append((step, values))
        else:
            self.evals[-1][1].update(values)
        self._seen(step, "eval")
        findings = collapse_findings(values) + stall_findings(self.evals[-STALL_EVALS:], list(values))
        found = self._emit(step, findings, stream="eval")
        self._clear(step, "eval", found, checked=values)
        return found

    def _nonfinite_weights(self, step: int, network: str, parameters: list[str]) -> None:
        self._seen(step, "train")
        shown = ", ".join(parameters[:3]) + (f" and {len(parameters) - 3} more" if len(parameters) > 3 else "")
        self._raise("non_finite", "error", step, f"the {network}'s weights are non-finite ({shown})",
                    {"network": network, "parameters": parameters}, key=network)


def diagnose(records: Iterable[Mapping[str, Any]], *, window: int = WINDOW, chaos_window: int = CHAOS_WINDOW) -> list[Verdict]:
    """Replay the records of a ``metrics.jsonl`` (each with a ``step``) through a :class:`HealthMonitor`."""
    monitor = HealthMonitor(window=window, chaos_window=chaos_window)
    for record in records:
        monitor.observe(int(record.get("step", 0)), record)
    return monitor.verdicts


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a run folder or the file); ``[]`` when there is none."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    if not p.is_file():
        return []
    out = []
    for line in p.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a killed process
                continue
    return out


def read_health(run_dir: str | Path) -> list[Verdict]:
    """A run's verdicts: its ``health.json`` when the trainer wrote one, else a diagnosis of its metrics.jsonl."""
    path = Path(run_dir) / "health.json"
    if path.is_file():
        try:
            return [Verdict.from_dict(v) for v in json.loads(path.read_text())]
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    return diagnose(read_records(run_dir))

"""Training-health diagnosis: name what is going wrong in a GAN run, with evidence and a suggestion.

A :class:`HealthMonitor` is fed every record a run logs (``observe(step, record)``: the lines of
``metrics.jsonl``, ``eval/...`` values included) and keeps a list of :class:`Verdict` objects. A condition
that persists over consecutive records is one verdict whose step range grows; one that goes away and
comes back is a new verdict. :func:`diagnose` replays a whole ``metrics.jsonl`` for a report.

What is detected, and the thresholds (module constants, chosen so that a healthy run of the default
recipe raises none of the errors; records are the *logged averages*, ``train.log_every`` steps each):

=================  ========  ==================================================================================
code               severity  condition
=================  ========  ==================================================================================
non_finite         error     a ``d/``, ``g/`` or ``lr/`` value is NaN/inf (``null`` in metrics.jsonl), or a
                             network's weights are; the trainer stops, keeps the last good checkpoint, and the
                             verdict names the loss terms and the networks that went bad
loss_explosion     error     ``|value|`` of a loss or mean logit above :data:`EXPLODE_LIMIT` (1e4)
d_loss_stuck       error     ``d/total`` varies by at most :data:`STUCK_TOLERANCE` x max(1, ``|mean|``) over
                             :data:`WINDOW` records while ``lr/d > 0`` (the seed's "D loss stuck at 1.0064")
d_not_learning     error     D's parameters change by less than :data:`FROZEN_UPDATE` (relative norm,
                             ``health/d_update``) over :data:`WINDOW` records while ``lr/d > 0``
g_not_learning     error     the same for the generator (``health/g_update``)
d_wins             warning   for :data:`WINDOW` records D beats G outright: ``d/adv <=`` :data:`D_WIN_LOSS`, or
                             mean real minus fake logit ``>=`` :data:`D_WIN_GAP` (D accuracy ~1 on both), or
                             ``g/adv >=`` :data:`G_LOSS_HIGH` while ``d/adv`` is below chance (< 2)
d_collapsed       warning   for :data:`WINDOW` records D gives real and fake images the same mean logit
                             (``|real - fake| <=`` :data:`D_COLLAPSE_GAP`): it no longer tells them apart
g_chaotic          warning   over :data:`CHAOS_WINDOW` records ``g/total`` has a high spread
                             (std / max(1, ``|mean|``) ``>=`` :data:`CHAOS_CV`) and no trend (R^2 of a linear fit
                             ``<`` :data:`CHAOS_R2`; lag-1 autocorrelation ``<`` :data:`CHAOS_AUTOCORR`)
mode_collapse      error     an ``eval/.../collapse_score`` (metric ``diversity``) below :data:`COLLAPSE_ERROR`
                   warning   ... or below :data:`COLLAPSE_WARNING`
metric_stalled     info      an ``eval/...`` value moved by at most :data:`STALL_TOLERANCE` (relative) over the last
                             :data:`STALL_EVALS` evaluations (values of real images, the ceilings, are skipped)
=================  ========  ==================================================================================

The suggestions are the standard remedies from the literature: TTUR (Heusel et al. 2017) and a slower D,
spectral norm (Miyato et al. 2018), R1 (Mescheder et al. 2018), feature matching and minibatch
discrimination (Salimans et al. 2016), gradient clipping and lower learning rates.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

__all__ = [
    "Verdict",
    "HealthMonitor",
    "diagnose",
    "read_records",
    "read_health",
    "verdict_lines",
    "SEVERITIES",
    "WINDOW",
    "EXPLODE_LIMIT",
    "STUCK_TOLERANCE",
    "FROZEN_UPDATE",
    "D_WIN_LOSS",
    "D_WIN_GAP",
    "G_LOSS_HIGH",
    "D_COLLAPSE_GAP",
    "CHAOS_WINDOW",
    "CHAOS_CV",
    "CHAOS_R2",
    "CHAOS_AUTOCORR",
    "COLLAPSE_ERROR",
    "COLLAPSE_WARNING",
    "STALL_EVALS",
    "STALL_TOLERANCE",
]

SEVERITIES = ("info", "warning", "error")

WINDOW = 6  # logged records a persistent condition must last before it is a verdict
EXPLODE_LIMIT = 1e4  # a loss or mean logit this large has left every sane range
STUCK_TOLERANCE = 1e-4  # relative spread of d/total under which D's loss counts as constant
FROZEN_UPDATE = 1e-7  # relative parameter change per logging interval under which a network is frozen
D_WIN_LOSS = 0.05  # D's adversarial loss this close to 0: it classifies every image right
D_WIN_GAP = 6.0  # real minus fake mean logit: sigmoid(3) = 0.95 on each side, D accuracy ~1
G_LOSS_HIGH = 10.0  # G's adversarial loss this high: D rejects fakes with certainty (e^-10)
D_CHANCE = 2.0  # D's adversarial loss at chance is 2 ln 2 = 1.39 (BCE), 2 (hinge), 0.5 (LSGAN): below 2 = better than chance
D_COLLAPSE_GAP = 0.05  # real and fake mean logits this close: D no longer separates them
CHAOS_WINDOW = 10  # records of g/total looked at for chaos
CHAOS_CV = 0.15  # std / max(1, |mean|) at or above which G's loss is called high-variance
CHAOS_R2 = 0.2  # a linear trend explaining less of the variance than this is no trend
CHAOS_AUTOCORR = 0.3  # consecutive values this uncorrelated jump around rather than drift
COLLAPSE_ERROR = 0.25  # diversity/collapse_score below this: captions give (nearly) the same image
COLLAPSE_WARNING = 0.5
STALL_EVALS = 3  # evaluations an eval value must stay flat over
STALL_TOLERANCE = 0.005  # relative spread of an eval value that counts as flat
MAX_TRACKED_PARAMETERS = 200_000_000  # networks larger than this get no health/<x>_update (a copy costs memory)

SUGGESTIONS = {
    "non_finite": "lower the learning rates or set train.grad_clip=1.0, prefer bf16/fp32 over fp16, and resume "
                  "from the last good checkpoint",
    "loss_explosion": "the learning rates are far too high for these networks: lower them (2e-4 is the usual "
                      "start), clip gradients (train.grad_clip=1.0) and add spectral norm to D",
    "d_loss_stuck": "D has stopped learning (the seed's 1.0064): check lr/d and its schedule, use a TTUR ratio "
                    "nearer 1:1 or 1:2, lower the feature-matching weight, or switch to the hinge loss",
    "d_not_learning": "D gets no gradient or no step: check that lr/d is not tiny and its parameters require grad; "
                      "after a loss explosion its units saturate (lower the learning rates)",
    "g_not_learning": "G gets no gradient or no step: after a loss explosion its tanh/BN units saturate (lower the "
                      "learning rates, clip gradients); else check lr/g and that its parameters require grad",
    "d_wins": "D wins outright and G gets no useful gradient: lower the D learning rate (TTUR, e.g. lr_d = lr_g / 2), "
              "add spectral norm or an R1 penalty to D, or use fewer D steps",
    "d_collapsed": "D no longer separates real from fake: raise its learning rate or capacity, remove heavy "
                   "regularisation (large R1 / gradient-penalty weights), or check its inputs",
    "g_chaotic": "G's loss oscillates without converging: lower both learning rates, balance G and D (TTUR), "
                 "add spectral norm to D, or reduce the feature-matching weight",
    "mode_collapse": "captions give (nearly) the same image: add minibatch discrimination (progressive's mbstd), "
                     "use the matching-aware term, feature matching at a small weight, or lower lr_g",
    "metric_stalled": "the metric has stopped improving: stop here, or change the recipe rather than train longer",
}

_LOSS = re.compile(r"^[dg]/")
_DIVERGED_KEYS = re.compile(r"\b[dg]/[\w.\-]+")
_REAL_KEYS = re.compile(r"(^|/)real(_|/|$)|/real$")


@dataclass
class Verdict:
    """One named problem: what (``code``, ``message``), how bad, when (``first_step``-``last_step``), the
    numbers that show it (``evidence``) and what to try (``suggestion``)."""

    code: str
    severity: str
    first_step: int
    last_step: int
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    suggestion: str = ""
    key: str = ""  # what the verdict is about (a metric key, a network), so two of one code stay apart

    def line(self) -> str:
        """``[error] d_loss_stuck (steps 200-1200): <message>; try: <suggestion>``."""
        steps = f"step {self.first_step}" if self.first_step == self.last_step else f"steps {self.first_step}-{self.last_step}"
        return f"[{self.severity}] {self.code} ({steps}): {self.message}; try: {self.suggestion}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Verdict":
        return cls(**{k: data[k] for k in ("code", "severity", "first_step", "last_step", "message")},
                   evidence=dict(data.get("evidence", {})), suggestion=data.get("suggestion", ""), key=data.get("key", ""))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _stats(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def _trend_r2(values: list[float]) -> float:
    """R^2 of the least-squares line through ``values`` against their index (0: no trend, 1: a line)."""
    n = len(values)
    xs = range(n)
    mx, my = (n - 1) / 2, sum(values) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in values)
    if syy == 0 or sxx == 0:
        return 0.0
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, values))
    return sxy * sxy / (sxx * syy)


def _autocorr(values: list[float]) -> float:
    """Lag-1 autocorrelation (1: smooth drift, ~0: independent jumps, < 0: zig-zag)."""
    mean, std = _stats(values)
    if std == 0:
        return 1.0
    n = len(values)
    return sum((values[i] - mean) * (values[i + 1] - mean) for i in range(n - 1)) / (n * std * std)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


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
        self._open: dict[tuple[str, str], Verdict] = {}  # (code, key) -> verdict still going on
        self._snapshots: dict[str, list[torch.Tensor]] = {}
        self._train_steps: list[int] = []
        self._eval_steps: list[int] = []
        self._last_step: int | None = None
        for name, module in self.networks.items():
            self._snapshot(name, [p.detach() for p in module.parameters()])
        for record in replay:  # a resumed run: what was logged before the restart
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
            what = ", ".join(_describe_key(k) for k in keys) or message or "a non-finite value"
            self._raise("non_finite", "error", step, f"training diverged: non-finite {what}",
                        {"keys": keys, "message": message}, key="losses")
        return self.current()

    # -- queries -----------------------------------------------------------------------------------------
    def current(self) -> list[Verdict]:
        """Verdicts that still held at the latest observed step."""
        if self._last_step is None:
            return []
        return [v for v in self.verdicts if v.last_step == self._last_step]

    def worst(self) -> str:
        """The most severe severity among the verdicts, or ``"ok"``."""
        levels = [SEVERITIES.index(v.severity) for v in self.verdicts]
        return SEVERITIES[max(levels)] if levels else "ok"

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
            verdict = open_one
        else:
            verdict = Verdict(code, severity, first_step if first_step is not None else step, step, message,
                              evidence, SUGGESTIONS[code], key)
            self.verdicts.append(verdict)
            self._open[(code, key)] = verdict
        return verdict

    def _seen(self, step: int, stream: str) -> None:
        steps = self._eval_steps if stream == "eval" else self._train_steps
        if not steps or steps[-1] != step:
            steps.append(step)
        self._last_step = step if self._last_step is None else max(self._last_step, step)

    def _check_training(self, step: int, record: dict[str, Any]) -> list[Verdict]:
        self._seen(step, "train")
        found: list[Verdict] = []
        bad = sorted(k for k, v in record.items() if (_LOSS.match(k) or k.startswith("lr/")) and not _finite(v))
        if bad:
            what = ", ".join(_describe_key(k) for k in bad)
            found.append(self._raise("non_finite", "error", step, f"non-finite {what}", {"keys": bad}, key="losses"))
        huge = {k: v for k, v in record.items() if _LOSS.match(k) and _finite(v) and abs(v) > EXPLODE_LIMIT}
        if huge:
            worst = max(huge, key=lambda k: abs(huge[k]))
            found.append(self._raise("loss_explosion", "error", step,
                                     f"{worst} = {huge[worst]:.3g} (|value| > {EXPLODE_LIMIT:g}): the losses exploded",
                                     {k: v for k, v in sorted(huge.items())}))
        window = [r for _, r in self.history[-self.window:]]
        first = self.history[-self.window][0] if len(self.history) >= self.window else step
        if len(window) == self.window:
            found += self._check_window(step, first, window)
        chaos = [r.get("g/total") for _, r in self.history[-self.chaos_window:]]
        if len(chaos) == self.chaos_window and all(_finite(v) for v in chaos):
            found += self._check_chaos(step, self.history[-self.chaos_window][0], chaos)
        return found

    def _check_window(self, step: int, first: int, window: list[dict[str, Any]]) -> list[Verdict]:
        found: list[Verdict] = []
        lr_d = [r.get("lr/d", 1.0) for r in window]
        lr_g = [r.get("lr/g", 1.0) for r in window]
        d_learning = all(_finite(v) and v > 0 for v in lr_d)
        d_total = [r.get("d/total") for r in window]
        if d_learning and all(_finite(v) for v in d_total):
            mean, _ = _stats(d_total)
            spread = max(d_total) - min(d_total)
            if spread <= STUCK_TOLERANCE * max(1.0, abs(mean)):
                found.append(self._raise(
                    "d_loss_stuck", "error", step,
                    f"d/total stuck at {_fmt(mean)} (spread {spread:.2g} over {len(window)} records) while lr/d = {_fmt(lr_d[-1])}",
                    {"d/total": mean, "spread": spread, "records": len(window), "lr/d": lr_d[-1]}, first_step=first))
        for net, lrs in (("d", lr_d), ("g", lr_g)):
            updates = [r.get(f"health/{net}_update") for r in window]
            if all(_finite(u) for u in updates) and all(_finite(v) and v > 0 for v in lrs) and max(updates) < FROZEN_UPDATE:
                name = {"d": "discriminator", "g": "generator"}[net]
                found.append(self._raise(
                    f"{net}_not_learning", "error", step,
                    f"the {name}'s weights moved by at most {max(updates):.2g} (relative) per logging interval over "
                    f"{len(window)} records while lr/{net} = {_fmt(lrs[-1])}",
                    {f"health/{net}_update": max(updates), f"lr/{net}": lrs[-1]}, first_step=first))
        adv_d = [r.get("d/adv") for r in window]
        adv_g = [r.get("g/adv") for r in window]
        real = [r.get("d/real_logit") for r in window]
        fake = [r.get("d/fake_logit") for r in window]
        has_logits = all(_finite(v) for v in real + fake)
        gaps = [a - b for a, b in zip(real, fake)] if has_logits else []
        if all(_finite(v) for v in adv_d):
            def winning(i: int) -> bool:
                if adv_d[i] <= D_WIN_LOSS or (gaps and gaps[i] >= D_WIN_GAP):
                    return True
                return _finite(adv_g[i]) and adv_g[i] >= G_LOSS_HIGH and adv_d[i] < D_CHANCE

            if all(winning(i) for i in range(len(window))):
                evidence: dict[str, Any] = {"d/adv": _stats(adv_d)[0]}
                if gaps:
                    evidence["real_minus_fake_logit"] = _stats(gaps)[0]
                if all(_finite(v) for v in adv_g):
                    evidence["g/adv_first"], evidence["g/adv_last"] = adv_g[0], adv_g[-1]
                detail = ", ".join(f"{k} {_fmt(v)}" for k, v in evidence.items())
                found.append(self._raise("d_wins", "warning", step, f"D beats G outright ({detail}; last {len(window)} records)",
                                         evidence, first_step=first))
        if gaps and max(abs(g) for g in gaps) <= D_COLLAPSE_GAP:
            found.append(self._raise(
                "d_collapsed", "warning", step,
                f"D gives real and fake images the same mean logit (|real - fake| <= {max(abs(g) for g in gaps):.2g} "
                f"over {len(window)} records; real {_fmt(real[-1])}, fake {_fmt(fake[-1])})",
                {"max_abs_gap": max(abs(g) for g in gaps), "d/real_logit": real[-1], "d/fake_logit": fake[-1]},
                first_step=first))
        return found

    def _check_chaos(self, step: int, first: int, values: list[float]) -> list[Verdict]:
        mean, std = _stats(values)
        cv = std / max(1.0, abs(mean))
        r2, ac = _trend_r2(values), _autocorr(values)
        if cv >= CHAOS_CV and r2 < CHAOS_R2 and ac < CHAOS_AUTOCORR:
            return [self._raise(
                "g_chaotic", "warning", step,
                f"g/total jumps between {_fmt(min(values))} and {_fmt(max(values))} without a trend "
                f"(std/mean {cv:.2f}, trend R^2 {r2:.2f}, lag-1 autocorrelation {ac:.2f} over {len(values)} records)",
                {"g/total_min": min(values), "g/total_max": max(values), "cv": cv, "trend_r2": r2, "autocorr": ac},
                first_step=first)]
        return []

    def _check_eval(self, step: int, values: dict[str, Any]) -> list[Verdict]:
        values = {k: v for k, v in values.items() if _finite(v)}
        if not values:
            return []
        if not self.evals or self.evals[-1][0] != step:
            self.evals.append((step, values))
        else:
            self.evals[-1][1].update(values)
        self._seen(step, "eval")
        found: list[Verdict] = []
        for key, value in values.items():
            if key.endswith("collapse_score") and value < COLLAPSE_WARNING:
                severity = "error" if value < COLLAPSE_ERROR else "warning"
                found.append(self._raise(
                    "mode_collapse", severity, step,
                    f"eval/{key} = {value:.3f} (< {COLLAPSE_ERROR if severity == 'error' else COLLAPSE_WARNING}): "
                    f"images of different captions are nearly identical",
                    {f"eval/{key}": value}, key=key, stream="eval"))
        if len(self.evals) >= STALL_EVALS:
            recent = self.evals[-STALL_EVALS:]
            for key in values:
                if _REAL_KEYS.search(key):
                    continue
                series = [v.get(key) for _, v in recent]
                if all(_finite(v) for v in series):
                    mean, _ = _stats(series)
                    spread = max(series) - min(series)
                    if spread <= STALL_TOLERANCE * max(abs(mean), 1e-3):
                        found.append(self._raise(
                            "metric_stalled", "info", step,
                            f"eval/{key} stayed at {_fmt(mean)} over the last {STALL_EVALS} evaluations "
                            f"(steps {recent[0][0]}-{recent[-1][0]})",
                            {f"eval/{key}": mean, "spread": spread}, key=key, first_step=recent[0][0], stream="eval"))
        return found

    def _nonfinite_weights(self, step: int, network: str, parameters: list[str]) -> None:
        self._seen(step, "train")
        shown = ", ".join(parameters[:3]) + (f" and {len(parameters) - 3} more" if len(parameters) > 3 else "")
        self._raise("non_finite", "error", step, f"the {network}'s weights are non-finite ({shown})",
                    {"network": network, "parameters": parameters}, key=network)


def _describe_key(key: str) -> str:
    """``g/feature_matching`` -> ``g/feature_matching (term 'feature_matching' of the generator loss)``."""
    side, _, term = key.partition("/")
    network = {"d": "discriminator", "g": "generator", "lr": "learning rate"}.get(side, side)
    if side == "lr":
        return f"{key} (the {network} of {term})"
    if term in ("total",):
        return f"{key} (the {network} loss)"
    if term in ("adv",):
        return f"{key} (the {network}'s adversarial loss)"
    if term.endswith("_logit"):
        return f"{key} (the {network}'s output)"
    return f"{key} (term '{term}' of the {network} loss)"


def verdict_lines(verdicts: list[Verdict]) -> list[str]:
    """Markdown bullets, most severe first; one line saying so when there is nothing to report."""
    if not verdicts:
        return ["No problems detected (checks: " + ", ".join(SUGGESTIONS) + ")."]
    ordered = sorted(verdicts, key=lambda v: (-SEVERITIES.index(v.severity), v.first_step))
    return [f"- {v.line()}" for v in ordered]


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

"""The conditions the health monitor looks for, as functions of logged values (no state).

Each returns :class:`Finding` objects; :class:`~t2i.engine.health.HealthMonitor` turns them into verdicts
that last as long as the condition does. The thresholds and what they mean are in
:mod:`t2i.engine.verdicts`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..metrics.keys import is_ceiling, split_key
from .verdicts import (
    CHAOS_AUTOCORR, CHAOS_CV, CHAOS_R2, COLLAPSE_ERROR, COLLAPSE_WARNING, D_CHANCE, D_COLLAPSE_GAP, D_WIN_GAP,
    D_WIN_LOSS, FROZEN_UPDATE, G_LOSS_HIGH, STALL_EVALS, STALL_TOLERANCE, STUCK_TOLERANCE,
)

__all__ = ["Finding", "window_findings", "chaos_findings", "collapse_findings", "stall_findings", "finite"]

@dataclass
class Finding:
    """A condition seen now: its verdict ``code`` and ``severity``, what it is about (``key``), the message,
    the numbers that show it, and the step its evidence starts at (``None``: the current one)."""

    code: str
    severity: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    first_step: int | None = None
    key: str = ""


def finite(value: Any) -> bool:
    """A real number that is neither NaN nor infinite (a bool is not a number here)."""
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


def window_findings(window: list[dict[str, Any]], first: int) -> list[Finding]:
    """What a window of consecutive training records (the first logged at step ``first``) shows: D stuck, a
    network not learning, D winning outright, D collapsed."""
    found: list[Finding] = []
    lr_d = [r.get("lr/d", 1.0) for r in window]
    lr_g = [r.get("lr/g", 1.0) for r in window]
    d_learning = all(finite(v) and v > 0 for v in lr_d)
    d_total = [r.get("d/total") for r in window]
    if d_learning and all(finite(v) for v in d_total):
        mean, _ = _stats(d_total)
        spread = max(d_total) - min(d_total)
        if spread <= STUCK_TOLERANCE * max(1.0, abs(mean)):
            found.append(Finding(
                "d_loss_stuck", "error",
                f"d/total stuck at {_fmt(mean)} (spread {spread:.2g} over {len(window)} records) while lr/d = {_fmt(lr_d[-1])}",
                {"d/total": mean, "spread": spread, "records": len(window), "lr/d": lr_d[-1]}, first_step=first))
    for net, lrs in (("d", lr_d), ("g", lr_g)):
        updates = [r.get(f"health/{net}_update") for r in window]
        if all(finite(u) for u in updates) and all(finite(v) and v > 0 for v in lrs) and max(updates) < FROZEN_UPDATE:
            name = {"d": "discriminator", "g": "generator"}[net]
            found.append(Finding(
                f"{net}_not_learning", "error",
                f"the {name}'s weights moved by at most {max(updates):.2g} (relative) per logging interval over "
                f"{len(window)} records while lr/{net} = {_fmt(lrs[-1])}",
                {f"health/{net}_update": max(updates), f"lr/{net}": lrs[-1]}, first_step=first))
    adv_d = [r.get("d/adv") for r in window]
    adv_g = [r.get("g/adv") for r in window]
    real = [r.get("d/real_logit") for r in window]
    fake = [r.get("d/fake_logit") for r in window]
    has_logits = all(finite(v) for v in real + fake)
    gaps = [a - b for a, b in zip(real, fake)] if has_logits else []
    if all(finite(v) for v in adv_d):
        def winning(i: int) -> bool:
            if adv_d[i] <= D_WIN_LOSS or (gaps and gaps[i] >= D_WIN_GAP):
                return True
            return finite(adv_g[i]) and adv_g[i] >= G_LOSS_HIGH and adv_d[i] < D_CHANCE

        if all(winning(i) for i in range(len(window))):
            evidence: dict[str, Any] = {"d/adv": _stats(adv_d)[0]}
            if gaps:
                evidence["real_minus_fake_logit"] = _stats(gaps)[0]
            if all(finite(v) for v in adv_g):
                evidence["g/adv_first"], evidence["g/adv_last"] = adv_g[0], adv_g[-1]
            detail = ", ".join(f"{k} {_fmt(v)}" for k, v in evidence.items())
            found.append(Finding("d_wins", "warning", f"D beats G outright ({detail}; last {len(window)} records)",
                                     evidence, first_step=first))
    if gaps and max(abs(g) for g in gaps) <= D_COLLAPSE_GAP:
        found.append(Finding(
            "d_collapsed", "warning",
            f"D gives real and fake images the same mean logit (|real - fake| <= {max(abs(g) for g in gaps):.2g} "
            f"over {len(window)} records; real {_fmt(real[-1])}, fake {_fmt(fake[-1])})",
            {"max_abs_gap": max(abs(g) for g in gaps), "d/real_logit": real[-1], "d/fake_logit": fake[-1]},
            first_step=first))
    return found


def chaos_findings(values: list[float], first: int) -> list[Finding]:
    """G's loss ``values`` (``g/total`` of consecutive records from step ``first``) jumping without a trend."""
    mean, std = _stats(values)
    cv = std / max(1.0, abs(mean))
    r2, ac = _trend_r2(values), _autocorr(values)
    if cv >= CHAOS_CV and r2 < CHAOS_R2 and ac < CHAOS_AUTOCORR:
        return [Finding(
            "g_chaotic", "warning",
            f"g/total jumps between {_fmt(min(values))} and {_fmt(max(values))} without a trend "
            f"(std/mean {cv:.2f}, trend R^2 {r2:.2f}, lag-1 autocorrelation {ac:.2f} over {len(values)} records)",
            {"g/total_min": min(values), "g/total_max": max(values), "cv": cv, "trend_r2": r2, "autocorr": ac},
            first_step=first)]
    return []


def collapse_findings(values: dict[str, float]) -> list[Finding]:
    """Evaluation values ``.../collapse_score`` (metric ``diversity``) low enough to call mode collapse."""
    found: list[Finding] = []
    for key, value in values.items():
        if key.endswith("collapse_score") and value < COLLAPSE_WARNING:
            severity = "error" if value < COLLAPSE_ERROR else "warning"
            found.append(Finding(
                "mode_collapse", severity,
                f"eval/{key} = {value:.3f} (< {COLLAPSE_ERROR if severity == 'error' else COLLAPSE_WARNING}): "
                f"images of different captions are nearly identical",
                {f"eval/{key}": value}, key=key))
    return found


def _ceiling_of(key: str, values: dict[str, float]) -> float | None:
    """What real images score on ``key``'s figure (``shapes_accuracy/background`` and its ``/seen``, ``/unseen``,
    ``/rephrased`` columns -> ``shapes_accuracy/background/real``); None if ``values`` do not give it."""
    value = values.get(f"{split_key(key)[0]}/real")
    return float(value) if finite(value) else None


def stall_findings(recent: list[tuple[int, dict[str, float]]], keys: list[str]) -> list[Finding]:
    """Evaluation values among ``keys`` that stayed flat over the ``recent`` evaluations (``(step, values)``;
    the values of real images, the ceilings, are skipped, and so is a value that has reached its ceiling:
    a run that scores what real images score has nothing left to improve there)."""
    found: list[Finding] = []
    if len(recent) < STALL_EVALS:
        return found
    for key in keys:
        if is_ceiling(key):
            continue
        series = [v.get(key) for _, v in recent]
        if all(finite(v) for v in series):
            mean, _ = _stats(series)
            spread = max(series) - min(series)
            ceiling = _ceiling_of(key, recent[-1][1])
            if ceiling is not None and abs(series[-1] - ceiling) <= STALL_TOLERANCE * max(abs(ceiling), 1e-3):
                continue
            if spread <= STALL_TOLERANCE * max(abs(mean), 1e-3):
                found.append(Finding(
                    "metric_stalled", "info",
                    f"eval/{key} stayed at {_fmt(mean)} over the last {STALL_EVALS} evaluations "
                    f"(steps {recent[0][0]}-{recent[-1][0]})",
                    {f"eval/{key}": mean, "spread": spread}, first_step=recent[0][0], key=key))
    return found

"""``report.md`` and ``results.csv`` of a study folder (``t2i study report DIR``; also written after a run).

report.md: the trials (what differs between them, status, training time, img/s, health), the metrics
(mean +/- std over seeds, from each run's final evaluation) with the best trial per metric, every run's
health verdicts, loss and metric plots (plots/*.png), and the final sample grids side by side.
results.csv: one row per run, for other tools.

Which value is best is what the metric that logged the key declares (``higher_is_better``, and ``goals`` for
keys that differ, e.g. diversity's ``collapse_score``: closest to 1; :func:`t2i.metrics.keys.goal`); keys
matching the study's ``lower_is_better`` patterns are ranked lower-is-better whatever the metric says.
Spreads (``kid/std``), figures of the real images (the ceilings) and keys of metrics that are not installed
are never ranked.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import load_toml
from ..engine.health import SEVERITIES, Verdict, read_health, read_records
from ..errors import UsageError
from ..fileio import write_bytes, write_text
from ..metrics.keys import is_ceiling, split_key
from .goals import goal
from .records import trial_state
from .spec import flatten

__all__ = ["write_report", "load_folder", "StudyData", "goal"]

_LOSS_KEYS = ("d/total", "g/total", "d/adv", "g/adv")
_SECTION = {"generator": "G", "discriminator": "D", "text_encoder": "text", "data": "data", "train": "",
            "eval": "eval", "augment": "augment"}


@dataclass
class RunData:
    name: str
    seed: int
    folder: Path
    state: dict[str, Any] | None
    config: dict[str, Any]
    verdicts: list[Verdict] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.state["status"] if self.state else ("started" if self.folder.exists() else "pending")

    @property
    def evaluation(self) -> dict[str, float]:
        values = (self.state or {}).get("evaluation") or {}
        return {k: v for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}


@dataclass
class TrialData:
    label: str
    slug: str
    runs: list[RunData]


@dataclass
class StudyData:
    folder: Path
    plan: dict[str, Any]
    trials: list[TrialData]

    @property
    def runs(self) -> list[RunData]:
        return [r for t in self.trials for r in t.runs]


def load_folder(folder: str | Path) -> StudyData:
    """Everything the report needs from a study folder."""
    folder = Path(folder)
    plan_path = folder / "plan.json"
    if not plan_path.is_file():
        raise UsageError(f"{folder} is not a study folder (no plan.json); pass the folder 't2i study run' wrote")
    plan = json.loads(plan_path.read_text())
    by_name = {r["name"]: r for r in plan["runs"]}
    trials = []
    for trial in plan["trials"]:
        runs = []
        for name in trial["runs"]:
            entry = by_name[name]
            run_dir = folder / entry["folder"]
            config_path = folder / entry["config"]
            config = load_toml(config_path) if config_path.is_file() else {}
            state = trial_state(run_dir)
            runs.append(RunData(name, entry["seed"], run_dir, state, config,
                                read_health(run_dir) if run_dir.exists() else [], read_records(run_dir)))
        trials.append(TrialData(trial["label"], trial["slug"], runs))
    return StudyData(folder, plan, trials)


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _pm(values: list[float], digits: int | None = None) -> str:
    """``mean ± std`` (std over seeds, left out for one value); 4 significant digits unless ``digits``."""
    if not values:
        return ""
    mean, std = _mean_std(values)
    fmt = (lambda x: f"{x:.{digits}f}") if digits is not None else (lambda x: f"{x:.4g}")
    return fmt(mean) + (f" ± {fmt(std) if digits is not None else f'{std:.2g}'}" if std is not None else "")


def _short(key: str) -> str:
    """``discriminator.options.spectral_norm`` -> ``D spectral_norm``; ``train.lr_d`` -> ``lr_d``."""
    section, _, rest = key.partition(".")
    rest = rest.replace("options.", "", 1) if rest.startswith("options.") else rest
    if section == "loss" and rest.startswith("terms."):
        return f"term {rest[len('terms.'):]}"
    if section == "loss":
        return f"loss {rest}"
    prefix = _SECTION.get(section, section)
    if rest == "name":
        return prefix or section
    return f"{prefix} {rest}".strip()


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    return "–" if value is None else str(value)


def differences(data: StudyData) -> dict[str, dict[str, Any]]:
    """Per trial: the dotted config keys where it differs from the study's base, with its values."""
    return {t["label"]: dict(t.get("changes", {})) for t in data.plan["trials"]}


def _status(runs: list[RunData]) -> str:
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    if len(counts) == 1 and len(runs) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def _health_summary(runs: list[RunData]) -> str:
    codes: dict[str, tuple[int, int]] = {}  # code -> (severity rank, runs)
    for r in runs:
        for code in {v.code: None for v in r.verdicts}:
            rank = max(SEVERITIES.index(v.severity) for v in r.verdicts if v.code == code)
            old = codes.get(code, (0, 0))
            codes[code] = (max(old[0], rank), old[1] + 1)
    if not codes:
        return "ok" if any(r.state for r in runs) else ""
    ordered = sorted(codes.items(), key=lambda kv: (-kv[1][0], kv[0]))
    many = len(runs) > 1
    return ", ".join(f"{code} ({SEVERITIES[rank]}{f', {n}/{len(runs)} seeds' if many else ''})" for code, (rank, n) in ordered)


def metric_keys(data: StudyData) -> list[str]:
    keys: dict[str, None] = {}
    for run in data.runs:
        for key in run.evaluation:
            if not is_ceiling(key):
                keys[key] = None
    return list(keys)


def _finals(trial: TrialData, key: str) -> list[float]:
    return [r.evaluation[key] for r in trial.runs if r.status in ("finished", "diverged") and key in r.evaluation]


def best_trials(data: StudyData, keys: list[str]) -> dict[str, tuple[str, float]]:
    lower = data.plan.get("lower_is_better", [])
    best: dict[str, tuple[str, float]] = {}
    for key in keys:
        candidates = [(t.label, _mean_std(v)[0]) for t in data.trials if (v := _finals(t, key))]
        if not candidates:
            continue
        how = goal(key, lower)
        pick = {"max": max, "min": min}.get(how)
        if how == "none":
            continue
        if pick is not None:
            best[key] = pick(candidates, key=lambda c: c[1])
        else:
            best[key] = min(candidates, key=lambda c: abs(c[1] - 1.0))
    return best


def _series(run: RunData, key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in run.records
            if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]


def write_plots(data: StudyData, keys: list[str]) -> dict[str, Path]:
    """plots/loss_*.png, plots/metric_*.png and plots/samples.png; returns title -> path."""
    from .plots import curve_plot, metric_plot, samples_side_by_side

    out: dict[str, Path] = {}
    plots = data.folder / "plots"
    for key in _LOSS_KEYS:
        curves = {t.label: [_series(r, key) for r in t.runs] for t in data.trials}
        if any(s for runs in curves.values() for s in runs):
            values = [abs(v) for runs in curves.values() for s in runs for _, v in s]
            symlog = bool(values) and max(values) > 1e3
            out[key] = curve_plot(curves, key, "loss (symlog)" if symlog else "loss", plots / f"loss_{key.replace('/', '_')}.png", symlog=symlog)
    lower = data.plan.get("lower_is_better", [])
    headline = [k for k in keys if split_key(k)[1] == "all" and goal(k, lower) != "none"]
    shown = keys if len(keys) <= 8 else headline[:8] or keys[:8]
    for key in shown:
        values = {t.label: [_series(r, f"eval/{key}") for r in t.runs if _series(r, f"eval/{key}")] for t in data.trials}
        values = {label: runs for label, runs in values.items() if runs}
        if values:
            out[f"eval/{key}"] = metric_plot(values, key, plots / f"metric_{re.sub(r'[^A-Za-z0-9]+', '_', key)}.png")
    grids = {}
    for t in data.trials:
        run = next((r for r in t.runs if r.state and r.state.get("samples")), None)
        if run is not None:
            grids[t.label] = run.folder / "samples" / "latest.png"
    side = samples_side_by_side(grids, plots / "samples.png")
    if side is not None:
        out["samples"] = side
    return out


def write_csv(data: StudyData, keys: list[str], diffs: dict[str, dict[str, Any]]) -> Path:
    """One row per run: trial, seed, status, time, speed, every key some trial changes (its value in this run's
    config), every metric, and the health verdicts."""
    varying = list(dict.fromkeys(k for changes in diffs.values() for k in changes))
    path = data.folder / "results.csv"
    all_metrics = list(dict.fromkeys(k for r in data.runs for k in r.evaluation))
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["trial", "seed", "run", "status", "message", "steps", "training_s", "img_per_s",
                     *varying, *all_metrics, "health"])
    for t in data.trials:
        for r in t.runs:
            s = r.state or {}
            writer.writerow([
                t.label, r.seed, r.name, r.status, s.get("message", ""), s.get("step", ""),
                f"{s['elapsed_s']:.1f}" if s.get("elapsed_s") is not None else "",
                f"{s['img_per_s']:.1f}" if s.get("img_per_s") is not None else "",
                *[_text(flatten(r.config).get(k)) for k in varying],
                *[f"{r.evaluation[k]:.6g}" if k in r.evaluation else "" for k in all_metrics],
                ";".join(f"{v.severity}:{v.code}" for v in r.verdicts),
            ])
    return write_bytes(path, text.getvalue().encode())


def write_report(folder: str | Path, storage: str | None = None) -> Path:
    """Write ``report.md``, ``results.csv`` and ``plots/`` for the study in ``folder``; return report.md.
    A search study's report starts with its search (:mod:`t2i.study.search_report`; ``storage``: the
    database URL, when it is not the folder's own search.db and needs a password)."""
    from .. import __version__

    data = load_folder(folder)
    keys = metric_keys(data)
    diffs = differences(data)
    best = best_trials(data, keys)
    plots = write_plots(data, keys)
    write_csv(data, keys, diffs)
    plan = data.plan
    budget = ", ".join(f"{v:g} {k}" for k, v in plan.get("budget", {}).items()) or "each config's own stop condition"
    n_runs = len(data.runs)
    done = sum(r.status in ("finished", "diverged") for r in data.runs)
    lines = [f"# Study {plan['name']}", ""]
    if plan.get("description"):
        lines += [plan["description"].strip(), ""]
    lines += [
        f"{len(data.trials)} trials x {len(plan['seeds'])} seed(s) ({', '.join(map(str, plan['seeds']))}) = {n_runs} runs, "
        f"{done} done; budget per run: {budget}. Written by t2i {__version__} on {time.strftime('%Y-%m-%d %H:%M')}; "
        "regenerate with `t2i study report " + str(data.folder) + "`.",
        "",
    ]
    if plan.get("overrides"):
        lines += ["Overrides given on the command line: " + ", ".join(f"`{k}={_text(v)}`" for k, v in plan["overrides"].items()), ""]
    if plan.get("search"):
        from .search_report import search_lines

        lines += search_lines(data.folder, storage)

    lines += ["## Trials", "", "Settings: where each trial differs from the study's base (– : it is the base). Each "
              "run's full config is in `configs/<run>.toml`; `t2i run --config` reproduces it.", "",
              "| trial | settings | status | training time (min) | img/s | health |", "|---|---|---|---|---|---|"]
    for t in data.trials:
        settings = ", ".join(f"{_short(k)}={_text(v)}" for k, v in diffs.get(t.label, {}).items())
        times = [r.state["elapsed_s"] / 60 for r in t.runs if r.state and r.state.get("elapsed_s") is not None]
        speeds = [r.state["img_per_s"] for r in t.runs if r.state and r.state.get("img_per_s") is not None]
        lines.append(f"| {t.label} | {settings or '–'} | {_status(t.runs)} | {_pm(times, 2)} | {_pm(speeds, 0)} | {_health_summary(t.runs)} |")
    lines.append("")

    if keys:
        lower = plan.get("lower_is_better", [])
        arrow = {"max": "↑", "min": "↓", "one": "→1", "none": ""}
        lines += ["## Metrics", "", "Final evaluation of each run, mean ± std over seeds (↑ higher is better, ↓ lower, "
                  "→1 closest to 1); the best trial per metric in bold.", ""]
        lines += ["| metric | " + " | ".join(t.label for t in data.trials) + " |", "|---" * (len(data.trials) + 1) + "|"]
        for key in keys:
            cells = []
            for t in data.trials:
                cell = _pm(_finals(t, key))
                cells.append(f"**{cell}**" if cell and key in best and best[key][0] == t.label else cell)
            lines.append(f"| {key} {arrow[goal(key, lower)]}".rstrip() + " | " + " | ".join(cells) + " |")
        lines += ["", "### Best trial per metric", ""]
        lines += [f"- {key}: **{label}** ({value:.4g})" for key, (label, value) in best.items()]
        lines.append("")

    lines += ["## Health", "", "Verdicts of the training-health monitor (`health.json` of each run; thresholds in "
              "`t2i.engine.health`), with what the literature suggests for each.", ""]
    for t in data.trials:
        lines += [f"### {t.label}", ""]
        suggestions: dict[str, str] = {}
        for r in t.runs:
            head = f"- seed {r.seed} (`runs/{r.name}`): {r.status}"
            if r.state and r.state.get("message"):
                head += f" – {r.state['message']}"
            if r.state and not r.verdicts:
                head += "; no problems detected"
            lines.append(head)
            for v in sorted(r.verdicts, key=lambda v: (-SEVERITIES.index(v.severity), v.first_step)):
                steps = f"step {v.first_step}" if v.first_step == v.last_step else f"steps {v.first_step}-{v.last_step}"
                steps += f", cleared at step {v.cleared_at}" if v.cleared_at is not None else ", still holds at the end"
                lines.append(f"  - [{v.severity}] **{v.code}** ({steps}): {v.message}")
                suggestions.setdefault(v.code, v.suggestion)
        if suggestions:
            lines += ["", *[f"Try, for {code}: {text}." for code, text in suggestions.items()]]
        lines.append("")

    curves = [(k, p) for k, p in plots.items() if k != "samples"]
    if curves:
        lines += ["## Curves", ""]
        lines += [f"![{k}]({p.relative_to(data.folder)})" for k, p in curves]
        lines.append("")
    if "samples" in plots:
        lines += ["## Final samples", "", "Each trial's last sample grid (first seed; fixed noise in columns, fixed test "
                  "captions in rows), side by side:", "", f"![samples]({plots['samples'].relative_to(data.folder)})", ""]
    lines += ["## Runs", "", "| run | status | steps | resumed from | reproduce |", "|---|---|---|---|---|"]
    for r in data.runs:
        s = r.state or {}
        lines.append(f"| {r.name} | {r.status} | {s.get('step', '')} | {s.get('resumed_from') or ''} | "
                     f"`t2i run --config configs/{r.name}.toml` |")
    lines.append("")
    return write_text(data.folder / "report.md", "\n".join(lines))

"""The ``## Search`` section of a search study's report.md, read from its Optuna storage.

- the objective, sampler, pruner and storage, and how many trials finished, were pruned or failed;
- the best trial: its value and parameters, and ``best.toml``, its full config (first seed), ready for
  ``t2i run --config``;
- every trial: its parameters, state, objective and, for a pruned or failed one, why (the health verdict,
  or the pruner's judgement of its intermediate evaluations);
- the optimisation history (``plots/search_history.png``: each trial's value and the best so far);
- parameter importances (Optuna's fANOVA over the finished trials);
- the compute pruning saved: for each pruned trial, the training time it would still have taken to the end of
  its budget (its time limit, or its steps at the pace it had; else the median finished trial's time).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..fileio import atomic_path

__all__ = ["search_lines", "load_trials"]


def load_trials(folder: Path, storage: str | None = None) -> tuple[dict[str, Any], Any, list[Any]]:
    """``(search.json, the Optuna study, its trials)`` of a search study folder."""
    from .optuna_backend import open_storage, optuna_module

    info = json.loads((folder / "search.json").read_text())
    url = storage or (f"sqlite:///{(folder / 'search.db').resolve()}" if info.get("default_storage") else info["storage"])
    if "***" in url:
        raise UsageError(f"the search storage of {folder} needs its password: t2i study report {folder} --storage URL")
    optuna = optuna_module()
    try:
        study = optuna.load_study(study_name=info["study_name"], storage=open_storage(url, heartbeat=False))
    except KeyError:
        raise UsageError(f"no search '{info['study_name']}' in {url}") from None
    return info, study, study.get_trials(deepcopy=False)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _saved_seconds(trials: list[Any]) -> tuple[float, int]:
    """Training seconds pruning saved, and how many pruned trials that covers."""
    finished = sorted(t.user_attrs.get("elapsed_s", 0.0) for t in trials if t.state.name == "COMPLETE")
    median = finished[len(finished) // 2] if finished else None
    saved, counted = 0.0, 0
    for t in trials:
        if t.state.name != "PRUNED":
            continue
        s = t.user_attrs.get("saved_s")
        if s is None and median is not None:
            s = max(0.0, median - t.user_attrs.get("elapsed_s", 0.0))
        if s is not None:
            saved, counted = saved + s, counted + 1
    return saved, counted


def _history_plot(trials: list[Any], direction: str, path: Path) -> Path | None:
    done = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None and math.isfinite(t.value)]
    if not done:
        return None
    from .plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.scatter([t.number for t in done], [t.value for t in done], s=18, label="finished trial")
    pruned = [t for t in trials if t.state.name == "PRUNED" and t.intermediate_values]
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        ax.scatter([t.number for t in pruned], last, s=18, marker="x", color="grey", label="pruned (last evaluation)")
    best, line = None, []
    pick = max if direction == "maximize" else min
    for t in sorted(done, key=lambda t: t.number):
        best = t.value if best is None else pick(best, t.value)
        line.append((t.number, best))
    ax.step([n for n, _ in line], [v for _, v in line], where="post", color="C1", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _importances(study: Any) -> dict[str, float] | str:
    optuna = __import__("optuna")
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return "needs at least 2 finished trials"
    try:
        return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:
        return f"not computable yet ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"


def search_lines(folder: Path, storage: str | None = None) -> list[str]:
    """The report's search section (Markdown lines); also writes ``best.toml`` and the history plot."""
    info, study, trials = load_trials(folder, storage)
    states = [t.state.name for t in trials]
    counts = {s: states.count(s) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING") if s in states}
    direction = info["direction"]
    lines = ["## Search", "",
             f"Objective: {info['objective']}. Sampler {info['sampler']}"
             + (f" ({', '.join(f'{k}={v}' for k, v in info['sampler_options'].items())})" if info.get("sampler_options") else "")
             + f", pruner {info['pruner']}" + (" and error-level health verdicts" if info.get("prune_on_health") else "")
             + f"; {info['n_trials']} trials asked for. Storage: {_storage_text(info)} (study `{info['study_name']}`).", "",
             "Trials: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()) + ".", "",
             "Search space: " + "; ".join(f"`{k}` {v}" for k, v in info["space"].items()) + ".", ""]

    complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    if complete:
        best = study.best_trial
        runs = best.user_attrs.get("runs") or []
        lines += ["### Best trial", "", f"Trial {best.number}: objective **{best.value:.4g}** "
                  f"({len(best.user_attrs.get('scores', [])) or 1} seed(s)), with "
                  + ", ".join(f"`{k}` = {_text(v)}" for k, v in best.params.items()) + "."]
        source = folder / "configs" / f"{runs[0]}.toml" if runs else None
        if source is not None and source.is_file():
            shutil.copyfile(source, folder / "best.toml")
            lines += ["", f"Its full config (seed {runs[0].rsplit('seed', 1)[-1]}) is `best.toml`: "
                      f"`t2i run --config {folder / 'best.toml'}` trains it again."]
        lines.append("")

    lines += ["### Trials", "", "| trial | parameters | state | objective | steps | training (min) | why |",
              "|---|---|---|---|---|---|---|"]
    for t in trials:
        a = t.user_attrs
        params = ", ".join(f"{k}={_text(v)}" for k, v in t.params.items())
        value = f"{t.value:.4g}" if t.value is not None else ""
        if t.state.name == "PRUNED" and t.intermediate_values and not value:
            value = f"({t.intermediate_values[max(t.intermediate_values)]:.4g} at step {max(t.intermediate_values)})"
        minutes = f"{a['elapsed_s'] / 60:.2f}" if a.get("elapsed_s") is not None else ""
        why = a.get("reason", "")
        if "retry_of" in a:
            why = f"runs trial {a['retry_of']} again" + (f"; {why}" if why else "")
        state = a.get("status") or t.state.name.lower()
        lines.append(f"| {t.number} | {params} | {state} | {value} | {a.get('step', '') or ''} | {minutes} | "
                     f"{why.replace('|', '/')} |")
    lines.append("")

    plot = _history_plot(trials, direction, folder / "plots" / "search_history.png")
    lines += ["### Optimisation history", ""]
    if plot is not None:
        lines += [f"![search history]({plot.relative_to(folder)})", ""]
    best_so_far, pick = None, (max if direction == "maximize" else min)
    steps = []
    for t in sorted(complete, key=lambda t: t.number):
        if best_so_far is None or pick(best_so_far, t.value) != best_so_far:
            best_so_far = t.value
            steps.append(f"trial {t.number}: {t.value:.4g}")
    lines += ["Best so far: " + (" → ".join(steps) if steps else "no finished trial yet") + ".", ""]

    lines += ["### Parameter importances", ""]
    importances = _importances(study)
    if isinstance(importances, str):
        lines += [f"Not shown: {importances}.", ""]
    else:
        lines += ["fANOVA over the finished trials (the share of the objective's variance each parameter explains):",
                  "", "| parameter | importance |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} {'█' * round(v * 20)} |" for k, v in importances.items()]
        lines.append("")

    saved, counted = _saved_seconds(trials)
    pruned = counts.get("PRUNED", 0)
    spent = sum(t.user_attrs.get("elapsed_s", 0.0) for t in trials)
    lines += ["### Compute saved by pruning", ""]
    if pruned:
        lines += [f"{pruned} trial(s) pruned; **{saved / 60:.2f} minutes** of training not spent "
                  f"(estimated for {counted} of them from their budget and pace), against {spent / 60:.2f} minutes "
                  "spent training all trials.", ""]
    else:
        lines += ["No trial was pruned.", ""]
    return lines


def _storage_text(info: dict[str, Any]) -> str:
    """The default storage as the folder's file (the folder may have moved since), any other as its URL."""
    return "`search.db` in this folder" if info.get("default_storage") else f"`{info['storage']}`"

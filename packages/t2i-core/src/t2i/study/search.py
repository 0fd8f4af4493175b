"""A study's ``[search]``: adaptive hyperparameter search with Optuna, pruned by the training-health monitor.

Instead of a grid, a study file may describe a search space; each trial is then a point Optuna's sampler
picks from what the earlier trials scored, trained once per seed with the study's budget::

    name = "lr-search"
    base = "../configs/seed-model2b.toml"
    seeds = [0]                                # every trial runs once per seed; its value is the mean
    metrics = ["shapes_accuracy"]
    [budget]
    minutes = 3                                # per run: steps, epochs or minutes, as for any study
    [override]
    "eval.every" = 500                         # intermediate evaluations, for the median/halving pruner

    [search]
    n_trials = 30
    objective = "shapes_accuracy/mean"         # its direction is what the metric declares (higher is better)
    # objective = { "shapes_accuracy/mean" = 1.0, "diversity/collapse_score" = 0.5 }   # a weighted sum
    sampler = "tpe"                            # tpe (default) | random | cmaes | grid, or a table:
    # sampler = { name = "tpe", seed = 0, n_startup_trials = 5 }   (the other keys go to Optuna's sampler)
    pruner = "median"                          # median (default) | halving | none, or a table with options
    prune_on_health = true                     # stop a trial at its first error-level health verdict
    # storage = "postgresql://user@host/db"    # default: sqlite file search.db in the study folder

    [search.space]
    "train.lr_g" = { low = 1e-5, high = 1e-3, log = true }      # a float range (log scale)
    "train.d_steps" = { low = 1, high = 3 }                     # integers when both ends are
    "loss.terms.feature_matching" = { low = 0.0, high = 0.1, step = 0.01 }
    "train.schedule" = ["constant", "cosine_restarts"]          # choices
    "generator" = [{ name = "dcgan" }, { name = "sagan", options = { ch = 16 } }]  # a table per choice

Any config key can be searched, as any key can vary in a grid; a choice that is a table sets the keys under
its key (a component and its options), and a choice that picks another component starts it from its own
defaults. ``[base]``, ``[override]``, ``metrics``, ``seeds`` and ``[budget]`` mean what they mean in any
study; ``[grid]``, ``[ofat]`` and ``[[variants]]`` are for fixed plans and do not mix with a search.

The objective is a final-evaluation key of the trial's runs, mean over seeds. A single key is maximised or
minimised as the metric that logs it declares (:func:`t2i.metrics.keys.goal`; a key closest to 1 wins for
``"one"``); ``direction = "maximize"`` names it for a key whose metric declares nothing. A weighted sum
adds each key's weight x its value oriented so that higher is better (``-value`` for lower-is-better,
``-|value - 1|`` for closest-to-1) and is maximised.

Pruning (:mod:`t2i.study.pruning`): a trial stops at its first error-level health verdict, with the verdict
as the reason, and when the pruner judges its intermediate evaluations (``eval.every``; the first seed's)
worse than the other trials' at the same step. Pruned trials keep their run folders.

Storage: every trial, its parameters, state and values live in an Optuna storage, by default a SQLite file
``search.db`` in the study folder; running the study again continues the search with its history (a trial
that was interrupted or killed is run again with the same parameters, resuming its run from its last
checkpoint), and ``optuna-dashboard sqlite:///studies/NAME/search.db`` shows it. Any SQLAlchemy URL works,
so several machines can share one search: ``t2i study run FILE --worker --storage URL`` on each.

Why Optuna is a dependency of the core rather than a ``t2i-search`` plugin: the search is part of the study
file format, parsed, validated and reported by the same code as grids, and ``t2i study`` is core; a plugin
would need new extension points (study sections, report sections, CLI flags) for one implementation, and a
study file that says ``[search]`` would mean nothing on an installation without it. Optuna is pure Python
(SQLAlchemy, alembic, colorlog, tqdm, PyYAML), small next to torch, and is imported only when a study
searches, so ``t2i run`` does not pay for it. (``sampler = "cmaes"`` needs the optional ``cmaes`` package.)

This module reads and checks the ``[search]`` table and builds each trial's config; it never imports Optuna.
:mod:`t2i.study.optimize` runs the search; :mod:`t2i.study.search_report` reports it.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..config_tree import flatten, unflatten, value_text
from ..errors import UsageError

__all__ = ["SearchSpec", "Param", "Objective", "parse_search", "SAMPLERS", "PRUNERS", "SEARCH_KEYS"]

SAMPLERS = ("tpe", "random", "cmaes", "grid")
PRUNERS = ("median", "halving", "none")
SEARCH_KEYS = ("n_trials", "space", "objective", "direction", "sampler", "pruner", "prune_on_health", "storage")
_RANGE_KEYS = ("low", "high", "log", "step")
DIRECTIONS = ("maximize", "minimize")


@dataclass
class Param:
    """One searched key: a float or int range, or a list of choices (each a value, or a table set under the key)."""

    key: str
    kind: str  # "float", "int" or "choice"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: list[Any] = field(default_factory=list)

    @property
    def labels(self) -> list[Any]:
        """What Optuna sees for each choice: the value itself, or a label for a table."""
        return [_choice_label(c) for c in self.choices]

    def value(self, sampled: Any) -> Any:
        """The config value of what Optuna sampled (a choice's table for its label)."""
        if self.kind != "choice":
            return sampled
        return self.choices[self.labels.index(sampled)]

    def dotted(self, sampled: Any) -> dict[str, Any]:
        """The dotted config keys this parameter sets for a sampled value."""
        value = self.value(sampled)
        if isinstance(value, Mapping):
            return {f"{self.key}.{k}": v for k, v in flatten(value).items()}
        return {self.key: value}

    def grid_values(self) -> list[Any] | None:
        """Every value, for the grid sampler (``None``: a continuous range)."""
        if self.kind == "choice":
            return self.labels
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        n = int(round((self.high - self.low) / self.step))
        return [round(self.low + i * self.step, 12) for i in range(n + 1)]

    def corners(self) -> list[Any]:
        """Sampled values that exercise every config this parameter can produce: each choice, both ends."""
        return self.labels if self.kind == "choice" else [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "choice":
            return " | ".join(str(c) for c in self.labels)
        scale = ", log" if self.log else ""
        step = f", step {value_text(self.step)}" if self.step is not None else ""
        return f"{self.kind} {value_text(self.low)} .. {value_text(self.high)}{scale}{step}"


def _choice_label(choice: Any) -> Any:
    if isinstance(choice, Mapping):
        return ", ".join(f"{k}={value_text(v)}" for k, v in flatten(choice).items()) or "{}"
    return choice


@dataclass
class Objective:
    """``weights``: key -> weight (one key: a single metric); ``goals``: key -> max/min/one; ``direction``."""

    weights: dict[str, float]
    goals: dict[str, str]
    direction: str  # "maximize" or "minimize", what Optuna is told

    @property
    def single(self) -> bool:
        return len(self.weights) == 1

    def describe(self) -> str:
        if self.single:
            key = next(iter(self.weights))
            how = {"one": " (distance to 1)"}.get(self.goals[key], "")
            return f"{self.direction} {key}{how}"
        terms = " + ".join(f"{w:g} x {_oriented(k, self.goals[k])}" for k, w in self.weights.items())
        return f"maximize {terms}"

    def score(self, values: Mapping[str, Any]) -> float | None:
        """The objective of one evaluation (``None`` when a key is missing or not finite)."""
        got = {}
        for key in self.weights:
            v = values.get(key)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                return None
            got[key] = float(v)
        if self.single:
            (key, v), = got.items()
            return abs(v - 1.0) if self.goals[key] == "one" else v
        return sum(w * _orient(got[k], self.goals[k]) for k, w in self.weights.items())


def _orient(value: float, goal: str) -> float:
    return {"max": value, "min": -value, "one": -abs(value - 1.0)}[goal]


def _oriented(key: str, goal: str) -> str:
    return {"max": key, "min": f"-{key}", "one": f"-|{key} - 1|"}[goal]


@dataclass
class SearchSpec:
    n_trials: int
    space: list[Param]
    objective: Objective
    sampler: str
    sampler_options: dict[str, Any]
    pruner: str
    pruner_options: dict[str, Any]
    prune_on_health: bool
    storage: str | None  # None: sqlite:///<study folder>/search.db

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.space]

    def param(self, key: str) -> Param:
        return next(p for p in self.space if p.key == key)

    def changes(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The dotted config keys a trial with these sampled ``params`` sets."""
        out: dict[str, Any] = {}
        for p in self.space:
            if p.key in params:
                out.update(p.dotted(params[p.key]))
        return out

    def tree(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The config layer of a trial: each parameter's value (a table choice as a subtree)."""
        return unflatten(self.changes(params))

    def grid_size(self) -> int | None:
        values = [p.grid_values() for p in self.space]
        return None if any(v is None for v in values) else math.prod(len(v) for v in values)

    def corner_points(self) -> list[dict[str, Any]]:
        """Parameter sets that, together, exercise every choice and both ends of every range: the first value
        of every parameter, then each other value of each parameter alone."""
        first = {p.key: p.corners()[0] for p in self.space}
        points = [dict(first)]
        for p in self.space:
            points += [{**first, p.key: v} for v in p.corners()[1:]]
        return points

    def fingerprint(self) -> str:
        """What a stored search must agree with to be continued: the space and the objective."""
        space = [{"key": p.key, "kind": p.kind, "low": p.low, "high": p.high, "log": p.log, "step": p.step,
                  "choices": p.labels} for p in self.space]
        return json.dumps({"space": space, "objective": self.objective.weights,
                           "direction": self.objective.direction}, sort_keys=True)

    def summary(self) -> dict[str, Any]:
        """For search.json and the report."""
        return {"n_trials": self.n_trials, "objective": self.objective.describe(),
                "objective_keys": self.objective.weights, "goals": self.objective.goals,
                "direction": self.objective.direction, "sampler": self.sampler, "sampler_options": self.sampler_options,
                "pruner": self.pruner, "pruner_options": self.pruner_options, "prune_on_health": self.prune_on_health,
                "space": {p.key: p.describe() for p in self.space}}


def _fail(where: str, message: str) -> UsageError:
    return UsageError(f"{where}: [search] {message}")


def _suggest(key: str, valid: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_search(table: Any, where: str, goal: Any) -> SearchSpec:
    """Read a ``[search]`` table; ``goal(key)`` says which value of a metric key is best (max/min/one/none)."""
    if not isinstance(table, Mapping):
        raise UsageError(f"{where}: [search] must be a table")
    for key in table:
        if key not in SEARCH_KEYS:
            raise _fail(where, f"unknown key '{key}'{_suggest(key, SEARCH_KEYS)}")
    space = _space(table.get("space"), where)
    sampler, sampler_options = _named(table.get("sampler", "tpe"), SAMPLERS, "sampler", where)
    pruner, pruner_options = _named(table.get("pruner", "median"), PRUNERS, "pruner", where)
    if sampler == "cmaes":
        choice = next((p.key for p in space if p.kind == "choice"), None)
        if choice is not None:
            raise _fail(where, f"sampler cmaes searches float and int ranges only; '{choice}' is a list of choices "
                               "(use tpe or random)")
    grid_size = None
    if sampler == "grid":
        ranged = next((p.key for p in space if p.grid_values() is None), None)
        if ranged is not None:
            raise _fail(where, f"sampler grid needs a finite set of values; give '{ranged}' a step or a list of choices")
        grid_size = math.prod(len(p.grid_values() or []) for p in space)
    n_trials = table.get("n_trials", grid_size)
    if n_trials is None:
        raise _fail(where, "n_trials is missing (how many trials to run, e.g. n_trials = 20)")
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise _fail(where, f"n_trials must be an integer >= 1, got {n_trials!r}")
    if grid_size is not None:
        n_trials = min(n_trials, grid_size)
    objective = _objective(table.get("objective"), table.get("direction"), where, goal)
    prune = table.get("prune_on_health", True)
    if not isinstance(prune, bool):
        raise _fail(where, f"prune_on_health must be true or false, got {prune!r}")
    storage = table.get("storage")
    if storage is not None and not (isinstance(storage, str) and "://" in storage):
        raise _fail(where, f"storage must be a database URL like 'sqlite:///search.db', got {storage!r}")
    return SearchSpec(n_trials, space, objective, sampler, sampler_options, pruner, pruner_options, prune, storage)


def _space(table: Any, where: str) -> list[Param]:
    if not isinstance(table, Mapping) or not table:
        raise _fail(where, "needs a [search.space] table: the keys to search and their ranges or choices")
    out: list[Param] = []
    for key, spec in _space_items(table):
        out.append(_param(key, spec, where))
    return out


def _space_items(table: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted key -> its range table or choice list (TOML dotted keys nest tables; a range table stops it)."""
    items = []
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and not any(k in value for k in _RANGE_KEYS):
            items += _space_items(value, f"{dotted}.")
        else:
            items.append((dotted, value))
    return items


def _param(key: str, spec: Any, where: str) -> Param:
    at = f"space '{key}'"
    if isinstance(spec, list):
        if not spec:
            raise _fail(where, f"{at} lists no choices")
        labels = [_choice_label(c) for c in spec]
        if len({repr(x) for x in labels}) != len(labels):
            raise _fail(where, f"{at} lists a choice twice: {spec!r}")
        if any(isinstance(c, list) for c in spec):
            raise _fail(where, f"{at}: a choice cannot be a list")
        return Param(key, "choice", choices=list(spec))
    if not isinstance(spec, Mapping):
        raise _fail(where, f"{at} must be a range table like {{ low = 1e-5, high = 1e-3, log = true }} or a list of "
                           f"choices, got {spec!r}")
    unknown = [k for k in spec if k not in _RANGE_KEYS]
    if unknown:
        raise _fail(where, f"{at}: unknown key '{unknown[0]}'{_suggest(unknown[0], _RANGE_KEYS)}")
    low, high, log, step = spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("step")
    if not (_number(low) and _number(high)):
        raise _fail(where, f"{at} needs numbers low and high, got low={low!r}, high={high!r}")
    if not low < high:
        raise _fail(where, f"{at}: low must be below high, got {low!r} and {high!r}")
    if not isinstance(log, bool):
        raise _fail(where, f"{at}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise _fail(where, f"{at}: a log-scale range needs low > 0, got {low!r}")
    if step is not None and (not _number(step) or step <= 0):
        raise _fail(where, f"{at}: step must be a number > 0, got {step!r}")
    if log and step is not None:
        raise _fail(where, f"{at}: step and log = true do not go together (Optuna samples one or the other)")
    kind = "int" if isinstance(low, int) and isinstance(high, int) and (step is None or isinstance(step, int)) else "float"
    if kind == "float":
        low, high = float(low), float(high)
    return Param(key, kind, low, high, log, step)


def _named(value: Any, names: tuple[str, ...], what: str, where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str):
        name, options = value, {}
    elif isinstance(value, Mapping) and isinstance(value.get("name"), str):
        name, options = value["name"], {k: v for k, v in value.items() if k != "name"}
    else:
        raise _fail(where, f"{what} must be one of {', '.join(names)} or a table {{ name = ..., <options> }}, "
                           f"got {value!r}")
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise _fail(where, f"unknown {what} '{name}'{hint} (choose from {', '.join(names)})")
    if name == "none" and options:
        raise _fail(where, f"{what} 'none' takes no options")
    return name, options


def _objective(value: Any, direction: Any, where: str, goal: Any) -> Objective:
    if isinstance(value, str):
        weights = {value: 1.0}
    elif isinstance(value, Mapping) and value:
        weights = flatten(value)
        bad = next((k for k, w in weights.items() if not _number(w) or w == 0), None)
        if bad is not None:
            raise _fail(where, f"objective weight of '{bad}' must be a number other than 0, got {weights[bad]!r}")
        weights = {k: float(w) for k, w in weights.items()}
    else:
        raise _fail(where, "objective is missing: a metric key (objective = \"shapes_accuracy/mean\") or a weighted "
                           "sum (objective = { \"shapes_accuracy/mean\" = 1.0, \"diversity/collapse_score\" = 0.5 })")
    if direction is not None and direction not in DIRECTIONS:
        raise _fail(where, f"direction must be maximize or minimize, got {direction!r}")
    goals = {k: goal(k) for k in weights}
    if len(weights) > 1:
        if direction is not None:
            raise _fail(where, "direction is for a single objective key; a weighted sum is always maximised "
                               "(each key oriented by its own goal)")
        unknown = next((k for k, g in goals.items() if g == "none"), None)
        if unknown is not None:
            raise _fail(where, f"objective '{unknown}': no installed metric declares which of its values is best "
                               "(is the metric installed and is the key one it logs?)")
        return Objective(weights, goals, "maximize")
    (key, g), = goals.items()
    if direction is not None:
        if g != "none" and (g == "max") != (direction == "maximize"):
            raise _fail(where, f"direction {direction} contradicts what the metric declares for '{key}' ({g})")
        goals[key] = "max" if direction == "maximize" else "min"
        return Objective(weights, goals, direction)
    if g == "none":
        raise _fail(where, f"objective '{key}': no installed metric declares which of its values is best; "
                           "give direction = \"maximize\" or \"minimize\"")
    return Objective(weights, goals, "maximize" if g == "max" else "minimize")


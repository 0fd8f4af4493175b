"""A study file: a base config plus variations, expanded into runs and validated before anything trains.

A study is data (TOML). Every key below is optional except that something must vary or repeat::

    name = "seed-log"                        # default: the file name without .toml
    description = "The seed user's log, re-run on Shapes"
    base = "../configs/seed-model1.toml"     # a config file (relative to this file) ...
    # [base]                                 # ... or an inline config tree, which may name a file too:
    # config = "../configs/seed-model1.toml"
    # train.batch_size = 64
    seeds = [0, 1, 2]                        # repeats of every trial (train.seed); default [0]
    metrics = ["shapes_accuracy", "diversity"]   # eval.metrics of every trial; default: the configs' own
    lower_is_better = ["*fid*"]              # fnmatch patterns of metrics where lower wins (see report.py)

    [budget]                                 # per trial: exactly one of steps, epochs, minutes
    minutes = 2.5

    [override]                               # every trial, after its variant and grid values
    "data.resolution" = 32

    [grid]                                   # every combination of the axes
    "train.lr_d" = [1e-4, 2e-4]
    "loss.terms.feature_matching" = [0.0, 0.01]

    [ofat]                                   # one factor at a time: the base, then each value of each axis alone
    "train.ema" = [0.0, 0.999]

    [[variants]]                             # named trials; a config file and/or dotted keys
    name = "Model 2a"
    config = "../configs/seed-model2a.toml"
    "train.lr_d" = 4e-4

    [search]                                 # instead of grid/ofat/variants: an adaptive search (Optuna)
    n_trials = 20                            # see t2i.study.search
    objective = "shapes_accuracy/mean"
    [search.space]
    "train.lr_g" = { low = 1e-5, high = 1e-3, log = true }

Keys are dotted config paths, quoted (``"train.lr_d"``) or as TOML dotted keys (``train.lr_d``); any
config key can vary, component names and their options (``"generator.name"``,
``"discriminator.options.spectral_norm"``) and loss terms (``"loss.terms.r1"``) included.

How a trial's config is built (later wins): t2i's defaults < ``base`` < the variant (its file, then its
keys) < the grid or one-factor point < ``override`` < ``metrics``, the seed and the budget < ``--set``
given to ``t2i study run``. Tables merge, as in config files, with one exception: a layer that picks
another component (``"generator.name" = "sagan"``) or adversarial loss drops the options the layers
below gave the old one, so the new one starts from its own defaults. Variants, grid points and one-factor points multiply (each variant is run at
each grid point), and every trial runs once per seed.

Everything is checked before the first step: unknown study keys, unknown or mistyped config keys and
component options, unknown component names, unsupported resolutions, and an ``override`` that would
silently flatten an axis. Each problem is one line naming the trial and the key.
"""

from __future__ import annotations

import copy
import difflib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..config import ExperimentConfig, load_toml, resolve
from ..config import layer as overlay
from ..config_tree import flatten, set_path, slug, unflatten, value_text
from ..errors import ConfigError, UsageError
from ..interfaces import loss_role
from ..plugins import registry

__all__ = ["StudySpec", "Trial", "PlannedRun", "load_study", "parse_study", "plan_trial", "flatten", "overlay",
           "BUDGET_KEYS"]

BUDGET_KEYS = ("steps", "epochs", "minutes")
_TOP_KEYS = ("name", "description", "base", "seeds", "metrics", "lower_is_better", "budget", "override", "grid",
             "ofat", "variants", "search")
_VARIANT_KEYS = ("name", "config", "description")


@dataclass
class Trial:
    """One point of the study (a variant at a grid or one-factor point), run once per seed."""

    label: str  # "Model 2a" / "train.lr_d=0.0001" / "Model 2a, train.lr_d=0.0001"
    slug: str  # its folder-name stem
    changes: dict[str, Any]  # dotted key -> value: where this trial differs from the base
    raw: dict[str, Any]  # the config tree, without seed


@dataclass
class PlannedRun:
    """One trial at one seed: an ordinary t2i run folder under the study folder."""

    trial: Trial
    seed: int
    name: str  # folder name under runs/
    raw: dict[str, Any]  # the full config tree of the run
    config: ExperimentConfig  # validated


@dataclass
class StudySpec:
    name: str
    description: str
    path: Path | None
    seeds: list[int]
    budget: dict[str, float]
    lower_is_better: list[str]
    trials: list[Trial]
    runs: list[PlannedRun] = field(default_factory=list)
    axes: list[str] = field(default_factory=list)  # the dotted keys the study varies (grid, ofat, variants)
    search: Any = None  # a t2i.study.search.SearchSpec: trials are planned as the search picks them
    base: dict[str, Any] = field(default_factory=dict)  # the base config tree
    override: dict[str, Any] = field(default_factory=dict)  # [override], dotted
    metrics: list[str] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # --set, dotted


def _fail(where: str, message: str) -> UsageError:
    return UsageError(f"{where}: {message}")


def _suggest(key: str, valid: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"


def _load_file(path: Path, where: str) -> dict[str, Any]:
    if not path.is_file():
        raise _fail(where, f"config file not found: {path}")
    return load_toml(path)


def load_study(path: str | Path, overrides: Mapping[str, Any] | None = None) -> StudySpec:
    """Read, expand and validate a study file. ``overrides`` (dotted key -> value, e.g. from ``--set``) apply
    to every run last. Raises :class:`UsageError` with one line naming the trial and key on any problem."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"study file not found: {p}")
    try:
        data = load_toml(p)
    except UsageError as exc:
        raise UsageError(str(exc).replace("config file", "study file")) from None
    return parse_study(data, p.parent, name=p.stem, path=p, overrides=overrides)


def parse_study(data: Mapping[str, Any], root: Path, *, name: str = "study", path: Path | None = None,
                overrides: Mapping[str, Any] | None = None) -> StudySpec:
    """Expand a study tree (a parsed study file; relative config paths are resolved against ``root``)."""
    where = f"study {path or name}"
    for key in data:
        if key not in _TOP_KEYS:
            raise _fail(where, f"unknown key '{key}'{_suggest(key, _TOP_KEYS)}")

    base = _base_tree(data.get("base"), root, where)
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise _fail(where, f"seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise _fail(where, f"seeds has repeats: {seeds}")
    budget = _budget(data.get("budget"), where)
    metrics = data.get("metrics")
    if metrics is not None and not (isinstance(metrics, list) and all(isinstance(m, str) for m in metrics)):
        raise _fail(where, f"metrics must be a list of metric names, got {metrics!r}")
    lower = data.get("lower_is_better", [])
    if not (isinstance(lower, list) and all(isinstance(m, str) for m in lower)):
        raise _fail(where, f"lower_is_better must be a list of metric-name patterns, got {lower!r}")
    override = _table(data.get("override", {}), where, "override")
    grid = _axes(data.get("grid", {}), where, "grid")
    ofat = _axes(data.get("ofat", {}), where, "ofat")
    variants = _variants(data.get("variants", []), root, where)

    if "search" in data:
        return _search_study(data, base, seeds, budget, metrics, list(lower), override, grid or ofat or variants,
                             where, name, path, dict(overrides or {}))

    axes = list(dict.fromkeys([*grid, *ofat, *(k for _, _, _, keys in variants for k in keys)]))
    clash = sorted(set(override) & set(axes))
    if clash:
        raise _fail(where, f"override sets '{clash[0]}', which the study varies; drop it from override")
    if not (grid or ofat or variants or len(seeds) > 1):
        raise _fail(where, "nothing varies: add [grid] or [ofat] axes, [[variants]], or more than one seed")

    trials = _trials(base, variants, grid, ofat, override, where)
    spec = StudySpec(str(data.get("name", name)), str(data.get("description", "")), path, list(seeds), budget,
                     list(lower), trials, axes=axes, base=base, override=override, metrics=metrics,
                     overrides=dict(overrides or {}))
    spec.runs = _plan_runs(spec, metrics, dict(overrides or {}))
    return spec


def _search_study(data: Mapping[str, Any], base: dict[str, Any], seeds: list[int], budget: dict[str, float],
                  metrics: list[str] | None, lower: list[str], override: dict[str, Any], fixed: Any, where: str,
                  name: str, path: Path | None, overrides: dict[str, Any]) -> StudySpec:
    """A study with ``[search]``: no trials planned yet; the space is checked at every choice and range end."""
    from ..metrics.keys import producer
    from .goals import goal
    from .search import parse_search

    if fixed:
        raise _fail(where, "[search] does not mix with [grid], [ofat] or [[variants]]; a search picks its own trials")
    search = parse_search(data["search"], where, lambda key: goal(key, lower))
    clash = sorted(set(override) & {k for p in search.space for k in (p.key, *_under(p.key, override))})
    if clash:
        raise _fail(where, f"override sets '{clash[0]}', which the search varies; drop it from override")
    spec = StudySpec(str(data.get("name", name)), str(data.get("description", "")), path, list(seeds), budget,
                     lower, [], axes=search.keys, search=search, base=base, override=override, metrics=metrics,
                     overrides=overrides)
    for point in search.corner_points():
        label = ", ".join(f"{k}={value_text(v)}" for k, v in point.items())
        runs = plan_trial(spec, Trial(label, "check", search.changes(point), search.tree(point)), seeds=seeds[:1])
        cfg = runs[0].config
        for key in search.objective.weights:
            metric = producer(key, registry("metrics").names())
            if metric is None:
                raise _fail(where, f"[search] objective '{key}': no installed metric logs it; installed: "
                                   f"{', '.join(registry('metrics').names())}")
            if metric not in cfg.eval.metrics:
                raise _fail(where, f"[search] objective '{key}' needs metric '{metric}', which the trials do not "
                                   f"compute (eval.metrics = {cfg.eval.metrics}); add it to metrics = [...]")
    return spec


def _under(key: str, table: Mapping[str, Any]) -> list[str]:
    return [k for k in table if k.startswith(f"{key}.")]


def plan_trial(spec: StudySpec, trial: Trial, *, seeds: list[int] | None = None) -> list[PlannedRun]:
    """The runs of one search trial (``trial.raw``: the layer the search picked), one per seed, validated."""
    raw = overlay(overlay(spec.base, trial.raw), unflatten(spec.override))
    trial = Trial(trial.label, trial.slug, trial.changes, raw)
    return [_plan_run(spec, trial, seed, spec.metrics, spec.overrides) for seed in (seeds or spec.seeds)]


def _base_tree(base: Any, root: Path, where: str) -> dict[str, Any]:
    if base is None:
        return {}
    if isinstance(base, str):
        return _load_file(root / base, f"{where}: base")
    if isinstance(base, Mapping):
        tree = dict(base)
        file = tree.pop("config", None)
        if file is not None and not isinstance(file, str):
            raise _fail(where, f"base.config must be a path, got {file!r}")
        start = _load_file(root / file, f"{where}: base") if file else {}
        return overlay(start, unflatten(flatten(tree)))
    raise _fail(where, f"base must be a config file path or a table, got {base!r}")


def _budget(budget: Any, where: str) -> dict[str, float]:
    if budget is None:
        return {}
    if not isinstance(budget, Mapping):
        raise _fail(where, f"budget must be a table like {{ steps = 2000 }}, got {budget!r}")
    unknown = [k for k in budget if k not in BUDGET_KEYS]
    if unknown:
        raise _fail(where, f"unknown budget key '{unknown[0]}'{_suggest(unknown[0], BUDGET_KEYS)}")
    if len(budget) != 1:
        raise _fail(where, f"budget takes exactly one of {', '.join(BUDGET_KEYS)}, got {len(budget)}")
    (key, value), = budget.items()
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise _fail(where, f"budget.{key} must be a number > 0, got {value!r}")
    if key == "steps" and not isinstance(value, int):
        raise _fail(where, f"budget.steps must be an integer, got {value!r}")
    return {key: value}


def _table(table: Any, where: str, name: str) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise _fail(where, f"[{name}] must be a table of dotted config keys, got {table!r}")
    return flatten(table)


def _axes(table: Any, where: str, name: str) -> dict[str, list[Any]]:
    axes = _table(table, where, name)
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise _fail(where, f"[{name}] {key} must be a non-empty list of values, got {values!r}")
        if len({repr(v) for v in values}) != len(values):
            raise _fail(where, f"[{name}] {key} lists a value twice: {values!r}")
    return axes


def _variants(items: Any, root: Path, where: str) -> list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """``[(name, tree, what it sets: its file's values and its keys, its keys alone)]``."""
    if not isinstance(items, list) or not all(isinstance(v, Mapping) for v in items):
        raise _fail(where, "variants must be [[variants]] tables")
    out, names = [], set()
    for i, item in enumerate(items):
        label = item.get("name")
        if not isinstance(label, str) or not label.strip():
            raise _fail(where, f"variant #{i + 1} needs a name = \"...\"")
        if label in names:
            raise _fail(where, f"two variants are named '{label}'")
        names.add(label)
        keys = flatten({k: v for k, v in item.items() if k not in _VARIANT_KEYS})
        file = item.get("config")
        tree = _load_file(root / file, f"{where}: variant '{label}'") if isinstance(file, str) else {}
        if file is not None and not isinstance(file, str):
            raise _fail(where, f"variant '{label}': config must be a path, got {file!r}")
        changes = {**flatten(tree), **keys}
        out.append((label, overlay(tree, unflatten(keys)), changes, keys))
    return out


def _trials(base: dict[str, Any], variants: list, grid: dict[str, list[Any]], ofat: dict[str, list[Any]],
            override: dict[str, Any], where: str) -> list[Trial]:
    grid_points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] if grid else [{}]
    named = variants or [("", {}, {}, {})]
    reference = _effective(base)
    trials, slugs = [], set()
    for vname, vtree, vchanges, _ in named:
        start = overlay(base, vtree)
        for gpoint, opoint in itertools.product(grid_points, _ofat_points(start, ofat)):
            point = {**gpoint, **opoint}
            parts = [vname] if vname else []
            parts += [f"{k}={value_text(v)}" for k, v in point.items()]
            label = ", ".join(parts) or "base"
            stem, n = slug(label), 2
            unique = stem
            while unique in slugs:
                unique, n = f"{stem}-{n}", n + 1
            slugs.add(unique)
            raw = overlay(overlay(start, unflatten(point)), unflatten(override))
            changes = {k: v for k, v in {**vchanges, **point}.items() if reference.get(k, _MISSING) != v}
            trials.append(Trial(label, unique, changes, raw))
    return trials


def _effective(tree: dict[str, Any]) -> dict[str, Any]:
    """The dotted values ``tree`` amounts to, t2i's defaults included."""
    try:
        return flatten(resolve(tree).to_dict())
    except (UsageError, ValueError, TypeError):  # reported, naming the trial, when the runs are validated
        return flatten(tree)


def _ofat_points(start: dict[str, Any], ofat: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The base point, then each axis value that differs from the base's own (defaults included) alone."""
    reference = _effective(start)
    points: list[dict[str, Any]] = [{}]
    for key, values in ofat.items():
        points += [{key: v} for v in values if reference.get(key, _MISSING) != v]
    return points


_MISSING = object()


def _plan_runs(spec: StudySpec, metrics: list[str] | None, overrides: dict[str, Any]) -> list[PlannedRun]:
    return [_plan_run(spec, trial, seed, metrics, overrides) for trial in spec.trials for seed in spec.seeds]


def _plan_run(spec: StudySpec, trial: Trial, seed: int, metrics: list[str] | None,
              overrides: dict[str, Any]) -> PlannedRun:
    raw = copy.deepcopy(trial.raw)
    if metrics is not None:
        set_path(raw, "eval.metrics", list(metrics))
    set_path(raw, "train.seed", seed)
    for key in BUDGET_KEYS:  # the budget is the only stop condition
        if spec.budget:
            set_path(raw, f"train.{key}", spec.budget.get(key))
    raw = overlay(raw, unflatten(overrides))
    label = f"trial '{trial.label}' (seed {seed})"
    return PlannedRun(trial, seed, f"{trial.slug}-seed{seed}", raw, validate(raw, label))


def validate(raw: Mapping[str, Any], label: str) -> ExperimentConfig:
    """Resolve ``raw`` and check every component name and option without building anything heavy."""
    try:
        cfg = resolve(raw)
        for kind, comp in (("datasets", (cfg.data.name, cfg.data.options)),
                           ("text_encoders", (cfg.text_encoder.name, cfg.text_encoder.options)),
                           ("generators", (cfg.generator.name, cfg.generator.options)),
                           ("discriminators", (cfg.discriminator.name, cfg.discriminator.options))):
            registry(kind).make_config(*comp)
        for kind, comp in (("generators", cfg.generator), ("discriminators", cfg.discriminator)):
            supported = getattr(registry(kind).get(comp.name).factory, "resolutions", None)
            if supported and cfg.data.resolution not in supported:
                raise ConfigError(f"{registry(kind).noun} '{comp.name}' supports resolutions "
                                  f"{', '.join(map(str, supported))}, not data.resolution = {cfg.data.resolution}")
        losses = registry("losses")
        if loss_role(losses.get(cfg.loss.adversarial).factory) == "term":
            raise ConfigError(f"loss.adversarial: '{cfg.loss.adversarial}' is a loss term, not an adversarial loss")
        losses.make_config(cfg.loss.adversarial, cfg.loss.options)
        for term, weight in cfg.loss.terms.items():
            if loss_role(losses.get(term).factory) == "adversarial":
                raise ConfigError(f"loss.terms.{term}: '{term}' is an adversarial loss, not a term")
            losses.make_config(term, cfg.loss.term_options.get(term, {}))
        unused = set(cfg.eval.options) - set(cfg.eval.metrics)
        if unused:
            raise ConfigError(f"eval.options has options for metrics that are not computed: {', '.join(sorted(unused))}")
        for metric in cfg.eval.metrics:
            registry("metrics").make_config(metric, cfg.eval.options.get(metric, {}))
    except UsageError as exc:
        raise UsageError(f"{label}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{label}: {exc}") from None
    return cfg

"""Sharing a trained model: a self-contained model folder (``t2i export``), the Hugging Face Hub (``t2i push``),
and finding a shared model again (:func:`pretrained_folder`, behind :meth:`t2i.runs.Sampler.from_pretrained`
and ``t2i sample hf://ORG/NAME``).

An exported model folder holds what sampling needs and what a reader wants to know, nothing that needs the
code that trained it::

    README.md                   the model card: Hub metadata (YAML), components and the distributions that
                                provide them, training data, steps and time, evaluation with its protocol,
                                health verdicts, the command that reproduces the run, how to load it
    meta.json                   step, resolved config, the text encoder's non-tensor state, and "export":
                                which generator weights, every component with its distribution and version
    config.toml                 the run's resolved config (``t2i run --config config.toml`` reproduces it)
    generator_ema.safetensors   the generator sampled from: the EMA when the run kept one
                                (``generator.safetensors`` when not, or with ``ema=False``)
    text_encoder.safetensors
    samples.png                 the run's sample grid at the exported step, when there is one
    eval.json, health.json      the run's evaluation (at the exported step) and training-health verdicts

``meta.json`` and the weights are laid out as in a checkpoint folder, so whatever reads a checkpoint
(:meth:`t2i.runs.Sampler.load`, ``t2i sample``, ``t2i eval``'s loader) reads an export. The folder is
assembled beside its destination and renamed into place: it is complete or absent.

Loading from the Hub goes through ``huggingface_hub.snapshot_download``, so its cache (``HF_HOME``,
``HF_HUB_CACHE``) and token are the usual ones; with ``HF_HUB_OFFLINE=1`` only the cache is read.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import UsageError

__all__ = [
    "EXPORT_FORMAT", "DEFAULT_LICENSE", "export_model", "push_model", "pretrained_folder", "check_installed",
    "model_card", "atomic_folder", "check_new_folder", "is_export",
]

EXPORT_FORMAT = 1
DEFAULT_LICENSE = "other"  # the Hub's word for "not one of the listed licences": the exporter chose none
HUB_SCHEME = "hf://"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_LICENSE = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
# what a model needs to load (kind of registry, config path of the name); the rest is recorded for the card
_LOAD_ROLES = {"generator": "generators", "text_encoder": "text_encoders"}


# --------------------------------------------------------------------------------------------------
# Folders written whole


def check_new_folder(dest: str | Path, *, what: str = "folder", hint: str = "") -> None:
    """Refuse ``dest`` as the destination of a new folder unless it is absent or an empty folder."""
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} is a file; the {what} is written as a folder")
    if dest.is_dir() and any(dest.iterdir()):
        raise UsageError(f"{dest} already exists and is not empty; write the {what} to a new folder{hint}")


@contextlib.contextmanager
def atomic_folder(dest: str | Path, *, replace: bool = False, what: str = "folder", hint: str = "") -> Iterator[Path]:
    """Yield an empty temporary folder beside ``dest``; when the block succeeds it becomes ``dest``.

    ``dest`` may not exist or be empty; with ``replace`` an existing ``dest`` is swapped out (and deleted) once
    the new one is complete. On an exception nothing is left behind and ``dest`` is as it was. ``what`` names
    the folder and ``hint`` ends the refusal of a non-empty ``dest``.
    """
    dest = Path(dest).expanduser()
    if not replace:
        check_new_folder(dest, what=what, hint=hint)
    elif dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} is a file; the {what} is written as a folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = dest.with_name(f".{dest.name}.tmp-{tag}")
    tmp.mkdir()
    try:
        yield tmp
        if dest.is_dir():
            old = dest.with_name(f".{dest.name}.old-{tag}")
            os.rename(dest, old)
            os.rename(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Export


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is a model folder :func:`export_model` wrote."""
    meta = Path(path) / "meta.json"
    if not meta.is_file():
        return False
    try:
        return "export" in json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return False


def _find_checkpoint(source: Path) -> tuple[Path, Path | None]:
    """(checkpoint folder, its run folder or ``None``) for a run folder or a ``checkpoints/step_*`` folder."""
    from .engine.checkpoint import latest_checkpoint

    if not source.exists():
        raise UsageError(f"{source} does not exist; pass a run folder (runs/<name>) or one of its checkpoints/step_* folders")
    if is_export(source):
        raise UsageError(f"{source} is already an exported model folder; push it or copy it as it is")
    if (source / "meta.json").is_file():
        run = source.parent.parent if source.parent.name == "checkpoints" else None
        return source, run if run is not None and (run / "config.toml").is_file() else None
    ckpt = latest_checkpoint(source / "checkpoints")
    if ckpt is None:
        raise UsageError(f"{source} is neither a t2i run folder with checkpoints nor a checkpoint folder")
    return ckpt, source


def _component(kind: str, name: str) -> dict[str, Any]:
    """``{"name", "distribution", "version"}`` of a registered component (distribution ``None`` when this
    installation lacks it)."""
    from .plugins import registry

    reg = registry(kind, check=False)
    if name not in reg:
        return {"name": name, "distribution": None, "version": None}
    entry = reg.get(name)
    return {"name": name, "distribution": entry.plugin, "version": entry.version or None}


def _components(cfg: Any) -> dict[str, Any]:
    found = {
        "generator": _component("generators", cfg.generator.name),
        "text_encoder": _component("text_encoders", cfg.text_encoder.name),
        "discriminator": _component("discriminators", cfg.discriminator.name),
        "data": _component("datasets", cfg.data.name),
        "loss": _component("losses", cfg.loss.adversarial),
        "terms": [_component("losses", t) | {"weight": w} for t, w in cfg.loss.terms.items() if w],
    }
    for role, kind in _LOAD_ROLES.items():
        if found[role]["distribution"] is None:
            noun = kind[:-1].replace("_", " ")
            raise UsageError(f"cannot export: the {noun} '{found[role]['name']}' is not installed here, so the model "
                             f"card cannot say which distribution provides it; install its plugin first")
    return found


def export_model(
    source: str | Path,
    dest: str | Path,
    *,
    ema: bool = True,
    license: str = DEFAULT_LICENSE,
    repo_id: str | None = None,
    replace: bool = False,
) -> Path:
    """Write the model folder of ``source`` (a run folder: its latest checkpoint; or a ``checkpoints/step_*``
    folder) to ``dest``; return ``dest``.

    ``ema``: the EMA generator when the run kept one (else the raw weights, as with ``ema=False``).
    ``license``: the Hub licence id for the card's metadata (``mit``, ``apache-2.0``, ``cc-by-4.0``...); the
    default ``other`` says no licence was chosen. ``repo_id``: the Hub repo the card's usage lines name (else
    they name ``dest``). ``replace``: overwrite a previous export at ``dest`` (never any other folder).
    """
    from . import __version__
    from .config import resolve, save_toml
    from .engine.checkpoint import load_checkpoint, sampling_weights
    from .engine.checkpointer import upgrade_state
    from .fileio import write_text

    if not _LICENSE.match(license):
        raise UsageError(f"--license {license!r}: give a Hub licence id such as mit, apache-2.0 or cc-by-4.0 (or other)")
    if repo_id is not None and not _REPO_ID.match(repo_id):
        raise UsageError(f"{repo_id!r} is not a Hub repo id; expected ORG/NAME")
    source, dest = Path(source).expanduser(), Path(dest).expanduser()
    ckpt_dir, run = _find_checkpoint(source)
    if dest.is_dir() and any(dest.iterdir()) and replace and not is_export(dest):
        raise UsageError(f"{dest} is not an exported t2i model; --overwrite only replaces a previous export")
    ckpt = load_checkpoint(ckpt_dir)
    cfg = resolve(ckpt.meta["config"])
    components = _components(cfg)
    weights = sampling_weights(ckpt.weights, ema=ema)
    elapsed = upgrade_state(ckpt.state).get("stopping", {}).get("elapsed")
    meta = {
        **ckpt.meta,
        "export": {
            "format": EXPORT_FORMAT,
            "weights": weights,
            "source": run.name if run is not None else ckpt_dir.name,
            "exported_by": f"t2i {__version__}",
            "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "training_seconds": float(elapsed) if elapsed is not None else None,
            "license": license,
            "components": components,
        },
    }
    with atomic_folder(dest, replace=replace, what="model", hint=" (--overwrite replaces a previous export)") as tmp:
        for name in (weights, "text_encoder"):
            shutil.copyfile(ckpt_dir / f"{name}.safetensors", tmp / f"{name}.safetensors")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        save_toml(ckpt.meta["config"], tmp / "config.toml")  # as the run wrote it, not re-resolved
        extras = _copy_run_files(run, ckpt.step, tmp)
        write_text(tmp / "README.md", model_card(meta, cfg, extras, repo_id=repo_id, folder=dest))
    return dest


def _copy_run_files(run: Path | None, step: int, dest: Path) -> dict[str, Any]:
    """Copy the sample grid of ``step``, eval.json (when it is of ``step``) and health.json; what the card says."""
    from .engine.health import read_health

    found: dict[str, Any] = {"samples": None, "evaluation": None, "evaluation_step": None, "health": None}
    if run is None:
        return found
    grid = run / "samples" / f"step_{step:08d}.png"
    if grid.is_file():
        shutil.copyfile(grid, dest / "samples.png")
        found["samples"] = "samples.png"
    evaluation = run / "eval.json"
    if evaluation.is_file():
        try:
            report = json.loads(evaluation.read_text())
        except json.JSONDecodeError:
            report = None
        if isinstance(report, dict):
            found["evaluation_step"] = report.get("step")
            if report.get("step") == step and report.get("values"):
                shutil.copyfile(evaluation, dest / "eval.json")
                found["evaluation"] = report
    verdicts = read_health(run)
    found["health"] = verdicts
    (dest / "health.json").write_text(json.dumps([v.to_dict() for v in verdicts], indent=2) + "\n")
    return found


# --------------------------------------------------------------------------------------------------
# The model card


def _yaml_list(key: str, values: list[str]) -> list[str]:
    return [f"{key}:", *[f"- {json.dumps(v)}" for v in values]]


def _protocol_text(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_protocol_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_protocol_text(v) for v in value) + "]"
    return str(value)


def _protocol_lines(name: str, protocol: Any) -> list[str]:
    """A metric's protocol as a bullet with one sub-bullet per field; its ``options`` are left out when every
    one of them is also a field of the protocol (as metrics usually report them)."""
    if not isinstance(protocol, Mapping):
        return [f"- **{name}**: {protocol}"]
    fields = {k: v for k, v in protocol.items() if k != "metric"}
    options = fields.get("options")
    if isinstance(options, Mapping) and all(k in fields and fields[k] == v for k, v in options.items()):
        del fields["options"]
    return [f"- **{name}**", *[f"  - {k}: {_protocol_text(v)}" for k, v in fields.items()]]


def _requirement(c: Mapping[str, Any]) -> str:
    return f"{c['distribution']}=={c['version']}" if c.get("version") else str(c["distribution"])


def model_card(meta: Mapping[str, Any], cfg: Any, extras: Mapping[str, Any], *, repo_id: str | None = None,
               folder: str | Path = ".") -> str:
    """The ``README.md`` of an export: Hub YAML metadata, then the model described for a reader."""
    from .engine.verdicts import verdict_lines
    from .metrics.keys import evaluation_table

    export = meta["export"]
    comps, step = export["components"], int(meta["step"])
    needed = [comps[role] for role in _LOAD_ROLES]
    requirements = sorted({_requirement(c) for c in [*needed, {"distribution": "t2i-core", "version": meta.get("t2i_version")}]})
    training = [comps["discriminator"], comps["data"], comps["loss"], *comps["terms"]]
    training_dists = sorted({_requirement(c) for c in training if c["distribution"]} - set(requirements))
    where = repo_id or str(folder)
    source = f"hf://{repo_id}" if repo_id else str(folder)
    seconds = export.get("training_seconds")
    trained_for = f"{seconds / 60:.1f} min of training" if seconds is not None else "training time not recorded"
    ema = "the exponential moving average of the generator" if export["weights"] == "generator_ema" else "the generator's raw weights"
    data_opts = json.dumps(cfg.data.options) if cfg.data.options else "default options"
    tags = ["t2i", "gan", "text-to-image", f"t2i-generator-{comps['generator']['name']}"]

    lines = ["---", f"license: {export['license']}", "library_name: t2i", "pipeline_tag: text-to-image",
             *_yaml_list("tags", tags), "---", "",
             f"# {export['source']}: a {comps['generator']['name']} text-to-image GAN trained with t2i", "",
             f"Generator `{comps['generator']['name']}` conditioned by the text encoder `{comps['text_encoder']['name']}`, "
             f"trained {step} generator steps on `{cfg.data.name}` at {cfg.data.resolution}x{cfg.data.resolution} px. "
             f"The weights are {ema} (`{export['weights']}.safetensors`).", ""]
    if extras.get("samples"):
        lines += [f"![samples at step {step}]({extras['samples']})", "",
                  f"The run's sample grid at step {step}: fixed noise (columns) x fixed `{cfg.data.sample_split}` "
                  f"captions (rows).", ""]
    lines += ["## Use", "", "```bash", f"pip install {' '.join(requirements)}",
              f't2i sample {source} "your caption" -n 16 -o grid.png', "```", "", "```python",
              "from t2i.runs import Sampler", "",
              f'sampler = Sampler.from_pretrained("{where}")',
              'sampler.grid(["your caption"], n=16).save("grid.png")', "```", "",
              "## Components", "", "Needed to load the model:", "", "| role | component | distribution |", "|---|---|---|"]
    lines += [f"| {role.replace('_', ' ')} | {comps[role]['name']} | {_requirement(comps[role])} |" for role in _LOAD_ROLES]
    lines += ["", "Used in training only:", "", "| role | component | distribution |", "|---|---|---|"]
    for role, c in [("discriminator", comps["discriminator"]), ("data set", comps["data"]), ("adversarial loss", comps["loss"]),
                    *[(f"loss term (weight {c['weight']:g})", c) for c in comps["terms"]]]:
        lines.append(f"| {role} | {c['name']} | {_requirement(c) if c['distribution'] else 'not installed at export'} |")
    lines += ["", "Options of each component are in `config.toml`.", "",
              "## Training", "",
              f"- data: `{cfg.data.name}` ({data_opts}), split `{cfg.data.train_split}`, "
              f"{cfg.data.resolution}x{cfg.data.resolution} px",
              f"- {step} generator steps, batch {cfg.train.batch_size}, {trained_for}",
              f"- loss: {cfg.loss.adversarial} + "
              + (", ".join(f"{c['weight']:g} x {c['name']}" for c in comps["terms"]) or "no terms"),
              f"- exported by {export['exported_by']} at {export['exported_at']}", "",
              "Reproduce it (same distributions installed; the data set must be available as configured):", "",
              "```bash", *([f"pip install {' '.join(training_dists)}"] if training_dists else []),
              "t2i run --config config.toml", "```", ""]
    lines += ["## Evaluation", ""]
    evaluation = extras.get("evaluation")
    if evaluation:
        split = evaluation.get("split", cfg.eval.split)
        lines += [f"At step {step} on the `{split}` split (values and protocol in `eval.json`):", "",
                  *evaluation_table(evaluation["values"]), "", "Protocol of each metric:", ""]
        lines += [line for name, p in evaluation.get("protocol", {}).items() for line in _protocol_lines(name, p)]
        lines.append("")
    elif extras.get("evaluation_step") is not None:
        lines += [f"The run's evaluation is of step {extras['evaluation_step']}, not the exported step {step}; "
                  f"`t2i eval` computes it for these weights.", ""]
    else:
        lines += ["The run computed no metrics; `t2i eval` computes them.", ""]
    lines += ["## Training health", ""]
    if extras.get("health") is not None:
        lines += ["Verdicts of t2i's training-health monitor over the whole run (`health.json`):", "",
                  *verdict_lines(list(extras["health"])), ""]
    else:
        lines += ["Not recorded (exported from a checkpoint folder outside its run).", ""]
    lines += ["## Licence", ""]
    if export["license"] == DEFAULT_LICENSE:
        lines += ["No licence was chosen when this model was exported (`other`); the terms of the training data apply.", ""]
    else:
        lines += [f"`{export['license']}` (Hub licence id).", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Loading: a local folder or a Hub repo


def check_installed(meta: Mapping[str, Any]) -> None:
    """Refuse, in one line naming the distribution to install, a model whose generator or text encoder no
    loaded plugin provides (read from an export's ``meta.json``; a checkpoint's names are left to the registry)."""
    from .plugins import registry
    from .registry import ENV_LOAD

    components = meta.get("export", {}).get("components", {})
    for role, kind in _LOAD_ROLES.items():
        c = components.get(role)
        if not c or c["name"] in registry(kind, check=False):
            continue
        noun = registry(kind, check=False).noun
        hint = f" (or {ENV_LOAD} leaves it out)" if ENV_LOAD in os.environ else " (t2i plugins says why a plugin did not load)"
        raise UsageError(f"this model's {noun} '{c['name']}' comes from {c['distribution']} {c.get('version') or ''}".rstrip()
                         + f", which is not installed{hint}: pip install {c['distribution']}")


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as it is now (``1``/``true``/``yes``/``on``), else huggingface_hub's own setting."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().lower() in {"1", "true", "yes", "on"}
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise UsageError("the Hugging Face Hub needs huggingface_hub: pip install 't2i-core[hub]'") from None
    return huggingface_hub


def pretrained_folder(name: str | Path, *, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The local folder of a model: ``name`` itself when it is a folder, else the snapshot of the Hub repo
    ``ORG/NAME`` (``hf://ORG/NAME`` always means the Hub), downloaded into the HF cache or, with
    ``HF_HUB_OFFLINE=1``, found there."""
    text = str(name)
    hub = text.startswith(HUB_SCHEME)
    if hub:
        text = text[len(HUB_SCHEME):]
    elif Path(text).expanduser().exists():
        return Path(text).expanduser()
    if not _REPO_ID.match(text):
        raise UsageError(f"{name} is neither a folder nor a Hugging Face Hub repo id (ORG/NAME, or hf://ORG/NAME)")
    hf = _hub()
    from huggingface_hub import errors

    from . import __version__

    offline = hub_offline()
    try:
        folder = hf.snapshot_download(text, revision=revision, cache_dir=cache_dir, local_files_only=offline,
                                      library_name="t2i", library_version=__version__)
    except errors.RepositoryNotFoundError:
        raise UsageError(f"no model {text} on the Hugging Face Hub (a private one needs HF_TOKEN or `hf auth login`)") from None
    except errors.RevisionNotFoundError:
        raise UsageError(f"the Hub repo {text} has no revision {revision!r}") from None
    except errors.LocalEntryNotFoundError:
        if offline:
            raise UsageError(f"{text} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
                             f"download it once online (or unset HF_HUB_OFFLINE)") from None
        raise UsageError(f"the Hugging Face Hub cannot be reached and {text} is not in its cache") from None
    except errors.HfHubHTTPError as exc:
        raise UsageError(f"the Hugging Face Hub refused {text}: {_first_line(exc)}") from None
    path = Path(folder)
    if not (path / "meta.json").is_file():
        raise UsageError(f"the Hub repo {text} is not a t2i model (no meta.json); t2i export writes one")
    return path


# --------------------------------------------------------------------------------------------------
# Upload


def push_model(
    source: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    ema: bool = True,
    license: str = DEFAULT_LICENSE,
    token: str | None = None,
) -> str:
    """Upload ``source`` to the Hub model repo ``repo_id`` (created when missing) and return its URL.

    ``source``: an exported model folder (uploaded as it is) or a run / checkpoint folder (exported first into
    a temporary folder, the card naming ``repo_id``). The token is huggingface_hub's: ``token``, else
    ``HF_TOKEN``, else ``hf auth login``'s.
    """
    if not _REPO_ID.match(repo_id):
        raise UsageError(f"{repo_id!r} is not a Hub repo id; expected ORG/NAME")
    source = Path(source).expanduser()
    hf = _hub()
    from huggingface_hub import errors

    unreachable = getattr(errors, "HTTPError", OSError)  # the transport's errors (connection refused, timeout)
    with contextlib.ExitStack() as stack:
        if is_export(source):
            if license != DEFAULT_LICENSE or not ema:
                raise UsageError(f"{source} is already exported; --license and --no-ema apply when exporting a run")
            folder = source
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="t2i-push-"))) / "model"
            export_model(source, folder, ema=ema, license=license, repo_id=repo_id)
        step = json.loads((folder / "meta.json").read_text()).get("step")
        api = hf.HfApi(token=token, library_name="t2i")
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                              commit_message=f"t2i export of {source.name} at step {step}")
        except errors.LocalTokenNotFoundError:
            raise UsageError("pushing to the Hub needs a token: set HF_TOKEN or run `hf auth login`") from None
        except errors.HfHubHTTPError as exc:
            raise UsageError(f"the Hugging Face Hub refused the upload to {repo_id}: {_first_line(exc)}") from None
        except unreachable as exc:
            raise UsageError(f"the Hugging Face Hub cannot be reached: {_first_line(exc)}") from None
    return str(url)

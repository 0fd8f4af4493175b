"""The ``wandb`` logger: one W&B run per t2i run, online with an API key, else offline files to sync later.

Mode (``mode = "auto"``): ``$WANDB_MODE`` if set, else ``online`` when an API key is known (``$WANDB_API_KEY``
or ``wandb login``), else ``offline``: the run is written to ``<dir>/wandb/offline-run-*`` and uploaded
later with ``wandb sync``. ``dir``: the option, else ``$WANDB_DIR``, else the run folder, so an offline
run travels with its t2i run.

What it records:

- config: the resolved t2i config, flattened (``train.lr_g``, ``generator.name``, ...);
- history: every logged record and evaluation by step (``d/total``, ``eval/diversity/collapse_score``), the
  sample grids (``samples``, a ``wandb.Image``) and each evaluation's table (``evaluation``, a
  ``wandb.Table`` of metric and value);
- summary: ``health`` (``ok`` or the verdict codes), ``health/<code>`` (the verdict's lines), a
  ``health_verdicts`` table, ``status`` and the final numbers; an alert per ``error`` verdict when online;
- files: ``summary.md``, ``health.json``, ``eval.json``.

The W&B run id is kept in ``<run>/wandb-run-id``, so a resumed t2i run continues its W&B run.
"""

from __future__ import annotations

import os
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from t2i.loggers import Logger

__all__ = ["WandbConfig", "WandbLogger", "resolve_mode", "ID_FILE"]

ID_FILE = "wandb-run-id"  # in the run folder: the W&B run a resumed run continues
_VERDICT_COLUMNS = ["code", "severity", "first_step", "last_step", "cleared_at", "message", "suggestion"]


@dataclass
class WandbConfig:
    project: str = field(default="t2i", metadata={"help": "W&B project"})
    entity: str = field(default="", metadata={"help": "W&B team or user ('' = the default of the API key)"})
    mode: Literal["auto", "online", "offline", "disabled"] = field(default="auto", metadata={
        "help": "auto: $WANDB_MODE, else online with an API key, else offline (files to 'wandb sync' later)"})
    dir: str = field(default="", metadata={"help": "where wandb writes its files ('' = $WANDB_DIR, else the run folder)"})
    group: str = field(default="", metadata={"help": "W&B group of the run, e.g. a study's name"})


def resolve_mode(mode: str) -> str:
    """``auto`` -> ``$WANDB_MODE``, else ``online`` when an API key is known (``$WANDB_API_KEY``, or ``wandb
    login``'s entry in ``~/.netrc``), else ``offline``."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") or _netrc_key() else "offline"


def _netrc_key() -> bool:
    """``wandb login`` stored a key for the W&B host (``$WANDB_BASE_URL``, default api.wandb.ai) in ~/.netrc."""
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return bool(netrc.netrc().authenticators(host or ""))
    except (OSError, netrc.NetrcParseError):
        return False


def _new_id() -> str:
    """A new W&B run id: 8 lowercase letters and digits, as wandb's own."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


class WandbLogger(Logger):
    """One W&B run per t2i run (see the module's docstring for what goes where)."""

    def __init__(self, cfg: WandbConfig | None = None):
        self.cfg = cfg or WandbConfig()
        self.run: Any = None
        self.mode = ""

    def start(self, run_dir: Path, params: Mapping[str, Any], name: str, *, resumed: bool = False) -> None:
        import wandb

        run_dir = Path(run_dir)
        id_file = run_dir / ID_FILE
        run_id = id_file.read_text().strip() if resumed and id_file.is_file() else _new_id()
        id_file.write_text(run_id + "\n")
        self.mode = resolve_mode(self.cfg.mode)
        folder = Path(self.cfg.dir or os.environ.get("WANDB_DIR") or run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(silent=True, console="off", save_code=False, disable_git=True,
                                  x_save_requirements=False)
        self.run = wandb.init(project=self.cfg.project, entity=self.cfg.entity or None, group=self.cfg.group or None,
                              name=name, id=run_id, resume="allow", mode=self.mode, dir=str(folder),
                              config=dict(params), settings=settings, reinit="create_new")

    def log_scalars(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log(dict(values), step=step)

    def log_image(self, step: int, name: str, path: Path) -> None:
        import wandb

        self.run.log({name: wandb.Image(str(path))}, step=step)

    def log_text(self, name: str, text: str) -> None:
        (Path(self.run.dir) / name).write_text(text, encoding="utf-8")  # the run's files, uploaded with it

    def log_evaluation(self, step: int, values: Mapping[str, float]) -> None:
        import wandb

        table = wandb.Table(columns=["metric", "value"], data=[[k, float(v)] for k, v in values.items()])
        self.run.log({"evaluation": table}, step=step)

    def log_verdicts(self, step: int, verdicts: Sequence[Any]) -> None:
        import wandb

        codes = sorted({v.code for v in verdicts})
        rows = [[v.code, v.severity, v.first_step, v.last_step, v.cleared_at if v.cleared_at is not None else -1,
                 v.message, v.suggestion] for v in verdicts]
        # one summary update (one record), not one per key: a run finished right after keeps all of them
        self.run.summary.update({
            "health": ",".join(codes) or "ok",
            **{f"health/{code}": "\n".join(v.line(status=True) for v in verdicts if v.code == code) for code in codes},
            "health_verdicts": wandb.Table(columns=_VERDICT_COLUMNS, data=rows),
        })
        if self.mode == "online":
            for v in verdicts:
                if v.severity == "error":
                    self.run.alert(title=f"t2i: {v.code}", text=v.line(status=True), level=wandb.AlertLevel.ERROR)

    def finish(self, status: str, final: Mapping[str, float]) -> None:
        self.run.summary.update({"status": status, **{f"final/{k}": v for k, v in final.items()}})
        self.run.finish(exit_code=0 if status == "finished" else 1)
        self.run = None

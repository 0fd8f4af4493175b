"""The core's commands: run, sample, plugins, list, describe. Each parses, validates and calls a library
function (:mod:`t2i.runs`, :mod:`t2i.plugins`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..config import set_path
from ..errors import UsageError
from ..options import parse_assignments
from ..plugins import plugins as loaded_plugins
from ..plugins import registry
from ..registry import KINDS

app = typer.Typer(
    name="t2i",
    help="t2i: train, sample and compare text-to-image GANs built from plug-in components.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=False)


def _table(*columns: str) -> Table:
    """A table whose cells wrap instead of being cut off at the terminal's width."""
    table = Table()
    for column in columns:
        table.add_column(column, overflow="fold")
    return table

COMPONENTS, TRAINING, RUN = "Components", "Training", "Run folder and output"


def _installed(kind: str) -> str:
    return ", ".join(registry(kind).names()) or "none installed"


def _kind(name: str) -> str:
    """'generator', 'generators', 'text-encoder' ... -> the registry kind."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    aliases = {"disc": "discriminators", "discs": "discriminators", "data": "datasets", "data_set": "datasets"}
    for kind, (noun, _) in KINDS.items():
        aliases.update({kind: kind, kind[:-1]: kind, noun.replace(" ", "_"): kind})
    if key in aliases:
        return aliases[key]
    raise UsageError(f"unknown component kind '{name}'; kinds: {', '.join(k.replace('_', '-') for k in KINDS)}")


# ------------------------------------------------------------------------------------------------------
@app.command(no_args_is_help=False)
def run(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML experiment config (a run's config.toml reproduces it)", rich_help_panel=RUN)] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="continue the run in this folder from its latest checkpoint", rich_help_panel=RUN)] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="run folder (default: runs/<date>-<time>-<generator>-<disc>)", rich_help_panel=RUN)] = None,
    generator: Annotated[Optional[str], typer.Option("--generator", help=f"generator (installed: {_installed('generators')})", rich_help_panel=COMPONENTS)] = None,
    disc: Annotated[Optional[str], typer.Option("--disc", "--discriminator", help=f"discriminator (installed: {_installed('discriminators')})", rich_help_panel=COMPONENTS)] = None,
    text_encoder: Annotated[Optional[str], typer.Option("--text-encoder", help=f"text encoder (installed: {_installed('text_encoders')})", rich_help_panel=COMPONENTS)] = None,
    data: Annotated[Optional[str], typer.Option("--data", help=f"data set, NAME or NAME:PATH (installed: {_installed('datasets')})", rich_help_panel=COMPONENTS)] = None,
    resolution: Annotated[Optional[int], typer.Option("--resolution", "-r", help="image side in pixels", rich_help_panel=COMPONENTS)] = None,
    gen_opts: Annotated[Optional[list[str]], typer.Option("-G", help="generator option KEY=VALUE (see t2i describe generator NAME)", rich_help_panel=COMPONENTS)] = None,
    disc_opts: Annotated[Optional[list[str]], typer.Option("-D", help="discriminator option KEY=VALUE", rich_help_panel=COMPONENTS)] = None,
    text_opts: Annotated[Optional[list[str]], typer.Option("-T", help="text encoder option KEY=VALUE", rich_help_panel=COMPONENTS)] = None,
    data_opts: Annotated[Optional[list[str]], typer.Option("-d", help="data set option KEY=VALUE", rich_help_panel=COMPONENTS)] = None,
    loss: Annotated[Optional[str], typer.Option("--loss", help="adversarial loss (see t2i list losses)", rich_help_panel=COMPONENTS)] = None,
    terms: Annotated[Optional[list[str]], typer.Option("--term", help="loss term NAME=WEIGHT (0 turns it off)", rich_help_panel=COMPONENTS)] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="stop after this many generator steps", rich_help_panel=TRAINING)] = None,
    epochs: Annotated[Optional[float], typer.Option("--epochs", help="stop after this many epochs", rich_help_panel=TRAINING)] = None,
    minutes: Annotated[Optional[float], typer.Option("--minutes", help="stop after this much training time", rich_help_panel=TRAINING)] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", rich_help_panel=TRAINING)] = None,
    lr_g: Annotated[Optional[float], typer.Option("--lr-g", help="generator learning rate", rich_help_panel=TRAINING)] = None,
    lr_d: Annotated[Optional[float], typer.Option("--lr-d", help="discriminator learning rate", rich_help_panel=TRAINING)] = None,
    d_steps: Annotated[Optional[int], typer.Option("--d-steps", help="D steps per G step", rich_help_panel=TRAINING)] = None,
    grad_clip: Annotated[Optional[float], typer.Option("--grad-clip", help="max gradient norm (0: off)", rich_help_panel=TRAINING)] = None,
    schedule: Annotated[Optional[str], typer.Option("--schedule", help="constant, cosine_restarts or linear", rich_help_panel=TRAINING)] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="fp32, bf16, fp16 (CUDA) or auto", rich_help_panel=TRAINING)] = None,
    ema: Annotated[Optional[float], typer.Option("--ema", help="EMA decay of G for samples (0: off)", rich_help_panel=TRAINING)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", rich_help_panel=TRAINING)] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda, cuda:N, mps", rich_help_panel=TRAINING)] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option("--checkpoint-every", help="steps between checkpoints", rich_help_panel=RUN)] = None,
    sample_every: Annotated[Optional[int], typer.Option("--sample-every", help="steps between sample grids", rich_help_panel=RUN)] = None,
    log_every: Annotated[Optional[int], typer.Option("--log-every", help="steps between metrics.jsonl lines", rich_help_panel=RUN)] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="any config key: section.key=value (e.g. train.betas=0.5,0.999)", rich_help_panel=RUN)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="log lines instead of a progress bar", rich_help_panel=RUN)] = False,
    nproc: Annotated[Optional[int], typer.Option("--nproc", help="train on N processes of this machine (one per GPU, or CPU processes with Gloo): starts torchrun; global batch = N x --batch-size", rich_help_panel=TRAINING)] = None,
) -> None:
    """Train a text-to-image GAN. With no options: the default recipe on the built-in Shapes data.

    Several GPUs or nodes: [bold]t2i run --nproc N ...[/bold], or [bold]torchrun --nproc_per_node=N -m t2i run ...[/bold]
    (torchrun's --nnodes/--rdzv-endpoint flags for several machines)."""
    from .. import runs
    from ..config import load_toml, merge
    from ..engine import distributed
    from ..engine.trainer import Trainer, count_parameters

    raw: dict[str, Any] = {}
    flags = {
        "generator.name": generator, "discriminator.name": disc, "text_encoder.name": text_encoder,
        "data.resolution": resolution, "loss.adversarial": loss,
        "train.steps": steps, "train.epochs": epochs, "train.minutes": minutes, "train.batch_size": batch_size,
        "train.lr_g": lr_g, "train.lr_d": lr_d, "train.d_steps": d_steps, "train.grad_clip": grad_clip,
        "train.schedule": schedule, "train.precision": precision, "train.ema": ema, "train.seed": seed,
        "train.device": device, "train.checkpoint_every": checkpoint_every, "train.sample_every": sample_every,
        "train.log_every": log_every,
    }
    if data is not None:
        name, _, path = data.partition(":")
        flags["data.name"] = name
        if path:
            set_path(raw, "data.options.root", path)
    for key, value in flags.items():
        if value is not None:
            set_path(raw, key, value)
    for section, items, flag in (("generator", gen_opts, "-G"), ("discriminator", disc_opts, "-D"),
                                 ("text_encoder", text_opts, "-T"), ("data", data_opts, "-d")):
        for key, value in parse_assignments(items, flag).items():
            set_path(raw, f"{section}.options.{key}", value)
    for key, value in parse_assignments(terms, "--term").items():
        set_path(raw, f"loss.terms.{key}", value)
    for key, value in parse_assignments(sets, "--set").items():
        set_path(raw, key, value)

    if resume is not None:
        if out_dir is not None and out_dir != resume:
            raise UsageError("--resume continues the run in its own folder; drop --out")
        cfg = runs.resume_config(resume, merge(load_toml(config), raw) if config else raw)
    else:
        cfg = runs.configure(config, raw)
    if nproc is not None and nproc != 1:  # validated above; the workers get the same arguments and one folder
        if cfg.train.sync_bn:  # refused here, not once per worker behind torchrun's report
            from ..device import pick_device

            distributed.check_sync_bn(pick_device(cfg.train.device), nproc)
        args = _arguments_again(ctx, skip={"nproc", "out_dir"})
        if resume is None:
            args += ["--out", str(runs.new_run_dir(cfg, out_dir))]
        raise typer.Exit(distributed.launch(nproc, ["run", *args]))
    err = Console(stderr=True, soft_wrap=True)
    try:
        with distributed.session(cfg.train.device) as dist_ctx:
            run_dir = resume if resume is not None else distributed.decided_by_rank_zero(lambda: runs.new_run_dir(cfg, out_dir))
            trainer = Trainer(cfg, run_dir, resume=resume is not None, quiet=quiet,
                              rank=dist_ctx.rank, world_size=dist_ctx.world_size)
            if not dist_ctx.is_main:  # rank 0 speaks for the job
                err = Console(stderr=True, quiet=True)
            processes = f" x {dist_ctx.world_size} processes ({dist_ctx.backend})" if dist_ctx.world_size > 1 else ""
            err.print(f"[bold]t2i run[/bold] {'resuming at step ' + str(trainer.step) + ' in' if resume else 'into'} {run_dir}: "
                      f"generator {cfg.generator.name} ({count_parameters(trainer.G):,} parameters), "
                      f"discriminator {cfg.discriminator.name} ({count_parameters(trainer.D):,}), {trainer.device.type}{processes}")
            result = trainer.fit()
    except distributed.RankFailure as exc:
        Console(stderr=True, soft_wrap=True).print(f"t2i: error: {escape(str(exc))}")
        raise typer.Exit(1) from None
    code = {"finished": 0, "interrupted": 130, "diverged": 1}[result.status]
    if not dist_ctx.is_main:
        raise typer.Exit(code)
    if result.status == "interrupted":
        err.print(f"interrupted at step {result.step}; checkpoint saved. Continue with: t2i run --resume {run_dir}")
    elif result.status == "diverged":
        where = f"the last good checkpoint is {result.checkpoint}" if result.checkpoint else "no checkpoint was saved"
        err.print(f"[red]training diverged[/red]: {result.message}; {where}")
    print(f"run folder: {result.run_dir}")
    if result.samples is not None:
        print(f"sample grid: {result.samples}")
    print(f"summary: {result.run_dir / 'summary.md'}")
    if code:
        raise typer.Exit(code)


def _arguments_again(ctx: typer.Context, skip: set[str]) -> list[str]:
    """The command's parsed options as command-line arguments again (for its torchrun workers), minus ``skip``."""
    args: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name in skip or value is None or not param.opts:
            continue
        flag = param.opts[0]
        if getattr(param, "is_flag", False):
            args += [flag] if value else []
            continue
        for item in value if getattr(param, "multiple", False) else [value]:
            args += [flag, str(item)]
    return args


# ------------------------------------------------------------------------------------------------------
@app.command()
def sample(
    source: Annotated[Path, typer.Argument(help="a run folder (its latest checkpoint) or a checkpoints/step_* folder")],
    captions: Annotated[list[str], typer.Argument(help="one or more captions")],
    n: Annotated[int, typer.Option("-n", help="images per caption")] = 16,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="PNG to write (default: <run>/samples/sample-<caption>.png)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="noise seed")] = 0,
    no_ema: Annotated[bool, typer.Option("--no-ema", help="use the raw generator weights, not their EMA")] = False,
    device: Annotated[str, typer.Option("--device")] = "auto",
) -> None:
    """Generate images for captions from a trained run and save them as one grid."""
    from ..engine.grid import save_png
    from ..runs import Sampler, slug

    sampler = Sampler.load(source, device=device, ema=not no_ema)
    grid = sampler.grid(list(captions), n=n, seed=seed)
    if output is None:
        run_dir = sampler.checkpoint.parent.parent
        output = run_dir / "samples" / f"sample-{slug(captions[0])}.png"
    elif output.suffix.lower() != ".png":
        raise UsageError(f"-o {output}: the grid is written as PNG; use a .png file name")
    print(save_png(grid, output))


# ------------------------------------------------------------------------------------------------------
@app.command("eval")
def eval_cmd(
    source: Annotated[Path, typer.Argument(help="a run folder (its latest checkpoint), a checkpoints/step_* folder, or a folder of images")],
    metrics: Annotated[Optional[list[str]], typer.Option("--metric", "-m", help="metric to compute (repeatable; default: the run's eval.metrics; for image folders: fid)")] = None,
    metric_opts: Annotated[Optional[list[str]], typer.Option("-M", help="metric option METRIC.KEY=VALUE, e.g. shapes_accuracy.n=5000")] = None,
    reference: Annotated[Optional[str], typer.Option("--reference", help="compare the image folder SOURCE with this folder, or with a data set NAME[:SPLIT] (e.g. shapes:test)")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="reference split (default: the run's eval.split; for --reference NAME: test)")] = None,
    data_opts: Annotated[Optional[list[str]], typer.Option("-d", help="data set option KEY=VALUE for --reference NAME, e.g. test_size=1000")] = None,
    seed: Annotated[int, typer.Option("--seed", help="noise seed")] = 0,
    output: Annotated[Optional[str], typer.Option("--json", help="also write the values and their protocol to this JSON file ('-': JSON on stdout, the table on stderr)")] = None,
    no_ema: Annotated[bool, typer.Option("--no-ema", help="evaluate the raw generator weights, not their EMA")] = False,
    device: Annotated[str, typer.Option("--device")] = "auto",
) -> None:
    """Compute metrics for a trained generator against the reference split, or for a folder of images against
    another folder or a data set (like torch-fidelity's CLI); print them with their protocol."""
    import json
    import sys

    from ..runs import evaluate_checkpoint

    options: dict[str, dict[str, str]] = {}
    for key, value in parse_assignments(metric_opts, "-M").items():
        metric, dot, field_name = key.partition(".")
        if not dot:
            raise UsageError(f"-M {key}={value}: expected METRIC.KEY=VALUE")
        options.setdefault(metric, {})[field_name] = value
    is_run = (source / "config.toml").is_file() or (source / "meta.json").is_file() or (source / "checkpoints").is_dir()
    if reference is not None or (source.is_dir() and not is_run):
        from ..metrics.compare import evaluate_images

        if reference is not None and split and ":" not in reference and not Path(reference).is_dir():
            reference = f"{reference}:{split}"
        report = evaluate_images(source, reference, metrics=metrics, options=options, device=device,
                                 data_options=parse_assignments(data_opts, "-d"))
        where = f"images {source} vs {reference or 'no reference'}"
    else:
        if data_opts:
            raise UsageError("-d configures a data set given with --reference; a run is evaluated on its own data set")
        report = evaluate_checkpoint(source, metrics=metrics, options=options, split=split, seed=seed, ema=not no_ema, device=device)
        where = f"checkpoint {report['checkpoint']}, reference split '{report['split']}', seed {seed}"
    console = Console(stderr=True, soft_wrap=False) if output == "-" else out
    table = _table("metric", "value")
    for key, value in report["values"].items():
        table.add_row(key, f"{value:.6g}")
    console.print(table)
    console.print(f"{where}; protocol per metric in --json")
    text = json.dumps(report, indent=2) + "\n"
    if output == "-":
        sys.stdout.write(text)
    elif output is not None:
        path = Path(output)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)


# ------------------------------------------------------------------------------------------------------
@app.command("plugins")
def plugins_cmd() -> None:
    """Plugins t2i loaded: distribution, version, hooks, what each registered, and load errors."""
    table = _table("plugin", "distribution", "version", "registers", "status")
    for info in loaded_plugins():
        registered = "; ".join(f"{k.replace('_', ' ')}: {', '.join(v)}" for k, v in info.registered.items())
        table.add_row(info.name, info.distribution, info.version, registered or "-",
                      f"[red]{escape(info.error)}[/red]" if info.error else "ok")
    out.print(table)


@app.command("list")
def list_cmd(
    kind: Annotated[Optional[str], typer.Argument(help="generators, discriminators, text-encoders, losses, metrics, datasets")] = None,
    pattern: Annotated[Optional[str], typer.Argument(help="fnmatch pattern, e.g. 'sa*'")] = None,
) -> None:
    """Registered components, with the plugin that registered each."""
    kinds = [_kind(kind)] if kind else list(KINDS)
    table = _table("kind", "name", "owner", "help")
    for k in kinds:
        reg = registry(k)
        for name in reg.names(pattern):
            entry = reg.get(name)
            table.add_row(reg.noun, name, entry.owner, escape(entry.help))
    out.print(table)


@app.command()
def describe(
    kind: Annotated[str, typer.Argument(help="generator, discriminator, text-encoder, loss, metric, dataset")],
    name: Annotated[str, typer.Argument(help="registered name")],
) -> None:
    """A component's options: name, type, default and help (set them with -G/-D/-T/-d KEY=VALUE)."""
    info = registry(_kind(kind)).describe(name)
    out.print(f"[bold]{info['kind']} {escape(info['name'])}[/bold] ({escape(info['owner'])})")
    if info["help"]:
        out.print(escape(info["help"]))
    if not info["fields"]:
        out.print("no options")
        return
    table = _table("option", "type", "default", "help")
    for row in info["fields"]:
        table.add_row(*(escape(cell) for cell in row))
    out.print(table)


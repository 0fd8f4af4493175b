"""The core's commands: run, sample, export, push, eval, plugins, list, describe. Each parses, validates and
calls a library function (:mod:`t2i.runs`, :mod:`t2i.hub`, :mod:`t2i.plugins`); sample, export and push live in
:mod:`.sample` and :mod:`.share`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..config_tree import set_path
from ..errors import UsageError
from ..options import parse_assignments
from ..plugins import without_entry_point
from ..plugins import plugins as loaded_plugins
from ..plugins import registry
from ..registry import KINDS
from . import tables
from .flags import PANELS, given_config_values, with_config_flags
from .sample import sample_cmd
from .share import export_cmd, push_cmd
from .tables import keep_whole, print_table

app = typer.Typer(
    name="t2i",
    help="t2i: train, sample and compare text-to-image GANs built from plug-in components.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=False)


def _table(*columns: str, names: int = 1) -> Table:
    """A table whose cells wrap at the terminal's width; its first ``names`` columns hold names, which are never
    split (see :mod:`.tables`; print it with :func:`.tables.print_table`)."""
    return tables.table(*columns, names=names)

COMPONENTS, TRAINING, RUN = PANELS["components"], PANELS["training"], PANELS["output"]


def _installed(kind: str) -> str:
    return ", ".join(registry(kind, check=False).names()) or "none installed"


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
@with_config_flags
def run(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML experiment config (a run's config.toml reproduces it)", rich_help_panel=RUN)] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="continue the run in this folder from its latest checkpoint", rich_help_panel=RUN)] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="run folder (default: runs/<date>-<time>-<generator>-<disc>)", rich_help_panel=RUN)] = None,
    generator: Annotated[Optional[str], typer.Option("--generator", help=f"generator (installed: {_installed('generators')})", rich_help_panel=COMPONENTS)] = None,
    disc: Annotated[Optional[str], typer.Option("--disc", "--discriminator", help=f"discriminator (installed: {_installed('discriminators')})", rich_help_panel=COMPONENTS)] = None,
    text_encoder: Annotated[Optional[str], typer.Option("--text-encoder", help=f"text encoder (installed: {_installed('text_encoders')})", rich_help_panel=COMPONENTS)] = None,
    data: Annotated[Optional[str], typer.Option("--data", help=f"data set, NAME or NAME:PATH (installed: {_installed('datasets')})", rich_help_panel=COMPONENTS)] = None,
    gen_opts: Annotated[Optional[list[str]], typer.Option("-G", help="generator option KEY=VALUE (see t2i describe generator NAME)", rich_help_panel=COMPONENTS)] = None,
    disc_opts: Annotated[Optional[list[str]], typer.Option("-D", help="discriminator option KEY=VALUE", rich_help_panel=COMPONENTS)] = None,
    text_opts: Annotated[Optional[list[str]], typer.Option("-T", help="text encoder option KEY=VALUE", rich_help_panel=COMPONENTS)] = None,
    data_opts: Annotated[Optional[list[str]], typer.Option("-d", help="data set option KEY=VALUE", rich_help_panel=COMPONENTS)] = None,
    loss: Annotated[Optional[str], typer.Option("--loss", help="adversarial loss (see t2i list losses)", rich_help_panel=COMPONENTS)] = None,
    terms: Annotated[Optional[list[str]], typer.Option("--term", help="loss term NAME=WEIGHT (0 turns it off)", rich_help_panel=COMPONENTS)] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="any config key: section.key=value (e.g. train.betas=0.5,0.999)", rich_help_panel=RUN)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="log lines instead of a progress bar", rich_help_panel=RUN)] = False,
    loggers: Annotated[Optional[list[str]], typer.Option("--logger", help=f"experiment tracker the run reports to, repeatable; 'none': none (default tensorboard; installed: {_installed('loggers')}; options: --set log.options.NAME.KEY=VALUE)", rich_help_panel=RUN)] = None,
    nproc: Annotated[Optional[int], typer.Option("--nproc", help="train on N processes of this machine (one per GPU, or CPU processes with Gloo): starts torchrun; --batch-size stays the global batch, each process takes 1/N of it", rich_help_panel=TRAINING)] = None,
    **config_values: Any,
) -> None:
    """Train a text-to-image GAN. With no options: the default recipe on the built-in Shapes data.

    Several GPUs or nodes: [bold]t2i run --nproc N ...[/bold], or [bold]torchrun --nproc_per_node=N -m t2i run ...[/bold]
    (torchrun's --nnodes/--rdzv-endpoint flags for several machines)."""
    from .. import runs
    from ..config import layer, load_toml
    from ..engine import distributed
    from ..engine.trainer import Trainer, count_parameters
    from ..loggers import check_loggers

    raw: dict[str, Any] = {}
    flags = {"generator.name": generator, "discriminator.name": disc, "text_encoder.name": text_encoder,
             "loss.adversarial": loss, **given_config_values(config_values)}
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
    if loggers is not None:
        set_path(raw, "log.loggers", check_loggers(loggers))  # 'none' -> []; an unknown name is refused here

    if resume is not None:
        if out_dir is not None and out_dir != resume:
            raise UsageError("--resume continues the run in its own folder; drop --out")
        cfg = runs.resume_config(resume, layer(load_toml(config), raw) if config else raw)
    else:
        cfg = runs.configure(config, raw)
    check_loggers(cfg.log.loggers, cfg.log.options)  # before a process starts or a folder is written
    if nproc is not None and nproc != 1:  # validated above; the workers get the same arguments and one folder
        if cfg.train.sync_bn:  # refused here, not once per worker behind torchrun's report
            from ..device import pick_device

            distributed.check_sync_bn(pick_device(cfg.train.device), nproc)
        args = _arguments_again(ctx, skip={"nproc", "out_dir"})
        if resume is None:
            args += ["--out", str(runs.new_run_dir(cfg, out_dir))]
        raise typer.Exit(distributed.launch(nproc, ["run", *args]))
    err = Console(stderr=True, soft_wrap=True)
    is_main = True

    def announce(trainer: Trainer, dist_ctx: distributed.DistContext) -> None:
        nonlocal err, is_main
        is_main = dist_ctx.is_main
        if not is_main:  # rank 0 speaks for the job
            err = Console(stderr=True, quiet=True)
        processes = f" x {dist_ctx.world_size} processes ({dist_ctx.backend})" if dist_ctx.world_size > 1 else ""
        err.print(f"[bold]t2i run[/bold] {'resuming at step ' + str(trainer.step) + ' in' if resume else 'into'} "
                  f"{trainer.run_dir}: generator {cfg.generator.name} ({count_parameters(trainer.G):,} parameters), "
                  f"discriminator {cfg.discriminator.name} ({count_parameters(trainer.D):,}), {trainer.device.type}{processes}, "
                  f"precision {trainer.precision.described}"
                  f"{', channels_last' if cfg.train.channels_last else ''}")

    try:
        result = runs.train(cfg, resume if resume is not None else (lambda: runs.new_run_dir(cfg, out_dir)),
                            resume=resume is not None, quiet=quiet, on_start=announce)
    except distributed.RankFailure as exc:
        Console(stderr=True, soft_wrap=True).print(f"t2i: error: {escape(str(exc))}")
        raise typer.Exit(1) from None
    code = {"finished": 0, "interrupted": 130, "diverged": 1}[result.status]
    if not is_main:
        raise typer.Exit(code)
    if result.status == "interrupted":
        err.print(f"interrupted at step {result.step}; checkpoint saved. Continue with: t2i run --resume {result.run_dir}")
    elif result.status == "diverged":
        where = f"the last good checkpoint is {result.checkpoint}" if result.checkpoint else "no checkpoint was saved"
        err.print(f"[red]training diverged[/red]: {result.message}; {where}")
    if result.evaluation:
        from ..metrics.keys import evaluation_table

        print(f"evaluation at step {result.step} (protocol in eval.json):", *evaluation_table(result.evaluation), sep="\n")
    print(health_line(result.run_dir / "health.json"))
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
app.command("sample")(sample_cmd)  # cli/sample.py: a grid, a folder of images with captions.jsonl, a GIF
app.command("export")(export_cmd)  # cli/share.py: a self-contained model folder with a model card
app.command("push")(push_cmd)  # cli/share.py: that folder on the Hugging Face Hub


# ------------------------------------------------------------------------------------------------------
def health_line(path: Path) -> str:
    """``health: no problems detected`` or ``health: 2 verdicts: d_wins (warning), ...`` from a run's health.json."""
    try:
        verdicts = json.loads(path.read_text())
    except (OSError, ValueError):
        return "health: not recorded"
    if not verdicts:
        return "health: no problems detected"
    names = ", ".join(f"{v.get('code', '?')} ({v.get('severity', '?')}"
                      f"{', cleared' if v.get('cleared_at') is not None else ''})" for v in verdicts)
    return f"health: {len(verdicts)} verdict{'s' * (len(verdicts) != 1)}: {names} (see summary.md)"


@app.command("eval")
def eval_cmd(
    source: Annotated[Optional[Path], typer.Argument(help="a run folder (its latest checkpoint), a checkpoints/step_* folder, or a folder of images")] = None,
    metrics: Annotated[Optional[list[str]], typer.Option("--metric", "-m", help="metric to compute (repeatable; default: the run's eval.metrics; for image folders: fid)")] = None,
    metric_opts: Annotated[Optional[list[str]], typer.Option("-M", help="metric option METRIC.KEY=VALUE, e.g. shapes_accuracy.n=5000")] = None,
    reference: Annotated[Optional[str], typer.Option("--reference", help="compare the image folder SOURCE with this folder, a data set NAME[:SPLIT] (e.g. shapes:test), or (fid) a stats .npz of mu/sigma")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="reference split (default: the run's eval.split; for --reference NAME: test)")] = None,
    data_opts: Annotated[Optional[list[str]], typer.Option("-d", help="data set option KEY=VALUE for --reference NAME, e.g. test_size=1000")] = None,
    seed: Annotated[int, typer.Option("--seed", help="noise seed")] = 0,
    output: Annotated[Optional[str], typer.Option("--json", help="also write the values and their protocol to this JSON file ('-': JSON on stdout, the table on stderr)")] = None,
    no_ema: Annotated[bool, typer.Option("--no-ema", help="evaluate the raw generator weights, not their EMA")] = False,
    device: Annotated[str, typer.Option("--device")] = "auto",
    save_stats: Annotated[Optional[Path], typer.Option("--save-stats", help="also write mu/sigma of the reference images (pytorch-fid .npz; fid's network and resize) to this file")] = None,
    protocol: Annotated[Optional[str], typer.Option("--protocol", help="apply a paper's evaluation preset (e.g. dfgan-cub); -M/-m/--split that contradict it are refused")] = None,
    list_protocols: Annotated[bool, typer.Option("--list-protocols", help="list the presets: paper, images, statistics, extractor, resize")] = False,
    captions: Annotated[Optional[Path], typer.Option("--captions", help="for a folder of images: a .jsonl of {image, caption} (default: NAME.txt beside each image), for r_precision and clip_score")] = None,
) -> None:
    """Compute metrics for a trained generator against the reference split, or for a folder of images against
    another folder or a data set (like torch-fidelity's CLI); print them with their protocol.

    [bold]--protocol NAME[/bold] applies a paper's evaluation (--list-protocols); [bold]--captions[/bold]: each image's caption."""
    import json
    import sys

    from ..fileio import write_text
    from ..runs import evaluate_checkpoint
    from .eval_options import attach_preset, prepare_request, print_protocols

    if list_protocols:
        print_protocols(out)
        return
    if source is None:
        raise UsageError("t2i eval needs SOURCE: a run folder, a checkpoints/step_* folder or a folder of images")
    options: dict[str, dict[str, str]] = {}
    for key, value in parse_assignments(metric_opts, "-M").items():
        metric, dot, field_name = key.partition(".")
        if not dot:
            raise UsageError(f"-M {key}={value}: expected METRIC.KEY=VALUE")
        options.setdefault(metric, {})[field_name] = value
    is_run = (source / "config.toml").is_file() or (source / "meta.json").is_file() or (source / "checkpoints").is_dir()
    folder = (reference is not None and not (is_run and reference.lower().endswith(".npz"))) or (source.is_dir() and not is_run)
    request = prepare_request(protocol=protocol, metrics=metrics, options=options, split=split, reference=reference, folder=folder)
    metrics, options, split, reference = request.metrics, request.options, request.split, request.reference
    if folder:
        from ..metrics.captioned import evaluate_captioned_folder, needs_captions
        from ..metrics.compare import evaluate_images

        if reference is not None and split and ":" not in reference and not Path(reference).is_dir() and not reference.endswith(".npz"):
            reference = f"{reference}:{split}"
        data_options = parse_assignments(data_opts, "-d")
        if captions is not None or any(needs_captions(m) for m in metrics or []):
            report = evaluate_captioned_folder(source, reference, captions=captions, metrics=metrics, options=options,
                                               device=device, data_options=data_options, save_stats=save_stats)
        else:
            report = evaluate_images(source, reference, metrics=metrics, options=options, device=device,
                                     data_options=data_options, save_stats=save_stats)
        where = f"images {source} vs {reference or 'no reference'}"
    else:
        if data_opts:
            raise UsageError("-d configures a data set given with --reference; a run is evaluated on its own data set")
        if captions is not None:
            raise UsageError("--captions goes with a folder of images; a run generates from its reference split's captions")
        report = evaluate_checkpoint(source, metrics=metrics, options=options, split=split, seed=seed, ema=not no_ema, device=device,
                                     save_stats=save_stats)
        where = f"checkpoint {report['checkpoint']}, reference split '{report['split']}', seed {seed}"
    for note in attach_preset(report, request.applied):
        Console(stderr=True, soft_wrap=True).print(f"note: {escape(note)}")
    if request.applied is not None:
        where += f"; protocol {request.applied.protocol.name}"
    console = Console(stderr=True, soft_wrap=False) if output == "-" else out
    table = _table("metric", "value")
    for key, value in report["values"].items():
        table.add_row(key, f"{value:.6g}")
    print_table(console, table)
    console.print(f"{where}; protocol per metric in --json")
    if "saved_stats" in report:
        console.print(f"reference statistics (mu, sigma) written to {report['saved_stats']}")
    text = json.dumps(report, indent=2) + "\n"
    if output == "-":
        sys.stdout.write(text)
    elif output is not None:
        write_text(Path(output), text)


# ------------------------------------------------------------------------------------------------------
@app.command("plugins")
def plugins_cmd() -> None:
    """Plugins t2i loaded: distribution, version, what each registered, and why any is not loaded.

    Also lists installed distributions that look like t2i plugins but declare no [bold]t2i[/bold] entry point."""
    rows = _table("plugin", "distribution", "version", "registers", names=3)
    for info in [*loaded_plugins(), *without_entry_point()]:
        registered = "; ".join(f"{k.replace('_', ' ')}: {', '.join(v)}" for k, v in info.registered.items())
        keep_whole(rows, "registers", registered.split())
        cell = escape(registered or "-")
        if info.error:
            cell = f"[red]not loaded: {escape(info.error)}[/red]"
        for warning in info.warnings:
            cell += f"\n[yellow]warning: {escape(warning)}[/yellow]"
        rows.add_row(info.name, info.distribution, info.version or "-", cell)
    print_table(out, rows)
    _warn_conflicts(list(KINDS))


def _warn_conflicts(kinds: list[str]) -> None:
    """Names two plugins registered: listed, but refused by run, sample, describe ... until one goes."""
    for line in (line for kind in kinds for line in registry(kind, check=False).problems()):
        Console(stderr=True, soft_wrap=True, highlight=False).print(f"t2i: warning: {escape(line)}")


@app.command("list")
def list_cmd(
    kind: Annotated[Optional[str], typer.Argument(help="generators, discriminators, text-encoders, losses, metrics, datasets, loggers")] = None,
    pattern: Annotated[Optional[str], typer.Argument(help="fnmatch pattern, e.g. 'sa*'")] = None,
) -> None:
    """Registered components, with the plugin that registered each."""
    kinds = [_kind(kind)] if kind else list(KINDS)
    rows = _table("kind", "name", "owner", "help", names=2)
    for k in kinds:
        reg = registry(k, check=False)  # a name registered twice is listed (with both owners), not refused
        for entry in reg.entries(pattern):
            owner = escape(entry.owner)
            if entry.name in reg.conflicts:
                owner = f"[red]{escape(' and '.join(reg.conflicts[entry.name]))} (registered twice)[/red]"
            keep_whole(rows, "owner", entry.owner.split())
            rows.add_row(reg.noun, entry.name, owner, escape(entry.help))
    print_table(out, rows)
    _warn_conflicts(kinds)


@app.command()
def describe(
    kind: Annotated[str, typer.Argument(help="generator, discriminator, text-encoder, loss, metric, dataset, logger")],
    name: Annotated[str, typer.Argument(help="registered name")],
    check: Annotated[bool, typer.Option("--check", help="build it (generator, discriminator, text encoder), run it once on a tiny batch and check what it returns: prints ok, or the problem (exit 2)")] = False,
    options: Annotated[Optional[list[str]], typer.Option("-o", help="with --check: an option KEY=VALUE")] = None,
    resolution: Annotated[Optional[int], typer.Option("--resolution", help="with --check: the resolution to build at (default 32, else the smallest supported)")] = None,
) -> None:
    """A component's options: name, type, default and help (set them with -G/-D/-T/-d KEY=VALUE)."""
    if check:
        from ..engine.preflight import check_component

        out.print(check_component(_kind(kind), name, parse_assignments(options, "-o"), resolution=resolution))
        return
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
    print_table(out, table)


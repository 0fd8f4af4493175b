"""Registries and plugin loading: in-memory plugins, real entry points, T2I_LOAD_PLUGINS, bad plugins."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass, field

import pytest

import t2i
from t2i import plugins
from t2i.errors import ConfigError, DuplicateComponentError, UnknownComponentError
from t2i.registry import KINDS, Registry

from t2i_test_helpers import run_cli


def make_plugin(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, t2i.hookimpl(fn))
    return module


@dataclass
class WidthConfig:
    width: int = field(default=4, metadata={"help": "channels"})
    tags: tuple[int, ...] = ()


def build_width(cfg: WidthConfig, **context):
    return {"cfg": cfg, **context}


# -- the registry API ------------------------------------------------------------------------------------
def test_registry_names_are_naturally_sorted_and_filter_with_wildcards():
    reg = Registry("generators")
    for name in ["sagan", "dcgan", "sagan_128", "sagan_64"]:
        reg.register(name, build_width, config=WidthConfig, plugin="p")
    assert reg.names() == ["dcgan", "sagan", "sagan_64", "sagan_128"]
    assert reg.names("sa*") == ["sagan", "sagan_64", "sagan_128"]
    assert reg.names("x*") == []


def test_create_coerces_string_options_and_passes_context():
    reg = Registry("generators")
    reg.register("w", build_width, config=WidthConfig, plugin="p")
    built = reg.create("w", {"width": "16", "tags": "16,32"}, resolution=64)
    assert built["cfg"] == WidthConfig(width=16, tags=(16, 32))
    assert built["resolution"] == 64
    assert reg.create("w", {"width": None})["cfg"].width == 4  # None means "use the default" (timm)


def test_create_rejects_unknown_and_mistyped_options_naming_them():
    reg = Registry("generators")
    reg.register("w", build_width, config=WidthConfig, plugin="p")
    with pytest.raises(ConfigError, match=r"unknown key .*'widht'.*did you mean 'width'"):
        reg.create("w", {"widht": 3})
    with pytest.raises(ConfigError, match=r"width: expected int, got 'wide'"):
        reg.create("w", {"width": "wide"})


def test_unknown_name_suggests_close_match_and_lists_installed():
    reg = Registry("generators")
    for name in ["dcgan", "sagan", "specnorm"]:
        reg.register(name, build_width, plugin="p")
    with pytest.raises(UnknownComponentError) as err:
        reg.get("sagn")
    assert str(err.value) == "unknown generator 'sagn'; did you mean 'sagan'? installed: dcgan, sagan, specnorm"


def test_duplicate_name_fails_naming_both_plugins():
    reg = Registry("generators")
    reg.register("dcgan", build_width, plugin="t2i-dcgan", version="0.1.0")
    with pytest.raises(DuplicateComponentError, match=r"by t2i-dcgan 0\.1\.0 and by other-gans 2\.0"):
        reg.register("dcgan", build_width, plugin="other-gans", version="2.0")


def test_describe_lists_fields_types_defaults_and_help():
    reg = Registry("generators")
    reg.register("w", build_width, config=WidthConfig, plugin="p", version="1", help="a test generator")
    info = reg.describe("w")
    assert info["owner"] == "p 1" and info["help"] == "a test generator"
    assert info["fields"][0] == ("width", "int", "4", "channels")


def test_a_component_registered_by_reference_is_imported_when_first_used(tmp_path, monkeypatch):
    (tmp_path / "late_nets.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass

        @dataclass
        class LateConfig:
            width: int = 4

        def build_late(cfg, **context):
            return {"cfg": cfg, **context}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("generators")
    reg.register("late", "late_nets:build_late", config="late_nets:LateConfig", help="built late")
    assert "late_nets" not in sys.modules  # registering and listing import nothing
    assert reg.names() == ["late"] and reg.get("late").help == "built late"
    try:
        built = reg.create("late", {"width": "8"}, resolution=32)
        assert built["cfg"].width == 8 and built["resolution"] == 32
        assert reg.describe("late")["fields"][0][:3] == ("width", "int", "4")
    finally:
        sys.modules.pop("late_nets", None)


def test_a_bad_reference_fails_at_registration_or_in_one_line_when_used():
    reg = Registry("generators")
    with pytest.raises(ValueError, match="is not a 'package.module:Name' reference"):
        reg.register("bad", "no_colon_here", help="x")
    reg.register("gone", "t2i_no_such_module.nets:Generator", help="a generator whose module is missing")
    with pytest.raises(t2i.UsageError, match=r"generator 'gone' \(<unknown>\): its factory t2i_no_such_module.nets:Generator "
                                             r"cannot be loaded: No module named 't2i_no_such_module'"):
        reg.create("gone")


def test_loading_plugins_and_listing_names_imports_no_networks():
    """``t2i --help``, ``t2i list`` and ``t2i plugins`` fill the registries; that must not load any network or
    heavy library (they are imported when a component is built)."""
    heavy = ["t2i_dcgan.models", "t2i_sagan.models", "t2i_specnorm.models", "t2i_progressive.models",
             "t2i_dfgan.models", "t2i_minilm.encoder", "timm", "open_clip", "torchvision", "transformers",
             "sentence_transformers", "matplotlib", "tensorboard"]
    code = textwrap.dedent(f"""
        import sys
        import t2i.plugins
        from t2i.registry import KINDS
        assert all(t2i.plugins.registry(kind).names() for kind in KINDS)
        t2i.plugins.plugins()
        print(",".join(m for m in {heavy!r} if m in sys.modules))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


# -- plugins through pluggy ------------------------------------------------------------------------------
def test_core_builtins_register_through_hooks_with_core_as_owner():
    assert t2i.registry("losses").owner("hinge").startswith("t2i-core ")
    assert t2i.registry("datasets").owner("shapes").startswith("t2i-core ")
    assert t2i.registry("text_encoders").owner("bow").startswith("t2i-core ")
    core = [p for p in plugins.plugins() if p.distribution == "t2i-core"]
    assert {p.name for p in core} == set(plugins.BUILTIN_PLUGINS)


def test_in_memory_plugin_registers_and_unregisters():
    plugin = make_plugin(
        "memplug", t2i_register_generators=lambda register: register("memgen", build_width, config=WidthConfig)
    )
    plugins.register_plugin(plugin, name="memplug", distribution="mem-dist", version="9.9")
    try:
        assert "memgen" in t2i.registry("generators")
        assert t2i.registry("generators").owner("memgen") == "mem-dist 9.9"
    finally:
        plugins.unregister_plugin("memplug")
    assert "memgen" not in t2i.registry("generators")


def test_in_memory_plugin_with_duplicate_name_fails_loudly():
    plugin = make_plugin("dup", t2i_register_losses=lambda register: register("hinge", build_width))
    plugins.register_plugin(plugin, name="dup", distribution="dup-dist")
    try:
        with pytest.raises(DuplicateComponentError, match=r"'hinge' is registered twice: by t2i-core .* and by dup-dist"):
            t2i.registry("losses")
    finally:
        plugins.unregister_plugin("dup")


def test_misspelled_hook_is_caught():
    plugin = make_plugin("typo", t2i_register_generator=lambda register: None)
    with pytest.raises(ValueError, match=r"'t2i_register_generator' is not a t2i hook \(did you mean 't2i_register_generators'\?\)"):
        plugins.register_plugin(plugin, name="typo")
    assert "typo" not in {p.name for p in plugins.plugins()}


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A real distribution on sys.path: a module plus a .dist-info with an entry point in group t2i."""
    site = tmp_path / "site"
    (site / "fancy_gans").mkdir(parents=True)
    (site / "fancy_gans" / "__init__.py").write_text(textwrap.dedent("""
        import t2i

        @t2i.hookimpl
        def t2i_register_generators(register):
            register("fancy", lambda cfg=None, **ctx: None, help="a fancy generator")
    """))
    dist = site / "fancy_gans-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fancy-gans\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text("[t2i]\nfancy = fancy_gans\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("fancy_gans", None)


def test_installed_entry_point_appears_and_disappears_when_uninstalled(installed_plugin):
    assert t2i.registry("generators").owner("fancy") == "fancy-gans 1.2.3"
    # "uninstall": remove the distribution's metadata, reload plugins
    import shutil

    shutil.rmtree(installed_plugin / "fancy_gans-1.2.3.dist-info")
    plugins.reset()
    assert "fancy" not in t2i.registry("generators")


def test_t2i_load_plugins_selects_distributions(installed_plugin, monkeypatch):
    monkeypatch.setenv("T2I_LOAD_PLUGINS", "fancy-gans")
    plugins.reset()
    assert t2i.registry("generators").names() == ["fancy"]  # dcgan not loaded
    assert "hinge" in t2i.registry("losses")  # the core's built-ins always are
    monkeypatch.setenv("T2I_LOAD_PLUGINS", "")
    plugins.reset()
    assert t2i.registry("generators").names() == []


def test_broken_plugin_is_reported_not_fatal(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "broken_plugin").mkdir(parents=True)
    (site / "broken_plugin" / "__init__.py").write_text("raise ImportError('needs a missing library')\n")
    dist = site / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[t2i]\nbroken = broken_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    errors = {p.name: p.error for p in plugins.load_errors()}
    assert "needs a missing library" in errors["broken"]
    assert "dcgan" in t2i.registry("generators")


def test_dcgan_plugin_is_a_real_installed_entry_point():
    from importlib import metadata

    eps = {ep.name: ep for ep in metadata.entry_points(group="t2i")}
    assert eps["dcgan"].dist.name == "t2i-dcgan"
    assert t2i.registry("discriminators").owner("dcgan").startswith("t2i-dcgan ")


def test_cli_shows_plugins_and_honours_t2i_load_plugins():
    listed = run_cli("list", "generators")
    assert listed.returncode == 0 and "dcgan" in listed.stdout and "t2i-dcgan" in listed.stdout
    none = run_cli("list", "generators", env={"T2I_LOAD_PLUGINS": ""})
    assert none.returncode == 0 and "dcgan" not in none.stdout
    shown = run_cli("plugins")
    assert shown.returncode == 0 and "t2i-dcgan" in shown.stdout and "t2i.builtins.losses" in shown.stdout


# -- a plugin fails alone (issue 19) -----------------------------------------------------------------------
def install(site, dist: str, source: str | None = None, *, entry_point: bool = True, requires: tuple[str, ...] = ()):
    """Put distribution ``dist`` (module ``dist`` with ``-`` as ``_``) in folder ``site``, as pip would."""
    module = dist.replace("-", "_")
    if source is not None:
        (site / module).mkdir(parents=True)
        (site / module / "__init__.py").write_text(textwrap.dedent(source))
    info = site / f"{module}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\n" + f"Name: {dist}\nVersion: 0.1\n"
                                   + "".join(f"Requires-Dist: {r}\n" for r in requires))
    if entry_point:
        (info / "entry_points.txt").write_text(f"[t2i]\n{module} = {module}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder of installed distributions, on sys.path here and on PYTHONPATH for CLI subprocesses."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", None) and str(folder) in sys.modules[name].__file__:
            del sys.modules[name]


def test_distributions_that_look_like_plugins_but_declare_no_entry_point_are_listed(site):
    install(site, "t2i-forgotten", entry_point=False)
    install(site, "gans-for-t2i", entry_point=False, requires=("t2i-core>=0.1",))
    install(site, "unrelated-tool", entry_point=False, requires=("numpy", "t2i-core; extra == 'dev'"))
    install(site, "t2i-announced", "import t2i\n")
    found = {info.distribution: info for info in plugins.without_entry_point()}
    assert set(found) == {"t2i-forgotten", "gans-for-t2i"}
    assert "[project.entry-points.t2i]" in found["t2i-forgotten"].error and "reinstall" in found["t2i-forgotten"].error
    shown = run_cli("plugins", env={"PYTHONPATH": str(site)})
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if "t2i-forgotten" in line)
    assert "no 't2i' entry point" in row
    assert "[project.entry-points.t2i]" in " ".join(shown.stdout.split())


def test_a_plugin_whose_hook_raises_is_not_loaded_and_what_it_registered_is_taken_back():
    def losses(register):
        raise RuntimeError("needs a GPU")

    plugin = make_plugin("halfway", t2i_register_generators=lambda register: register("halfgen", build_width),
                         t2i_register_losses=losses)
    plugins.register_plugin(plugin, name="halfway", distribution="halfway-gans")
    errors = {p.name: p.error for p in plugins.load_errors()}
    assert re.fullmatch(r"t2i_register_losses raised RuntimeError: needs a GPU \(at test_plugins\.py:\d+\)", errors["halfway"])
    assert "halfgen" not in t2i.registry("generators")  # rolled back
    assert "dcgan" in t2i.registry("generators") and "hinge" in t2i.registry("losses")  # the rest works


def test_a_commands_hook_that_raises_is_undone_and_its_plugin_unloaded():
    import typer

    app = typer.Typer()
    app.command("base")(lambda: None)

    def commands(app):
        app.command("half")(lambda: None)
        raise ValueError("no such option")

    plugin = make_plugin("cmds", t2i_register_commands=commands,
                         t2i_register_generators=lambda register: register("cmdgen", build_width))
    plugins.register_plugin(plugin, name="cmds", distribution="cmd-tools")
    assert "cmdgen" in t2i.registry("generators")
    plugins.add_commands(app)
    names = [c.name for c in app.registered_commands]
    assert names[0] == "base" and "half" not in names  # installed plugins' commands (e.g. demo) may follow
    errors = {p.name: p.error for p in plugins.load_errors()}
    assert errors["cmds"].startswith("t2i_register_commands raised ValueError: no such option (at test_plugins.py:")
    assert "cmdgen" not in t2i.registry("generators")


@pytest.mark.parametrize(
    "name, factory, options, reason",
    [
        ("Bad Name", build_width, {}, r"generator name 'Bad Name' from refused-gans: use lowercase letters"),
        ("lazy", "no_colon_here", {}, r"generator 'lazy' from refused-gans: 'no_colon_here' is not a 'package.module:Name'"),
        ("inst", WidthConfig(), {}, r"generator 'inst' from refused-gans: factory is an instance of WidthConfig"),
        ("cfg", build_width, {"config": WidthConfig()}, r"generator 'cfg' from refused-gans: config must be a dataclass class"),
    ],
)
def test_a_registration_the_registry_refuses_unloads_only_that_plugin(name, factory, options, reason):
    def generators(register):
        register("goodgen", build_width)
        register(name, factory, **options)

    plugins.register_plugin(make_plugin("refused", t2i_register_generators=generators), name="refused",
                            distribution="refused-gans")
    errors = {p.name: p.error for p in plugins.load_errors()}
    assert re.match(reason, errors["refused"]), errors["refused"]
    assert "goodgen" not in t2i.registry("generators") and "dcgan" in t2i.registry("generators")


def test_a_misspelled_hook_is_skipped_with_a_warning_and_the_valid_hooks_load():
    def wrong_arguments(reg, extra):
        pass

    plugin = make_plugin("partly", t2i_register_generator=lambda register: register("lost", build_width),
                         t2i_register_losses=lambda register: register("kept_loss", build_width),
                         t2i_register_metrics=wrong_arguments)
    with pytest.warns(UserWarning) as caught:
        plugins.register_plugin(plugin, name="partly", distribution="partly-gans")
    messages = [str(w.message) for w in caught]
    assert any("'t2i_register_generator' is not a t2i hook (did you mean 't2i_register_generators'?)" in m for m in messages)
    assert any("'t2i_register_metrics' takes (reg, extra), but t2i calls it with (register)" in m for m in messages)
    assert "kept_loss" in t2i.registry("losses")
    info = next(p for p in plugins.plugins() if p.name == "partly")
    assert info.error is None and info.hooks == ["t2i_register_losses"] and len(info.warnings) == 2


FAILING_HOOK = """
    import t2i

    @t2i.hookimpl
    def t2i_register_generators(register):
        register("okgen", "t2i_crashing.nets:Net", help="registered before the crash")
        raise RuntimeError("cannot find my weights")
"""
REFUSED_NAME = """
    import t2i

    @t2i.hookimpl
    def t2i_register_generators(register):
        register("Spaced Name", "t2i_refused.nets:Net", help="x")
"""
DUPLICATE = """
    import t2i

    @t2i.hookimpl
    def t2i_register_losses(register):
        register("hinge", "t2i_other_hinge.nets:Hinge", help="another hinge")
"""
MISSPELLED = """
    import t2i

    @t2i.hookimpl
    def t2i_register_generator(register):
        pass

    @t2i.hookimpl
    def t2i_register_losses(register):
        register("typo_kept", "t2i_typo.nets:Loss", help="kept despite the misspelled hook")
"""


def test_the_cli_keeps_working_around_failing_plugins(site, tmp_path):
    install(site, "t2i-crashing", FAILING_HOOK)
    install(site, "t2i-refused", REFUSED_NAME)
    install(site, "t2i-typo", MISSPELLED)
    env = {"PYTHONPATH": str(site), "COLUMNS": "250"}
    shown = run_cli("plugins", env=env)
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    rows = {line.split("│")[2].strip(): line for line in shown.stdout.splitlines() if line.count("│") > 3}
    assert "not loaded: t2i_register_generators raised RuntimeError: cannot find my weights (at __init__.py:7)" in rows["t2i-crashing"]
    assert "not loaded: generator name 'Spaced Name' from t2i-refused 0.1: use lowercase" in rows["t2i-refused"]
    assert "losses: typo_kept" in rows["t2i-typo"]
    assert "warning: 't2i_register_generator' is not a t2i hook (did you mean 't2i_register_generators'?)" in shown.stdout
    listed = run_cli("list", "generators", env=env)
    assert listed.returncode == 0 and "dcgan" in listed.stdout and "okgen" not in listed.stdout
    assert "t2i: warning: plugin t2i_crashing (t2i-crashing) not loaded: t2i_register_generators raised" in listed.stderr
    assert "t2i: warning: plugin t2i_typo (t2i-typo): 't2i_register_generator' is not a t2i hook" in listed.stderr
    run = run_cli("run", "-d", "train_size=16", "-d", "test_size=8", "-G", "ngf=8", "-D", "ndf=8", "-T", "dim=8",
                  "--batch-size", "8", "--steps", "1", "--sample-every", "0", "--checkpoint-every", "0",
                  "--device", "cpu", "--set", "eval.metrics=", "--out", str(tmp_path / "run"), "--quiet", env=env)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr and "not loaded" in run.stderr


def test_a_name_registered_twice_is_listed_but_refused_for_running_with_how_to_choose(site, tmp_path):
    install(site, "t2i-other-hinge", DUPLICATE)
    env = {"PYTHONPATH": str(site), "COLUMNS": "250"}
    for args in (["plugins"], ["list"], ["list", "losses"]):
        shown = run_cli(*args, env=env)
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, (args, shown.stderr)
        assert "T2I_LOAD_PLUGINS=" in shown.stderr and "uninstall one of them" in shown.stderr, args
    listed = run_cli("list", "losses", env=env)
    hinge = next(line for line in listed.stdout.splitlines() if " hinge " in line)
    assert "t2i-core" in hinge and "t2i-other-hinge 0.1" in hinge and "registered twice" in hinge
    run = run_cli("run", "--steps", "1", "--out", str(tmp_path / "run"), env=env)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("t2i: error: loss 'hinge' is registered twice: by t2i-core ")
    assert "and by t2i-other-hinge 0.1; uninstall one of them, or load only some plugins with T2I_LOAD_PLUGINS=" in lines[0]
    assert not (tmp_path / "run").exists()
    # choosing: leave the other distribution out
    chosen = run_cli("list", "losses", env={**env, "T2I_LOAD_PLUGINS": "t2i-dcgan"})
    assert chosen.returncode == 0 and "t2i-other-hinge" not in chosen.stdout + chosen.stderr


def test_tables_never_split_a_name_at_80_columns(site):
    install(site, "t2i-forgotten", entry_point=False)
    env = {"PYTHONPATH": str(site), "COLUMNS": "80"}
    listed, shown = run_cli("list", env=env), run_cli("plugins", env=env)
    assert listed.returncode == 0 and shown.returncode == 0, listed.stderr + shown.stderr
    for proc in (listed, shown):
        assert max(len(line) for line in proc.stdout.splitlines()) <= 80

    def whole(name: str, text: str) -> bool:
        return any(re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", line) for line in text.splitlines())

    names = [n for kind in KINDS for n in t2i.registry(kind).names()]
    infos = plugins.plugins() + plugins.without_entry_point()
    for name in names:
        assert whole(name, listed.stdout), name
        assert whole(name, shown.stdout), name
    for info in infos:
        assert whole(info.name, shown.stdout) and whole(info.distribution, shown.stdout), info.name
    for owner in {t2i.registry(kind).owner(n).split()[0] for kind in KINDS for n in t2i.registry(kind).names()}:
        assert whole(owner, listed.stdout), owner

"""Registries and plugin loading: in-memory plugins, real entry points, T2I_LOAD_PLUGINS, bad plugins."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass, field

import pytest

import t2i
from t2i import plugins
from t2i.errors import ConfigError, DuplicateComponentError, UnknownComponentError
from t2i.registry import Registry

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
             "t2i_minilm.encoder", "timm", "open_clip", "torchvision", "transformers", "sentence_transformers",
             "matplotlib", "tensorboard"]
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

"""The documentation site builds with --strict (a broken reference, a missing page or an unknown API name
fails), and its command-line page is generated from the installed Typer app."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MKDOCS = shutil.which("mkdocs", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if MKDOCS is None:
        pytest.fail("mkdocs is not installed in this environment: run `make install` (requirements-dev.txt)")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([MKDOCS, "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.mark.slow
def test_site_builds_strict_with_api_and_tutorial_pages(site: Path) -> None:
    for page in ("index.html", "tutorials/write-a-plugin/index.html", "plugin-guide/index.html",
                 "reference/interfaces/index.html", "reference/testing/index.html", "reference/nn/index.html"):
        assert (site / page).is_file(), page
    interfaces = (site / "reference/interfaces/index.html").read_text()
    assert "StepOutputs" in interfaces and "check_needs" in interfaces  # rendered from the docstrings


@pytest.mark.slow
def test_cli_page_is_generated_from_the_app(site: Path) -> None:
    cli = (site / "cli/index.html").read_text()
    assert "t2i-cli-reference" not in cli  # the marker was replaced
    for text in ("t2i run", "--steps", "t2i study run", "t2i describe", "t2i data inspect"):
        assert text in cli, text


def test_a_broken_reference_fails_the_strict_build(tmp_path: Path) -> None:
    """The guard the site relies on: --strict turns an unknown API name into a failed build."""
    if MKDOCS is None:
        pytest.fail("mkdocs is not installed in this environment: run `make install` (requirements-dev.txt)")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# x\n\n::: t2i.no_such_module\n")
    (tmp_path / "mkdocs.yml").write_text(
        "site_name: x\nplugins:\n  - mkdocstrings:\n      handlers:\n        python:\n"
        f"          paths: [{ROOT / 'packages/t2i-core/src'}]\n"
    )
    proc = subprocess.run([MKDOCS, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "t2i.no_such_module" in proc.stdout + proc.stderr

"""The project's shape: shipped copies agree, every command is documented, the wheel is whole."""

from __future__ import annotations

import filecmp
import subprocess
import sys
import zipfile
from pathlib import Path

import click
import pytest

from digest.cli import cli
from digest.render import PACKAGED_TEMPLATES
from digest.sample import sample_config
from tests.conftest import ROOT


def test_top_level_config_is_the_sample_config() -> None:
    assert (ROOT / "config.toml").read_text() == sample_config("digest/data/sample-feed.xml")


def test_top_level_email_templates_are_the_packaged_ones() -> None:
    def same(a: Path, b: Path) -> None:
        cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
        assert not cmp.left_only and not cmp.right_only, (cmp.left_only, cmp.right_only)
        _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
        assert not mismatch and not errors, f"differ: {mismatch}; copy digest/email_templates"
        for sub in cmp.common_dirs:
            same(a / sub, b / sub)

    same(ROOT / "email_templates", PACKAGED_TEMPLATES)


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        full = f"{prefix}{name}"
        found.append((full, command))
        if isinstance(command, click.Group):
            found += _commands(command, full + " ")
    return found


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, command in _commands(cli):
        assert (command.help or "").strip(), f"`digest {name}` has no help text"
        assert f"digest {name}" in readme, f"`digest {name}` is not in README.md"


def test_readme_opens_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text()[:2500]
    assert "make demo" in head and "make test" in head


@pytest.mark.slow
def test_the_wheel_carries_templates_data_and_migrations(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("digest-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("digest/email_templates/digest.mjml.j2", "digest/email_templates/digest.txt.j2",
                   "digest/email_templates/partials/article.mjml.j2",
                   "digest/data/sample-feed.xml", "digest/data/config.toml.in",
                   "digest/data/sample-images/convoy.png", "digest/migrations/env.py",
                   "digest/migrations/script.py.mako",
                   "digest/migrations/versions/0001_initial.py", "digest/py.typed"):
        assert needed in names, f"{needed} is missing from the wheel"
    # Run the demo from the unpacked wheel alone (not the source tree).
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    ran = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "import digest, pathlib; "
         "assert str(pathlib.Path(digest.__file__)).startswith(sys.argv[1]); "
         "from digest.cli import main; sys.argv = ['digest', 'demo', '--out', sys.argv[2]]; main()",
         str(unpacked), str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert len(list((tmp_path / "demo" / "outbox").glob("*.eml"))) == 3

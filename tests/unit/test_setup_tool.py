"""`make setup` checks the interpreter first and keys its stamp by it; the Makefile finds .venv."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _setup_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("handoff_setup_tool", ROOT / "tools/setup.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_supported_pythons_are_read_from_pyproject() -> None:
    tool = _setup_tool()

    assert tool.supported_versions((ROOT / "pyproject.toml").read_text()) == ((3, 11), (3, 12))


def test_the_running_interpreter_is_a_supported_one() -> None:
    tool = _setup_tool()
    low, high = tool.supported_versions((ROOT / "pyproject.toml").read_text())

    assert tool.version_problem(sys.version_info[:2], low, high, sys.executable) == ""


@pytest.mark.parametrize("version", [(3, 10), (3, 12), (3, 13)])
def test_another_python_gets_a_plain_message_naming_the_one_needed(
    version: tuple[int, int],
) -> None:
    tool = _setup_tool()

    message = tool.version_problem(version, (3, 11), (3, 12), "/usr/bin/python3")

    assert f"Handoff needs Python 3.11; /usr/bin/python3 is Python {version[0]}.{version[1]}" in (
        message
    )
    assert "make setup PYTHON=python3.11" in message


def test_the_stamp_changes_with_the_interpreter() -> None:
    tool = _setup_tool()
    one = tool.stamp_name(ROOT, "/usr/bin/python3.11", "/usr", "3.11.2")

    assert one == tool.stamp_name(ROOT, "/usr/bin/python3.11", "/usr", "3.11.2")
    assert one != tool.stamp_name(ROOT, "/usr/bin/python3.12", "/usr", "3.12.1")
    assert one != tool.stamp_name(ROOT, "/work/.venv/bin/python", "/work/.venv", "3.11.2")


def test_setup_refuses_an_unsupported_python_before_installing_anything(tmp_path: Path) -> None:
    # A copy of the tool in a project that asks for a Python this one is not.
    (tmp_path / "tools").mkdir()
    shutil.copy(ROOT / "tools/setup.py", tmp_path / "tools/setup.py")
    major, minor = sys.version_info[:2]
    (tmp_path / "pyproject.toml").write_text(
        f'[project]\nrequires-python = ">={major}.{minor + 1},<{major}.{minor + 2}"\n'
    )

    done = subprocess.run(
        [sys.executable, str(tmp_path / "tools/setup.py")],
        capture_output=True,
        text=True,
        env={**os.environ, "HANDOFF_HOME": str(tmp_path / "home")},
        check=False,
    )

    assert done.returncode == 1
    assert f"Handoff needs Python {major}.{minor + 1}; " in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".handoff").exists()  # no stamp: nothing was installed
    assert not (tmp_path / "home").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_makefile_uses_dot_venv_once_it_exists_unless_python_is_named(tmp_path: Path) -> None:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}

    def dry_run(*args: str) -> str:
        done = subprocess.run(
            ["make", "-s", "-n", *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert dry_run("test-unit").startswith("python3 -m pytest")
    python = tmp_path / ".venv/bin/python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    assert dry_run("test-unit").startswith(".venv/bin/python -m pytest")
    assert dry_run("test-unit", "PYTHON=python3.11").startswith("python3.11 -m pytest")


def test_make_help_lists_every_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    phony = next(line for line in makefile.splitlines() if line.startswith(".PHONY:"))
    targets = phony.split(":", 1)[1].split()

    for target in targets:
        assert any(line.startswith(f"{target}:") and "##" in line for line in makefile.splitlines())

"""HANDOFF_PURE_PYTHON=1 runs ingest without the compiled scanner, even where it is built."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.ingest import native, store
from services.ingest.extension import PURE_PYTHON_ENV

ROOT = Path(__file__).resolve().parents[2]
EXTENSION = "services.ingest._scan"

_PROBE = f"""
import sys
import services.ingest.services, services.ingest.native as native, services.ingest.store as store
print(native.AVAILABLE, store.number_lines is store._number_lines, {EXTENSION!r} in sys.modules)
"""


def _probe(pure: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != PURE_PYTHON_ENV}
    if pure:
        env[PURE_PYTHON_ENV] = "1"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.skipif(native._scan is None, reason="the extension is not built or not used")
def test_the_switch_keeps_the_built_extension_unloaded() -> None:
    assert _probe(pure=False) == "True False True"  # built, and used by default

    assert _probe(pure=True) == "False True False"  # not imported at all


@pytest.mark.skipif(os.environ.get(PURE_PYTHON_ENV) != "1", reason="a pure-Python run only")
def test_this_pure_python_run_has_not_loaded_the_extension() -> None:
    # Every test module is imported by now: none of them, nor the code, loaded it.
    assert EXTENSION not in sys.modules
    assert not native.AVAILABLE
    assert store.number_lines is store._number_lines

"""Installs Handoff with its dev tools once per change of its build inputs (make setup).

The build inputs are pyproject.toml, setup.py and the C source of the ingest scanner,
which the editable install compiles in place.

pgserver (PostgreSQL binaries for `make run` without DATABASE_URL) goes to
$HANDOFF_HOME/pylib, outside /root: as root it opens up every parent folder of its
binaries and data.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("HANDOFF_HOME", "/var/tmp/handoff"))  # noqa: S108 - dev-only


def _pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
        check=True,
    )


def main() -> int:
    """Install what is missing; print what was done."""
    inputs = ("pyproject.toml", "setup.py", "services/ingest/_scan.c")
    content = b"".join((ROOT / name).read_bytes() for name in inputs)
    digest = hashlib.sha256(content).hexdigest()[:16]
    stamp = ROOT / ".handoff" / f"setup-{digest}"
    pylib = HOME / "pylib"
    if not stamp.exists():
        print("setup: installing handoff and its dev tools", flush=True)
        _pip("-e", f"{ROOT}[dev]")
    # Checked every time: HANDOFF_HOME may have changed, or /var/tmp been cleaned.
    if not (pylib / "pgserver").exists():
        print(f"setup: installing pgserver into {pylib}", flush=True)
        pylib.mkdir(parents=True, exist_ok=True)
        _pip("--target", str(pylib), "pgserver==0.1.4")
    stamp.parent.mkdir(exist_ok=True)
    stamp.write_text("ok\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

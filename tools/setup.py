"""Installs Handoff with its dev tools once per change of its build inputs (make setup).

First it checks the interpreter: Handoff supports exactly the Python versions of
pyproject.toml's requires-python, and says so plainly instead of failing in a dependency's
build. The stamp that skips a repeated install is keyed by the build inputs
(pyproject.toml, setup.py, the C source of the ingest scanner, which the editable install
compiles in place) and by the interpreter, so another Python gets its own install.

With --venv DIR it first makes a virtual environment there (make venv) and installs into
it instead of into the interpreter that runs this script.

pgserver (PostgreSQL binaries for `make run` without DATABASE_URL) goes to
$HANDOFF_HOME/pylib, outside /root: as root it opens up every parent folder of its
binaries and data.
"""

# No `from __future__ import annotations` and only quoted annotations: an old Python must
# get as far as the version check and its plain message.
import argparse
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("HANDOFF_HOME", "/var/tmp/handoff"))  # noqa: S108 - dev-only
BUILD_INPUTS = ("pyproject.toml", "setup.py", "services/ingest/_scan.c")


def supported_versions(pyproject: str) -> "tuple[tuple[int, int], tuple[int, int]]":
    """(lowest, first unsupported) from requires-python = ">=X.Y,<A.B"."""
    found = re.search(
        r'^requires-python\s*=\s*">=(\d+)\.(\d+)\s*,\s*<(\d+)\.(\d+)"', pyproject, re.MULTILINE
    )
    if found is None:
        raise ValueError('pyproject.toml: requires-python must read ">=X.Y,<A.B"')
    low_major, low_minor, high_major, high_minor = (int(g) for g in found.groups())
    return (low_major, low_minor), (high_major, high_minor)


def version_problem(
    version: "tuple[int, int]", low: "tuple[int, int]", high: "tuple[int, int]", executable: str
) -> str:
    """'' when `version` is supported; else the message that says which one is needed."""
    if low <= version < high:
        return ""
    lowest = f"{low[0]}.{low[1]}"
    one_minor = high == (low[0], low[1] + 1)
    wanted = lowest if one_minor else f">={lowest},<{high[0]}.{high[1]}"
    return (
        f"setup: Handoff needs Python {wanted}; {executable} is Python "
        f"{version[0]}.{version[1]}. Install Python {lowest} and name it, e.g. "
        f"`make setup PYTHON=python{lowest}` (or `make venv PYTHON=python{lowest}`)."
    )


def stamp_name(root: Path, executable: str, prefix: str, version: str) -> str:
    """The stamp file for these build inputs installed into this interpreter."""
    digest = hashlib.sha256()
    for name in BUILD_INPUTS:
        digest.update((root / name).read_bytes())
    digest.update(f"\0{executable}\0{prefix}\0{version}".encode())
    return f"setup-{digest.hexdigest()[:16]}"


def externally_managed() -> bool:
    """True when the OS owns this interpreter's packages (PEP 668: pip would refuse)."""
    in_venv = sys.prefix != sys.base_prefix
    marker = Path(sysconfig.get_paths()["stdlib"]) / "EXTERNALLY-MANAGED"
    return not in_venv and marker.exists()


def _pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
        check=True,
    )


def make_venv(folder: Path) -> Path:
    """Create a virtual environment at `folder` unless there is one; return its python."""
    python = folder / "bin" / "python"
    if python.exists():
        return python
    print(f"setup: creating a virtual environment in {folder}", flush=True)
    made = subprocess.run([sys.executable, "-m", "venv", str(folder)], check=False)
    if made.returncode != 0:
        raise SystemExit(
            f"setup: `{sys.executable} -m venv` failed; on Debian or Ubuntu install the "
            f"venv module first (apt-get install python3-venv), then `make venv` again"
        )
    return python


def install() -> int:
    """Install what is missing into this interpreter; print what was done."""
    stamp = ROOT / ".handoff" / stamp_name(ROOT, sys.executable, sys.prefix, sys.version)
    pylib = HOME / "pylib"
    # The stamp alone is not trusted: a package may have been removed since.
    if not stamp.exists() or importlib.util.find_spec("asyncpg") is None:
        if externally_managed():
            print(
                f"setup: {sys.executable} belongs to the operating system (PEP 668), so pip "
                "will not install into it. Run `make venv` to install into .venv instead.",
                file=sys.stderr,
            )
            return 1
        print(f"setup: installing handoff and its dev tools into {sys.prefix}", flush=True)
        _pip("-e", f"{ROOT}[dev]")
    # Checked every time: HANDOFF_HOME may have changed, or /var/tmp been cleaned.
    if not (pylib / "pgserver").exists():
        print(f"setup: installing pgserver into {pylib}", flush=True)
        pylib.mkdir(parents=True, exist_ok=True)
        _pip("--target", str(pylib), "pgserver==0.1.4")
    stamp.parent.mkdir(exist_ok=True)
    stamp.write_text(f"{sys.executable}\n")
    return 0


def main(argv: "list[str] | None" = None) -> int:
    """Check the interpreter, make the venv if asked, install what is missing."""
    parser = argparse.ArgumentParser(prog="tools/setup.py", description=__doc__.split("\n")[0])
    parser.add_argument("--venv", type=Path, metavar="DIR", help="install into a venv at DIR")
    args = parser.parse_args(argv)
    low, high = supported_versions((ROOT / "pyproject.toml").read_text())
    problem = version_problem(sys.version_info[:2], low, high, sys.executable)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    if args.venv is not None:
        folder = args.venv if args.venv.is_absolute() else ROOT / args.venv
        if Path(sys.prefix).resolve() != folder.resolve():
            python = make_venv(folder)
            return subprocess.run([str(python), __file__], check=False).returncode
    return install()


if __name__ == "__main__":
    sys.exit(main())

"""The compiled scanner (`_scan.c`) when it is built and wanted, else None.

`HANDOFF_PURE_PYTHON=1` asks for the Python path even where the extension is built, so
that tests and CI can prove that path on the same machine. It is read once, at import:
the choice holds for the whole process, and nothing imports `_scan` but this module.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE_PYTHON_ENV = "HANDOFF_PURE_PYTHON"


def load_scanner() -> ModuleType | None:
    """The extension module; None when it is not built or HANDOFF_PURE_PYTHON=1."""
    if os.environ.get(PURE_PYTHON_ENV) == "1":
        return None
    try:
        return importlib.import_module("services.ingest._scan")
    except ImportError:  # pragma: no cover - depends on how Handoff was installed
        return None


SCANNER = load_scanner()

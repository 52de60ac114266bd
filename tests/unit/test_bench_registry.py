"""Every benchmark module is run by `make bench` (a merge once dropped two of them)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.bench.__main__ import BENCHES

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


def _has_run(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(n, ast.AsyncFunctionDef) and n.name == "run" for n in tree.body)


def test_every_benchmark_module_is_registered() -> None:
    modules = {p.stem for p in BENCH_DIR.glob("*.py") if p.stem != "__main__" and _has_run(p)}
    assert modules == set(BENCHES)

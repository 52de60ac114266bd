"""The protos say what the server does: their documented codes and limits match the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from services.common.grpc_server import MAX_MESSAGE_BYTES
from services.common.layouts.steps import MAX_VALUE_CHARS
from services.ingest.server import STREAM_IDLE_S, STREAM_MAX_LISTED
from services.ingest.validation import MAX_BATCH_SIZE, MAX_EXTRA_KEY

ROOT = Path(__file__).resolve().parents[2]
INGEST_PROTO = ROOT / "protos/handoff/ingest/v1/ingest.proto"
LAYOUTS_PROTO = ROOT / "protos/handoff/scheduler/v1/layouts.proto"
# Everything that builds the FieldProblems IngestService and AccountService answer with.
CODE_SOURCES = [*sorted((ROOT / "services/ingest").glob("*.py")), ROOT / "services/common/ids.py"]


def _comment_before(proto: str, message: str) -> str:
    """The // comment block directly above `message <name> {`."""
    lines = proto.splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith(f"message {message} {{"))
    start = end
    while start > 0 and lines[start - 1].startswith("//"):
        start -= 1
    return "\n".join(line.removeprefix("//") for line in lines[start:end])


def documented_codes(proto: Path = INGEST_PROTO, message: str = "FieldError") -> set[str]:
    """The codes listed (indented, one per line) in the comment above `message`."""
    comment = _comment_before(proto.read_text(), message)
    return set(re.findall(r"^   ([A-Z][A-Z_]+)  ", comment, flags=re.MULTILINE))


def step_error_codes() -> set[str]:
    """Every code literal the layout engine gives StepError (the first argument)."""
    codes: set[str] = set()
    for path in sorted((ROOT / "services/common/layouts").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            called = getattr(node, "func", None)
            if not isinstance(node, ast.Call) or getattr(called, "id", "") != "StepError":
                continue
            code = node.args[0] if node.args else None
            assert isinstance(code, ast.Constant), f"{path.name}: {ast.unparse(node)}"
            assert isinstance(code.value, str)
            codes.add(code.value)
    return codes


def _code_argument(call: ast.Call) -> ast.expr | None:
    """The `code` of FieldProblem(field, code, message) or of a helper shaped like it."""
    code = call.args[1] if len(call.args) > 1 else None
    return next((k.value for k in call.keywords if k.arg == "code"), code)


def _called_name(call: ast.Call) -> str:
    return str(getattr(call.func, "id", getattr(call.func, "attr", "")))


def _pass_through_helpers(tree: ast.Module) -> set[str]:
    """Functions that take a `code` parameter and hand it to FieldProblem unchanged."""
    helpers = set()
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        if "code" not in {a.arg for a in function.args.args}:
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Call) and _called_name(node) == "FieldProblem":
                code = _code_argument(node)
                if isinstance(code, ast.Name) and code.id == "code":
                    helpers.add(function.name)
    return helpers


def _module_codes(path: Path) -> set[str]:
    """The code literals given to FieldProblem, or to a helper that passes them on."""
    tree = ast.parse(path.read_text())
    takers = {"FieldProblem"} | _pass_through_helpers(tree)
    codes: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or _called_name(node) not in takers:
            continue
        code = _code_argument(node)
        if isinstance(code, ast.Constant) and isinstance(code.value, str):
            codes.add(code.value)
        else:
            passed_on = isinstance(code, ast.Name) and code.id == "code"
            assert passed_on, (
                f"{path.name}: {ast.unparse(node)} chooses its code at run time; list the "
                "codes it can take in ingest.proto and make this test see them"
            )
    return codes


def used_codes() -> set[str]:
    """Every code the ingest service's modules give FieldProblem, directly or via a helper."""
    codes: set[str] = set()
    for path in CODE_SOURCES:
        codes |= _module_codes(path)
    return codes


def test_field_error_codes_in_the_proto_are_exactly_those_the_server_uses() -> None:
    documented, used = documented_codes(), used_codes()

    assert used, "found no codes: has FieldProblem moved?"
    assert used - documented == set(), "used but not documented in ingest.proto's FieldError"
    assert documented - used == set(), "documented in ingest.proto but never used"


def test_preview_problem_codes_in_the_proto_are_exactly_those_the_engine_uses() -> None:
    documented, used = documented_codes(LAYOUTS_PROTO, "RowProblem"), step_error_codes()

    assert used, "found no StepError codes: has StepError moved?"
    assert used == documented


def test_limits_in_the_proto_are_the_servers_limits() -> None:
    proto = INGEST_PROTO.read_text()

    assert f"1 to {MAX_BATCH_SIZE:,} referrals" in _comment_before(proto, "IngestBatchRequest")
    assert f"up to the first {STREAM_MAX_LISTED:,}" in proto
    assert f"1-{MAX_EXTRA_KEY} of A-Z a-z 0-9 _ . -" in _comment_before(proto, "FieldError")
    problem = _comment_before(LAYOUTS_PROTO.read_text(), "RowProblem")
    assert f"longer than {MAX_VALUE_CHARS:,} characters" in problem


def test_ingest_proto_states_the_message_limit_and_the_stream_idle_timeout() -> None:
    text = " ".join(INGEST_PROTO.read_text().replace("//", " ").split())
    assert f"A message may be at most {MAX_MESSAGE_BYTES // 2**20} MiB" in text
    assert f"sends nothing for {STREAM_IDLE_S:g} s" in text

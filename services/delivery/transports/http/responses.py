"""Response rules: how an advertiser's answer is read — accepted, rejected or retry.

Rules are evaluated in order; the first whose conditions all hold decides. A condition is a
status (`200`, `2xx`, `400-499`; empty for any), optionally a JSON path into the body
(`$.status`, `$.data[0].ok`) with the value it must equal (or, without one, that must
exist), and optionally a text the body must contain. After the connection's own rules come
the defaults, so a CRM's `200 {"status":"error"}` needs one rule and nothing else:

    2xx → accepted · 408, 425, 429, 5xx → retry · 410 → disable (the endpoint is gone)
    3xx → retry (redirects are never followed: a moved endpoint is a failure to fix)
    other 4xx → rejected (permanent for that referral)
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from services.common.errors import FieldProblem

_STATUS = re.compile(r"([1-5])xx|([1-5]\d\d)(?:-([1-5]\d\d))?")
_PATH_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\[\"([^\"]*)\"\]")
MAX_RULES = 50


class Outcome(enum.Enum):
    """What an answer means for the referral (and, for DISABLE, for the endpoint)."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"  # permanent for this referral: never retried
    RETRY = "retry"
    DISABLE = "disable"  # stop sending to this endpoint; the referral waits for re-enabling


@dataclass(frozen=True)
class ResponseRule:
    """One rule: conditions (all must hold) and the outcome they decide."""

    outcome: Outcome
    status: str = ""  # "200", "2xx", "400-499"; empty: any
    json_path: str = ""  # "$.status"
    equals: str | None = None  # the JSON value at json_path, as text (true, 3, error)
    contains: str = ""  # a text the body must contain
    name: str = ""  # how attempts name the rule (default: its position)

    def to_json(self) -> dict[str, Any]:
        """The settings form."""
        return {
            "outcome": self.outcome.value,
            "status": self.status,
            "json_path": self.json_path,
            "equals": self.equals,
            "contains": self.contains,
            "name": self.name,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResponseRule:
        """From the settings form."""
        return cls(
            Outcome(data["outcome"]),
            data.get("status", ""),
            data.get("json_path", ""),
            data.get("equals"),
            data.get("contains", ""),
            data.get("name", ""),
        )


@dataclass(frozen=True)
class Verdict:
    """The outcome and the rule that decided it."""

    outcome: Outcome
    rule: str


# A RETRY verdict with this rule asks the live loop to hold every send of the connection
# for the exchange's `retry_after_s` (a vendor's throttling without a Retry-After header;
# a 429 or 503 with one holds anyway).
THROTTLED = "throttled"


def _status_range(text: str) -> tuple[int, int] | None:
    match = _STATUS.fullmatch(text.strip().lower())
    if match is None:
        return None
    klass, low, high = match.groups()
    if klass:
        return int(klass) * 100, int(klass) * 100 + 99
    first, last = int(low), int(high or low)
    return (first, last) if first <= last else None


def _path_steps(path: str) -> list[str | int] | None:
    if not path.startswith("$"):
        return None
    steps: list[str | int] = []
    at = 1
    while at < len(path):
        match = _PATH_STEP.match(path, at)
        if match is None:
            return None
        name, index, quoted = match.groups()
        steps.append(int(index) if index is not None else (name if name is not None else quoted))
        at = match.end()
    return steps


def rule_problems(rules: Sequence[ResponseRule], prefix: str) -> Iterator[FieldProblem]:
    """Every problem of a rule list, named by position."""
    if len(rules) > MAX_RULES:
        yield FieldProblem(prefix, "TOO_MANY", f"at most {MAX_RULES} rules")
    for i, rule in enumerate(rules):
        place = f"{prefix}[{i}]"
        if rule.status and _status_range(rule.status) is None:
            yield FieldProblem(
                f"{place}.status", "INVALID_FORMAT", "a status (200), class (2xx) or range"
            )
        if rule.json_path and _path_steps(rule.json_path) is None:
            yield FieldProblem(
                f"{place}.json_path", "INVALID_FORMAT", 'a path like $.status or $.data[0]["ok"]'
            )
        if rule.equals is not None and not rule.json_path:
            yield FieldProblem(f"{place}.equals", "REQUIRED", "compares the value at json_path")
        if len(rule.contains) > 1000 or len(rule.name) > 100:
            yield FieldProblem(place, "TOO_LONG", "contains ≤ 1000, name ≤ 100 characters")
        if not (rule.status or rule.json_path or rule.contains):
            yield FieldProblem(place, "REQUIRED", "give a status, a json_path or a text")


_MISSING = object()


def _at_path(document: Any, steps: list[str | int]) -> Any:
    node = document
    for step in steps:
        in_list = isinstance(step, int) and isinstance(node, list) and step < len(node)
        in_object = isinstance(step, str) and isinstance(node, dict) and step in node
        if in_list or in_object:
            node = node[step]
        else:
            return _MISSING
    return node


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


class ResponseRules:
    """A connection's rules, compiled, followed by the defaults."""

    def __init__(self, rules: Sequence[ResponseRule]) -> None:
        self._rules = [
            (
                rule,
                _status_range(rule.status) if rule.status else None,
                _path_steps(rule.json_path) if rule.json_path else None,
                rule.name or f"rule {i + 1}",
            )
            for i, rule in enumerate(rules)
        ]
        self._needs_json = any(steps is not None for _, _, steps, _ in self._rules)

    def decide(self, status: int, body: bytes) -> Verdict:
        """The verdict on an answer (`body` is the capped beginning of the answer)."""
        document: Any = _MISSING
        text: str | None = None
        for rule, statuses, steps, name in self._rules:
            if statuses is not None and not statuses[0] <= status <= statuses[1]:
                continue
            if steps is not None:
                if document is _MISSING:
                    try:
                        document = json.loads(body)
                    except ValueError:
                        document = None
                found = _at_path(document, steps)
                if found is _MISSING:
                    continue
                if rule.equals is not None and _as_text(found) != rule.equals:
                    continue
            if rule.contains:
                if text is None:
                    text = body.decode("utf-8", "replace")
                if rule.contains not in text:
                    continue
            return Verdict(rule.outcome, name)
        return default_verdict(status)


def default_verdict(status: int) -> Verdict:
    """The defaults, after every rule of the connection."""
    if 200 <= status < 300:
        return Verdict(Outcome.ACCEPTED, "default: 2xx")
    if 300 <= status < 400:
        return Verdict(Outcome.RETRY, "default: 3xx (redirects are not followed)")
    if status == 410:
        return Verdict(Outcome.DISABLE, "default: 410 gone")
    if status in (408, 425, 429) or status >= 500:
        return Verdict(Outcome.RETRY, f"default: {status}")
    if 400 <= status < 500:
        return Verdict(Outcome.REJECTED, "default: other 4xx")
    return Verdict(Outcome.RETRY, f"default: {status}")

"""A Sailthru connection's settings (secrets apart): the one definition the connection API
validates and stores, the live loop reads (real-time mode: its `LivePolicy` part) and the
delivery engine reads (scheduled mode: the list import).

Secrets (sealed like every connection secret): `api_key` and `api_secret`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal
from urllib.parse import urlsplit

from services.common.errors import FieldProblem
from services.delivery.live.policy import LivePolicy, policy_problems, policy_values
from services.delivery.transports.sailthru.client import DEFAULT_BASE_URL, base_url_problem
from services.delivery.transports.sailthru.payloads import VAR_TYPES

SAILTHRU_SECRET_NAMES = ("api_key", "api_secret")
Mode = Literal["realtime", "scheduled"]
MODES = ("realtime", "scheduled")
MAX_TIMEOUT_S = 60.0
_VAR_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
_LIST_NAME_MAX = 200


@dataclass(frozen=True, kw_only=True)
class SailthruSettings(LivePolicy):
    """Which list referrals join and which vars their profiles get, in real time (one
    `POST /user` each) or scheduled (a list import job per delivery)."""

    list_name: str
    mode: Mode = "realtime"
    # The layout whose columns are the vars (header = var name; the email is the id, not
    # a var). None: the built-in default layout. Scheduled deliveries use the task's layout.
    layout_id: str | None = None
    # Var name → "number", "boolean" or "json" (others are strings).
    var_types: Mapping[str, str] = field(default_factory=dict)
    base_url: str = DEFAULT_BASE_URL
    postback_url: str = ""  # scheduled: Sailthru posts the job's result here
    timeout_s: float = 30.0

    def to_json(self) -> dict[str, Any]:
        """The settings column."""
        out = self.policy_json()
        for f in fields(self):
            if f.name not in out:
                value = getattr(self, f.name)
                out[f.name] = dict(value) if f.name == "var_types" else value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SailthruSettings:
        """From the settings column."""
        values = policy_values(data, cls)
        if "var_types" in values:
            values["var_types"] = dict(values["var_types"])
        return cls(**values)


def sailthru_problems(
    settings: SailthruSettings,
    secrets: Mapping[str, str],
    stored: frozenset[str],
    prefix: str,
    custom_fields: frozenset[str],
) -> list[FieldProblem]:
    """Every problem of Sailthru settings plus secrets (`stored`: secrets kept from before)."""
    p = f"{prefix}sailthru."
    return list(_problems(settings, secrets, stored, p, custom_fields))


def _problems(
    s: SailthruSettings,
    secrets: Mapping[str, str],
    stored: frozenset[str],
    p: str,
    custom_fields: frozenset[str],
) -> Iterator[FieldProblem]:
    has = {n for n in SAILTHRU_SECRET_NAMES if secrets.get(n)} | set(stored)
    for name in SAILTHRU_SECRET_NAMES:
        if name not in has:
            yield FieldProblem(f"{p}{name}", "REQUIRED", "Sailthru signs every call with both")
        elif any(c.isspace() for c in secrets.get(name, "")) or len(secrets.get(name, "")) > 200:
            yield FieldProblem(f"{p}{name}", "INVALID_FORMAT", "no spaces, at most 200 characters")
    name = s.list_name.strip()
    if not name:
        yield FieldProblem(f"{p}list_name", "REQUIRED", "the Sailthru list referrals join")
    elif len(name) > _LIST_NAME_MAX or any(ord(c) < 32 for c in name):
        yield FieldProblem(f"{p}list_name", "INVALID_FORMAT", "one line, at most 200 characters")
    if s.mode not in MODES:
        yield FieldProblem(f"{p}mode", "UNKNOWN_CODE", "realtime or scheduled")
    if s.layout_id is not None:
        try:
            uuid.UUID(s.layout_id)
        except ValueError:
            yield FieldProblem(f"{p}layout_id", "INVALID_FORMAT", "a layout id")
    for var, kind in s.var_types.items():
        if not _VAR_NAME.fullmatch(var):
            yield FieldProblem(
                f"{p}var_types.{var[:40]}", "INVALID_FORMAT", "letters, digits and _ (≤ 64)"
            )
        if kind not in VAR_TYPES:
            yield FieldProblem(f"{p}var_types.{var[:40]}", "UNKNOWN_CODE", f"one of {VAR_TYPES}")
    problem = base_url_problem(s.base_url)
    if problem is not None:
        code = "INSECURE" if "TLS" in problem else "INVALID_FORMAT"
        yield FieldProblem(f"{p}base_url", code, problem)
    if s.postback_url:
        parts = urlsplit(s.postback_url)
        if parts.scheme != "https" or not parts.hostname:
            yield FieldProblem(f"{p}postback_url", "INSECURE", "an https:// URL Sailthru can reach")
    if not 0 < s.timeout_s <= MAX_TIMEOUT_S:
        yield FieldProblem(f"{p}timeout_s", "OUT_OF_RANGE", f"0-{MAX_TIMEOUT_S:g} s")
    yield from policy_problems(s, p, custom_fields)

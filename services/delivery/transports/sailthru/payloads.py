"""What Handoff sends Sailthru, and what a job's status says.

- Real time, one referral: `POST /user` with `id` = the email, `key: "email"`, `vars` (the
  layout's columns by header, typed where the connection says so) and
  `lists: {"<list>": 1}` — an upsert, so a retried referral is the same write.
- Scheduled, a batch: `POST /job` with `job=import`, `list` and the CSV as the multipart
  part `file` (email first; Sailthru's clients send it this way), optionally
  `postback_url`; then `GET /job?job_id=` until `status` is `completed` or `error`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.delivery.transports.http.templates import FieldValueError, Slot, typed_value
from services.ingest.validation import EMAIL

MAX_VARS = 100
VAR_TYPES = ("string", "number", "boolean", "json")


class JobState(enum.Enum):
    """A job's `status`."""

    PENDING = "pending"
    COMPLETED = "completed"
    ERROR = "error"


@dataclass(frozen=True)
class VarSpec:
    """One profile var: its name at Sailthru, the referral field it shows, its type."""

    name: str
    field: str
    type: str = "string"


class ReferralRefusedError(ValueError):
    """A referral that cannot be sent (no usable email, a value not of its var's type):
    rejected, with this reason, without a request."""


def usable_email(value: str) -> str:
    """The email as Sailthru's `id` (trimmed), or ReferralRefusedError."""
    email = value.strip()
    if not email or len(email) > 254 or not EMAIL.fullmatch(email):
        raise ReferralRefusedError(f"{email[:64]!r} is not a usable email address")
    return email


def profile_vars(specs: Sequence[VarSpec], values: Mapping[str, str]) -> dict[str, Any]:
    """The vars of one referral from its rendered values (ReferralRefusedError on a value
    its type cannot take; an empty typed value is null)."""
    out: dict[str, Any] = {}
    for spec in specs:
        try:
            out[spec.name] = typed_value(Slot(spec.field, spec.type), values.get(spec.field, ""))
        except FieldValueError as exc:
            raise ReferralRefusedError(str(exc)) from None
    return out


def user_upsert(email: str, profile: Mapping[str, Any], list_name: str) -> dict[str, Any]:
    """The `POST /user` parameters for one referral."""
    payload: dict[str, Any] = {"id": usable_email(email), "key": "email", "vars": dict(profile)}
    if list_name:
        payload["lists"] = {list_name: 1}
    return payload


def import_job(list_name: str, postback_url: str = "") -> dict[str, Any]:
    """The `POST /job` parameters of a list import (the file goes beside them, unsigned)."""
    payload: dict[str, Any] = {"job": "import", "list": list_name}
    if postback_url:
        payload["postback_url"] = postback_url
    return payload


@dataclass(frozen=True)
class JobStatus:
    """What `GET /job` said: the id, the state, and the job's own counts (every whole
    number it reported, by name: Sailthru does not document an import's fields)."""

    job_id: str
    state: JobState
    name: str = ""
    counts: Mapping[str, int] | None = None
    message: str = ""


def job_status(document: Any) -> JobStatus:
    """A job answer read (ValueError when it is not one)."""
    if not isinstance(document, dict) or not document.get("job_id"):
        raise ValueError("the answer names no job_id")
    try:
        state = JobState(str(document.get("status", "pending")))
    except ValueError:
        raise ValueError(f"unknown job status {document.get('status')!r}") from None
    counts = {
        k: v
        for k, v in document.items()
        if isinstance(v, int) and not isinstance(v, bool) and k != "error"
    }
    message = str(document.get("errormsg") or document.get("error_message") or "")[:300]
    return JobStatus(str(document["job_id"]), state, str(document.get("name", "")), counts, message)

"""A Mailchimp connection's settings (the API key apart: it is the sealed secret
`api_key`): the one definition the connection API validates and stores, and the live
loop and the delivery engine read."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from services.common.errors import FieldProblem
from services.delivery.live.policy import LivePolicy, policy_problems, policy_values
from services.delivery.transports.http.settings import (
    MAX_TIMEOUT_S,
    plaintext_allowed,
    url_problems,
)

SECRET_NAMES = ("api_key",)
DEFAULT_BASE_URL = "https://{dc}.api.mailchimp.com/3.0"
CONNECTIONS_PER_KEY = 10  # Mailchimp's cap on simultaneous connections per API key
MAX_BATCH = 500  # members per batch call
STATUSES = ("subscribed", "pending", "unsubscribed", "cleaned", "transactional")
MODES = ("realtime", "scheduled")
EMAIL_TAG = "EMAIL"
_KEY = re.compile(r"^[A-Za-z0-9]{8,64}-([a-z]{2,8}[0-9]{1,4})$")
_MERGE_TAG = re.compile(r"^[A-Z0-9_]{1,10}$")
_LIST_ID = re.compile(r"^[A-Za-z0-9]{1,40}$")


class ApiKeyError(ValueError):
    """An API key without a data centre suffix."""


def data_centre(api_key: str) -> str:
    """The data centre of an API key: its suffix after the last '-' (e.g. us6)."""
    match = _KEY.match(api_key.strip())
    if match is None:
        raise ApiKeyError("a Mailchimp API key ends in -<data centre> (e.g. …-us6)")
    return match.group(1)


@dataclass(frozen=True, kw_only=True)
class MailchimpSettings(LivePolicy):
    """Which audience, how referrals become members, and when they are sent."""

    list_id: str
    # Layout column header -> merge tag; the column mapped to EMAIL is the address.
    merge_fields: Mapping[str, str] = field(default_factory=dict)
    # The layout whose columns are mapped, in real time (None: the account's default);
    # scheduled deliveries render their task's layout.
    layout_id: str | None = None
    tags: tuple[str, ...] = ()
    status_if_new: str = "subscribed"
    mode: str = "scheduled"
    base_url: str = ""  # "" : DEFAULT_BASE_URL; "{dc}" is replaced by the key's data centre
    timeout_s: float = 10.0

    def to_json(self) -> dict[str, Any]:
        """The settings column."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "merge_fields":
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out | self.policy_json()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MailchimpSettings:
        """From the settings column."""
        values = policy_values(data, cls)
        if "tags" in values:
            values["tags"] = tuple(values["tags"])
        if "merge_fields" in values:
            values["merge_fields"] = dict(values["merge_fields"])
        return cls(**values)

    def api_base(self, dc: str) -> str:
        """The API's base URL for a data centre (no trailing slash)."""
        return (self.base_url or DEFAULT_BASE_URL).replace("{dc}", dc).rstrip("/")

    @property
    def email_column(self) -> str:
        """The layout column mapped to EMAIL."""
        return next((h for h, tag in self.merge_fields.items() if tag == EMAIL_TAG), "")

    @property
    def merge_columns(self) -> dict[str, str]:
        """The columns mapped to merge fields other than EMAIL."""
        return {h: tag for h, tag in self.merge_fields.items() if tag != EMAIL_TAG}


def settings_problems(
    settings: MailchimpSettings,
    secrets: Mapping[str, str],
    stored: frozenset[str],
    prefix: str,
    custom_fields: frozenset[str],
) -> list[FieldProblem]:
    """Every problem of Mailchimp settings plus the key (`stored`: secrets kept)."""
    p = f"{prefix}mailchimp."
    found: list[FieldProblem] = []
    key = secrets.get("api_key", "")
    if key:
        try:
            data_centre(key)
        except ApiKeyError as exc:
            found.append(FieldProblem(f"{p}api_key", "INVALID_FORMAT", str(exc)))
    elif "api_key" not in stored:
        found.append(FieldProblem(f"{p}api_key", "REQUIRED", "the account's API key"))
    if not settings.list_id:
        found.append(FieldProblem(f"{p}list_id", "REQUIRED", "the audience (list) id"))
    elif not _LIST_ID.match(settings.list_id):
        found.append(FieldProblem(f"{p}list_id", "INVALID_FORMAT", "letters and digits"))
    emails = [h for h, tag in settings.merge_fields.items() if tag == EMAIL_TAG]
    if not emails:
        found.append(FieldProblem(f"{p}merge_fields", "REQUIRED", "map one layout column to EMAIL"))
    elif len(emails) > 1:
        found.append(
            FieldProblem(f"{p}merge_fields", "DUPLICATE", f"EMAIL is mapped twice ({emails})")
        )
    seen: set[str] = set()
    for header, tag in settings.merge_fields.items():
        place = f"{p}merge_fields.{header[:40]}"
        if not header.strip():
            found.append(FieldProblem(place, "REQUIRED", "a layout column's header"))
        if not _MERGE_TAG.match(tag):
            found.append(FieldProblem(place, "INVALID_FORMAT", "a merge tag: A-Z, 0-9 and _, ≤ 10"))
        elif tag in seen and tag != EMAIL_TAG:
            found.append(FieldProblem(place, "DUPLICATE", f"{tag} is mapped twice"))
        seen.add(tag)
    if len(settings.tags) > 50 or any(not t.strip() or len(t) > 100 for t in settings.tags):
        found.append(FieldProblem(f"{p}tags", "OUT_OF_RANGE", "at most 50 tags of 1-100"))
    if settings.status_if_new not in STATUSES:
        found.append(FieldProblem(f"{p}status_if_new", "UNKNOWN_CODE", ", ".join(STATUSES)))
    if settings.mode not in MODES:
        found.append(FieldProblem(f"{p}mode", "UNKNOWN_CODE", "realtime or scheduled"))
    if settings.layout_id is not None:
        try:
            uuid.UUID(settings.layout_id)
        except ValueError:
            found.append(FieldProblem(f"{p}layout_id", "INVALID_FORMAT", "a layout id"))
    if settings.base_url:
        example = settings.api_base("us1")
        found += url_problems(example, f"{p}base_url", required=False)
        if not plaintext_allowed(example) and example.startswith("http:"):
            found.append(FieldProblem(f"{p}base_url", "INSECURE", "use https://"))
    if not 0 < settings.timeout_s <= MAX_TIMEOUT_S:
        found.append(FieldProblem(f"{p}timeout_s", "OUT_OF_RANGE", f"0-{MAX_TIMEOUT_S:g} s"))
    found += policy_problems(settings, p, custom_fields)
    return found

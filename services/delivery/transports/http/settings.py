"""An API connection's settings (secrets apart): the one definition the connection API
validates and stores, and the live delivery loop reads.

Secrets (by name, sealed like every connection secret): `password` (basic), `token`
(bearer), `api_key`, `client_secret` (OAuth2), `signing_secret` and
`previous_signing_secret` (Standard Webhooks, `whsec_…`).
"""

from __future__ import annotations

import base64
import ipaddress
import ssl
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from services.common.errors import FieldProblem
from services.common.layouts.catalog import is_builtin_field
from services.delivery.transports.http.responses import ResponseRule, rule_problems
from services.delivery.transports.http.templates import (
    Encoding,
    TemplateError,
    parse_body_template,
)

API_SECRET_NAMES = (
    "password",
    "token",
    "api_key",
    "client_secret",
    "signing_secret",
    "previous_signing_secret",
)
AuthKind = Literal["none", "basic", "bearer", "api_key", "oauth2"]
AUTH_KINDS: tuple[str, ...] = ("none", "basic", "bearer", "api_key", "oauth2")
METHODS = ("POST", "PUT", "GET")
# Immediately, then after each failure (seconds): Svix's schedule, about 27.6 hours.
DEFAULT_RETRY_SCHEDULE_S: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
DEFAULT_DISABLE_AFTER_S = 5 * 24 * 3600.0
MAX_TIMEOUT_S = 60.0
# Headers Handoff sets itself, or that would carry a secret in the clear settings.
_RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "idempotency-key",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)


@dataclass(frozen=True)
class FieldFilter:
    """Deliver only referrals whose `field` equals one of `values` (or contains one)."""

    field: str
    values: tuple[str, ...]
    op: Literal["equals", "contains"] = "equals"

    def matches(self, value: str) -> bool:
        """Whether a referral's value passes (case-insensitive)."""
        folded = value.casefold()
        if self.op == "contains":
            return any(v.casefold() in folded for v in self.values)
        return any(v.casefold() == folded for v in self.values)


@dataclass(frozen=True)
class ApiSettings:
    """Where and how referrals are sent, one request per referral."""

    url: str
    body_template: str = ""
    test_url: str = ""
    method: str = "POST"
    encoding: Encoding = Encoding.JSON
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0
    auth: str = "none"
    username: str = ""  # basic
    api_key_name: str = ""  # the header or query parameter carrying the key
    api_key_in: Literal["header", "query"] = "header"
    token_url: str = ""  # OAuth2 client credentials
    client_id: str = ""
    scope: str = ""
    audience: str = ""
    client_auth: Literal["basic", "body"] = "basic"
    standard_webhooks: bool = False  # sign with webhook-id/-timestamp/-signature
    previous_secret_until: datetime | None = None  # rotation overlap: both signatures
    ca_pem: str = ""  # trust only this CA (else the system store)
    response_rules: tuple[ResponseRule, ...] = ()
    campaign_ids: tuple[str, ...] | None = None  # None: every campaign, future ones too
    filters: tuple[FieldFilter, ...] = ()
    rate_limit_per_s: float = 0.0  # 0: unlimited
    concurrency: int = 8
    strict_order: bool = False
    retry_schedule_s: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE_S
    disable_after_s: float = DEFAULT_DISABLE_AFTER_S

    def to_json(self) -> dict[str, Any]:
        """The settings column."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Encoding):
                value = value.value
            elif f.name == "headers":
                value = dict(value)
            elif f.name == "previous_secret_until":
                value = value.isoformat() if value else None
            elif f.name == "response_rules":
                value = [r.to_json() for r in value]
            elif f.name == "filters":
                value = [{"field": x.field, "values": list(x.values), "op": x.op} for x in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ApiSettings:
        """From the settings column."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        if "encoding" in values:
            values["encoding"] = Encoding(values["encoding"])
        if values.get("previous_secret_until"):
            values["previous_secret_until"] = datetime.fromisoformat(
                values["previous_secret_until"]
            )
        if "response_rules" in values:
            values["response_rules"] = tuple(
                ResponseRule.from_json(r) for r in values["response_rules"]
            )
        if "filters" in values:
            values["filters"] = tuple(
                FieldFilter(x["field"], tuple(x["values"]), x.get("op", "equals"))
                for x in values["filters"]
            )
        if values.get("campaign_ids") is not None:
            values["campaign_ids"] = tuple(values["campaign_ids"])
        if "retry_schedule_s" in values:
            values["retry_schedule_s"] = tuple(values["retry_schedule_s"])
        return cls(**values)

    @property
    def host(self) -> str:
        """The endpoint's host (bounds concurrency per destination)."""
        return urlsplit(self.url).hostname or ""


def _url_problems(url: str, place: str, *, required: bool) -> Iterator[FieldProblem]:
    if not url:
        if required:
            yield FieldProblem(place, "REQUIRED", "is required")
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises for a bad port
    except ValueError as exc:
        yield FieldProblem(place, "INVALID_FORMAT", f"not a URL: {exc}")
        return
    if parts.scheme not in ("https", "http"):
        yield FieldProblem(place, "INVALID_FORMAT", "an https:// URL")
    elif not parts.hostname:
        yield FieldProblem(place, "INVALID_FORMAT", "the URL has no host")
    elif parts.username or parts.password:
        yield FieldProblem(
            place, "INVALID_FORMAT", "credentials go in the authentication settings, not the URL"
        )
    if len(url) > 2000:
        yield FieldProblem(place, "TOO_LONG", "at most 2000 characters")


def plaintext_allowed(url: str) -> bool:
    """http:// only to loopback (a test endpoint on this machine): TLS is required."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    host = (parts.hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secret_is_webhook_key(value: str) -> bool:
    """A Standard Webhooks secret: `whsec_` + base64 of at least 24 bytes."""
    raw = value.removeprefix("whsec_")
    try:
        return len(base64.b64decode(raw, validate=True)) >= 24
    except ValueError:
        return False


def settings_problems(
    api: ApiSettings,
    secrets: Mapping[str, str],
    stored: frozenset[str],
    prefix: str,
    custom_fields: frozenset[str],
) -> list[FieldProblem]:
    """Every problem of API settings plus secrets (`stored`: secrets kept from before)."""
    p = f"{prefix}api."
    found: list[FieldProblem] = []
    found += _url_problems(api.url, f"{p}url", required=True)
    found += _url_problems(api.test_url, f"{p}test_url", required=False)
    for name, url in (("url", api.url), ("test_url", api.test_url)):
        if url and not plaintext_allowed(url) and urlsplit(url).scheme == "http":
            found.append(FieldProblem(f"{p}{name}", "INSECURE", "use https:// (TLS is required)"))
    if api.method not in METHODS:
        found.append(FieldProblem(f"{p}method", "UNKNOWN_CODE", "POST, PUT or GET"))
    template = api.body_template or "{}"
    try:
        parsed = parse_body_template(template, api.encoding, custom_fields)
        if api.method == "GET":
            try:
                parsed.query({})
            except TemplateError:
                found.append(
                    FieldProblem(
                        f"{p}body_template",
                        "INVALID_FORMAT",
                        "GET sends the template as a query string: form fields or a flat "
                        "JSON object of strings",
                    )
                )
            if api.encoding is Encoding.XML:
                found.append(FieldProblem(f"{p}encoding", "INVALID_FORMAT", "GET has no body"))
    except TemplateError as exc:
        found += [FieldProblem(f"{p}{x.field}", x.code, x.message) for x in exc.problems]
    for name, value in api.headers.items():
        if name.lower() in _RESERVED_HEADERS or not name.isascii() or not name:
            found.append(
                FieldProblem(
                    f"{p}headers.{name[:40]}",
                    "RESERVED",
                    "set by Handoff or secret: use the authentication settings",
                )
            )
        if any(c in value for c in "\r\n\0") or len(value) > 4000:
            found.append(
                FieldProblem(f"{p}headers.{name[:40]}", "INVALID_FORMAT", "one line, ≤ 4000")
            )
    if not 0 < api.timeout_s <= MAX_TIMEOUT_S:
        found.append(FieldProblem(f"{p}timeout_s", "OUT_OF_RANGE", f"0-{MAX_TIMEOUT_S:g} s"))
    has = {n for n in API_SECRET_NAMES if secrets.get(n)} | set(stored)
    found += _auth_problems(api, has, p)
    if api.standard_webhooks:
        if "signing_secret" not in has:
            found.append(
                FieldProblem(f"{p}signing_secret", "REQUIRED", "a whsec_… secret signs each call")
            )
        for name in ("signing_secret", "previous_signing_secret"):
            if secrets.get(name) and not secret_is_webhook_key(secrets[name]):
                found.append(
                    FieldProblem(
                        f"{p}{name}", "INVALID_FORMAT", "whsec_ + base64 of at least 24 bytes"
                    )
                )
    if api.ca_pem:
        try:
            ssl.create_default_context(cadata=api.ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            found.append(FieldProblem(f"{p}ca_pem", "INVALID_FORMAT", f"not a PEM CA: {exc}"))
    found += rule_problems(api.response_rules, f"{p}response_rules")
    found += _delivery_problems(api, p, custom_fields)
    return found


def _auth_problems(api: ApiSettings, has: set[str], p: str) -> Iterator[FieldProblem]:
    if api.auth not in AUTH_KINDS:
        yield FieldProblem(f"{p}auth", "UNKNOWN_CODE", f"one of {', '.join(AUTH_KINDS)}")
        return
    needs: dict[str, tuple[str, ...]] = {
        "basic": ("password",),
        "bearer": ("token",),
        "api_key": ("api_key",),
        "oauth2": ("client_secret",),
    }
    for secret in needs.get(api.auth, ()):
        if secret not in has:
            yield FieldProblem(f"{p}{secret}", "REQUIRED", f"{api.auth} authentication needs it")
    if api.auth == "basic" and (not api.username or ":" in api.username):
        yield FieldProblem(f"{p}username", "REQUIRED", "a user name without ':'")
    if api.auth == "api_key" and not api.api_key_name:
        yield FieldProblem(f"{p}api_key_name", "REQUIRED", "the header or parameter name")
    if api.auth == "api_key" and api.api_key_in not in ("header", "query"):
        yield FieldProblem(f"{p}api_key_in", "UNKNOWN_CODE", "header or query")
    if api.auth == "oauth2":
        yield from _url_problems(api.token_url, f"{p}token_url", required=True)
        if not api.client_id:
            yield FieldProblem(f"{p}client_id", "REQUIRED", "is required")
        if api.client_auth not in ("basic", "body"):
            yield FieldProblem(f"{p}client_auth", "UNKNOWN_CODE", "basic or body")


def _delivery_problems(
    api: ApiSettings, p: str, custom_fields: frozenset[str]
) -> Iterator[FieldProblem]:
    if api.rate_limit_per_s < 0 or api.rate_limit_per_s > 10_000:
        yield FieldProblem(f"{p}rate_limit_per_s", "OUT_OF_RANGE", "0 (none) to 10000")
    if not 1 <= api.concurrency <= 256:
        yield FieldProblem(f"{p}concurrency", "OUT_OF_RANGE", "1-256")
    schedule: Sequence[float] = api.retry_schedule_s
    if len(schedule) > 30 or any(not 0 <= s <= 7 * 86400 for s in schedule):
        yield FieldProblem(
            f"{p}retry_schedule_s", "OUT_OF_RANGE", "at most 30 delays of 0 s to 7 days"
        )
    if not 3600 <= api.disable_after_s <= 30 * 86400:
        yield FieldProblem(f"{p}disable_after_s", "OUT_OF_RANGE", "1 hour to 30 days")
    for i, f in enumerate(api.filters):
        if not (is_builtin_field(f.field) or f.field in custom_fields):
            yield FieldProblem(f"{p}filters[{i}].field", "UNKNOWN_FIELD", f"no field {f.field!r}")
        if not f.values or f.op not in ("equals", "contains"):
            yield FieldProblem(f"{p}filters[{i}]", "REQUIRED", "values, and op equals/contains")
    for i, c in enumerate(api.campaign_ids or ()):
        try:
            uuid.UUID(c)
        except ValueError:
            yield FieldProblem(f"{p}campaign_ids[{i}]", "INVALID_FORMAT", "a campaign id")

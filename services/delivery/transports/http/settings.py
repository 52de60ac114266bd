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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from services.common.errors import FieldProblem
from services.delivery.live.policy import LivePolicy, policy_problems, policy_values
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
class ApiSettings(LivePolicy):
    """Where and how referrals are sent, one request per referral (the live loop's own
    fields are inherited from `LivePolicy`)."""

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
            elif isinstance(value, tuple) and f.name != "filters":
                value = list(value)
            out[f.name] = value
        return out | self.policy_json()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ApiSettings:
        """From the settings column."""
        values = policy_values(data, cls)
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
        return cls(**values)

    @property
    def host(self) -> str:
        """The endpoint's host (bounds concurrency per destination)."""
        return urlsplit(self.url).hostname or ""


def url_problems(url: str, place: str, *, required: bool) -> Iterator[FieldProblem]:
    """Problems of an endpoint URL (https, a host, no credentials in it)."""
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
    found += url_problems(api.url, f"{p}url", required=True)
    found += url_problems(api.test_url, f"{p}test_url", required=False)
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
    found += policy_problems(api, p, custom_fields)
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
        yield from url_problems(api.token_url, f"{p}token_url", required=True)
        if not api.client_id:
            yield FieldProblem(f"{p}client_id", "REQUIRED", "is required")
        if api.client_auth not in ("basic", "body"):
            yield FieldProblem(f"{p}client_auth", "UNKNOWN_CODE", "basic or body")

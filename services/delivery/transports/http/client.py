"""The HTTP API transport: one request per referral, to the advertiser's API as they define
it, with the egress policy checked on the addresses actually connected to.

Safety, once for every call: the connector resolves names through the egress policy (a
resolver that refuses internal ranges, so what is checked is what is connected to — DNS
rebinding cannot slip past) and literal addresses are checked before the request; TLS is
verified (the system store, or only the connection's pinned CA); redirects are never
followed; an answer is read up to a cap; secrets never reach a log or a recorded exchange
(authorization headers, API keys and signatures are redacted).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from services.common.egress import EgressPolicy, EgressRefusedError, ResolutionError
from services.delivery.transports.base import Diagnosis
from services.delivery.transports.http.responses import Outcome, ResponseRules, Verdict
from services.delivery.transports.http.settings import ApiSettings, plaintext_allowed
from services.delivery.transports.http.templates import BodyTemplate, FieldValueError

MAX_ANSWER = 64 * 1024  # bytes of an answer read (rules see this much)
HEAD_KEPT = 1024  # bytes of an answer recorded with the attempt
REDACTED = "[redacted]"
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "webhook-signature"})
USER_AGENT = "Handoff/0.1 (+referral delivery)"


class EgressResolver(AbstractResolver):
    """Resolves like the system, then refuses any address the egress policy refuses."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The checked addresses of `host` (EgressRefusedError, ResolutionError)."""
        addresses = await self._policy.resolve(host, port)
        return [
            ResolveResult(
                hostname=host,
                host=str(a),
                port=port,
                family=socket.AF_INET6 if a.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        """Nothing to release."""


def basic_auth(user: str, password: str) -> str:
    """An Authorization header value for HTTP Basic (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def tls_context(ca_pem: str) -> ssl.SSLContext:
    """Verification on: the system store, or only the pinned CA."""
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature: `v1,<base64 HMAC-SHA256 of id.timestamp.body>`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass
class Exchange:
    """One request and its answer, as an attempt records it and a test call shows it."""

    method: str
    url: str
    request_headers: dict[str, str]
    request_body: bytes
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_head: bytes = b""
    latency_s: float = 0.0
    verdict: Verdict = field(default_factory=lambda: Verdict(Outcome.RETRY, ""))
    error: str = ""
    diagnosis: Diagnosis | None = None
    retry_after_s: float | None = None

    @classmethod
    def unsent(cls, method: str, url: str, outcome: Outcome, rule: str, error: str) -> Exchange:
        """An attempt decided without a request (a value the request cannot carry)."""
        return cls(method, url, {}, b"", verdict=Verdict(outcome, rule), error=error)


class OAuth2Tokens:
    """OAuth2 client-credentials tokens, cached and renewed before they expire."""

    def __init__(self, api: ApiSettings, client_secret: str) -> None:
        self._api = api
        self._secret = client_secret
        self._token = ""
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.fetched = 0  # how many tokens were fetched (tests, metrics)

    def invalidate(self, token: str) -> None:
        """Forget `token` (after a 401) so the next call fetches a fresh one."""
        if token == self._token:
            self._token = ""

    async def token(self, session: aiohttp.ClientSession) -> str:
        """A valid token, fetched when none is cached or it expires within a minute (or
        within a tenth of its lifetime, for short-lived tokens)."""
        async with self._lock:
            if self._token and time.monotonic() < self._expires:
                return self._token
            api = self._api
            form = {"grant_type": "client_credentials"}
            if api.scope:
                form["scope"] = api.scope
            if api.audience:
                form["audience"] = api.audience
            headers = {}
            if api.client_auth == "basic":
                headers["Authorization"] = basic_auth(api.client_id, self._secret)
            else:
                form |= {"client_id": api.client_id, "client_secret": self._secret}
            async with session.post(
                api.token_url, data=form, headers=headers, allow_redirects=False
            ) as answer:
                body = await answer.content.read(MAX_ANSWER)
                if answer.status != 200:
                    raise TokenError(
                        f"the token endpoint answered {answer.status}: "
                        f"{body[:200].decode('utf-8', 'replace')}",
                        retryable=answer.status >= 500 or answer.status == 429,
                    )
            try:
                data = json.loads(body)
                token = str(data["access_token"])
                lifetime = float(data.get("expires_in", 3600))
            except (ValueError, KeyError, TypeError) as exc:
                raise TokenError(f"the token endpoint's answer has no token: {exc}") from exc
            self.fetched += 1
            self._token = token
            self._expires = time.monotonic() + max(1.0, min(lifetime - 60, lifetime * 0.9))
            return token


class TokenError(Exception):
    """The token endpoint refused or answered nonsense."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def _redacted_url(url: str, api: ApiSettings) -> str:
    if api.auth != "api_key" or api.api_key_in != "query":
        return url
    parts = urlsplit(url)
    query = [
        (k, REDACTED if k == api.api_key_name else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


def redacted_headers(headers: Mapping[str, str], api: ApiSettings) -> dict[str, str]:
    """Headers as recorded: every secret replaced."""
    secret_names = set(_SECRET_HEADERS)
    if api.auth == "api_key" and api.api_key_in == "header":
        secret_names.add(api.api_key_name.lower())
    return {k: (REDACTED if k.lower() in secret_names else v) for k, v in headers.items()}


class HttpSession:
    """The transport part every HTTP channel shares (API connections and vendors): one
    session with its own bounded connector resolving through the egress policy, verified
    TLS, a total timeout, plain http only to loopback, literal addresses checked, and every
    failure turned into an exchange with a diagnosis and a RETRY verdict."""

    def __init__(
        self, egress: EgressPolicy, *, timeout_s: float, ca_pem: str = "", limit: int = 10
    ) -> None:
        self.timeout_s = timeout_s
        self._egress = egress
        self._ca_pem = ca_pem
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._checked: set[str] = set()  # origins that passed the TLS and address checks

    def session(self) -> aiohttp.ClientSession:
        """The session (made on first use)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=EgressResolver(self._egress),
                limit=self._limit,
                ssl=tls_context(self._ca_pem),
                ttl_dns_cache=30,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"User-Agent": USER_AGENT},
                auto_decompress=True,
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _check(self, url: str) -> None:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"  # what the checks depend on
        if origin in self._checked:
            return
        if not plaintext_allowed(url) and parts.scheme != "https":
            raise _RefusedError(Diagnosis.TLS, "TLS is required: the URL is not https://")
        host = (parts.hostname or "").strip("[]")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None:
            self._egress.check(host, address)
        if len(self._checked) < 16:
            self._checked.add(origin)

    async def exchange(
        self,
        exchange: Exchange,
        url: str,
        perform: Callable[[aiohttp.ClientSession], Awaitable[None]],
    ) -> Exchange:
        """Check `url`, run `perform` (which sends and fills `exchange` from the answer,
        see `read_answer`), and map every failure to a diagnosis; never raises for a
        network failure."""
        started = time.monotonic()
        try:
            self._check(url)
            await perform(self.session())
        except _RefusedError as exc:
            exchange.error, exchange.diagnosis = str(exc), exc.diagnosis
        except EgressRefusedError as exc:
            exchange.error, exchange.diagnosis = exc.message, Diagnosis.EGRESS
        except ResolutionError as exc:
            exchange.error, exchange.diagnosis = str(exc), Diagnosis.DNS
        except TokenError as exc:
            exchange.error = f"OAuth2: {exc}"
            exchange.diagnosis = Diagnosis.AUTH
        except aiohttp.ClientConnectorCertificateError as exc:
            exchange.error, exchange.diagnosis = f"TLS: {exc.certificate_error}", Diagnosis.TLS
        except aiohttp.ClientConnectorError as exc:
            cause = exc.os_error
            if isinstance(cause, EgressRefusedError):
                exchange.error, exchange.diagnosis = cause.message, Diagnosis.EGRESS
            elif isinstance(cause, ResolutionError):
                exchange.error, exchange.diagnosis = str(cause), Diagnosis.DNS
            else:
                exchange.error, exchange.diagnosis = f"cannot connect: {exc}", Diagnosis.REFUSED
        except aiohttp.ClientSSLError as exc:
            exchange.error, exchange.diagnosis = f"TLS: {exc}", Diagnosis.TLS
        except TimeoutError:
            exchange.error = f"no answer within {self.timeout_s:g} s"
            exchange.diagnosis = Diagnosis.TIMEOUT
        except (aiohttp.ClientError, OSError) as exc:
            exchange.error = f"connection lost: {exc or type(exc).__name__}"
            exchange.diagnosis = Diagnosis.CONNECTION_LOST
        exchange.latency_s = time.monotonic() - started
        if exchange.status is None:
            why = exchange.diagnosis.value if exchange.diagnosis else "error"
            exchange.verdict = Verdict(Outcome.RETRY, f"no answer ({why})")
        return exchange


async def read_answer(
    answer: aiohttp.ClientResponse,
    exchange: Exchange,
    decide: Callable[[int, bytes], Verdict],
    now: datetime,
    *,
    test: bool = False,
    limit: int | None = None,
) -> bytes:
    """Fill `exchange` from an answer (read up to `limit`, default MAX_ANSWER): status,
    head, Retry-After, the verdict `decide` gives, a redirect's note; headers only for a
    test call. The head."""
    cap, parts, size = limit or MAX_ANSWER, [], 0
    while size < cap:  # read() returns what has arrived: loop to the cap or the end
        part = await answer.content.read(cap - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    head = b"".join(parts)
    exchange.status = answer.status
    if test:
        exchange.response_headers = dict(answer.headers)
    exchange.response_head = head
    exchange.retry_after_s = retry_after_s(answer.headers.get("Retry-After"), now)
    exchange.verdict = decide(answer.status, head)
    if 300 <= answer.status < 400:
        exchange.error = (
            f"redirect to {answer.headers.get('Location', '?')[:200]} not followed: update the URL"
        )
    return head


class ApiClient:
    """Calls one API connection's endpoint over its own `HttpSession`."""

    def __init__(
        self,
        api: ApiSettings,
        secrets: Mapping[str, str],
        egress: EgressPolicy,
        *,
        now: Any = None,
    ) -> None:
        self.api = api
        self._secrets = dict(secrets)
        self._rules = ResponseRules(api.response_rules)
        self._now = now or (lambda: datetime.now(UTC))
        self._tokens = (
            OAuth2Tokens(api, self._secrets.get("client_secret", ""))
            if api.auth == "oauth2"
            else None
        )
        self.http = HttpSession(
            egress, timeout_s=api.timeout_s, ca_pem=api.ca_pem, limit=api.concurrency + 2
        )

    @property
    def tokens(self) -> OAuth2Tokens | None:
        """The OAuth2 token cache (None without OAuth2)."""
        return self._tokens

    async def close(self) -> None:
        """Close the session and its connections."""
        await self.http.close()

    async def _auth_headers(self, headers: dict[str, str]) -> str:
        api, secrets = self.api, self._secrets
        token = ""
        if api.auth == "basic":
            headers["Authorization"] = basic_auth(api.username, secrets.get("password", ""))
        elif api.auth == "bearer":
            headers["Authorization"] = f"Bearer {secrets.get('token', '')}"
        elif api.auth == "api_key" and api.api_key_in == "header":
            headers[api.api_key_name] = secrets.get("api_key", "")
        elif self._tokens is not None:
            token = await self._tokens.token(self.http.session())
            headers["Authorization"] = f"Bearer {token}"
        return token

    def _signatures(self, message_id: str, timestamp: int, body: bytes) -> str:
        api, secrets = self.api, self._secrets
        signatures = [sign(secrets["signing_secret"], message_id, timestamp, body)]
        previous = secrets.get("previous_signing_secret", "")
        until = api.previous_secret_until
        if previous and (until is None or self._now() < until):
            signatures.append(sign(previous, message_id, timestamp, body))
        return " ".join(signatures)

    def _target(self, test: bool, query: list[tuple[str, str]] | None) -> str:
        api = self.api
        url = (api.test_url or api.url) if test else api.url
        extra: list[tuple[str, str]] = list(query or ())
        if api.auth == "api_key" and api.api_key_in == "query":
            extra.append((api.api_key_name, self._secrets.get("api_key", "")))
        if not extra:
            return url
        parts = urlsplit(url)
        joined = "&".join(x for x in (parts.query, urlencode(extra)) if x)
        return urlunsplit(parts._replace(query=joined))

    async def send(
        self,
        template: BodyTemplate,
        values: Mapping[str, str],
        message_id: str,
        *,
        test: bool = False,
    ) -> Exchange:
        """Render one referral's request from `template` and send it; a value the
        template cannot take rejects the referral without a request."""
        try:
            body = template.render(values)
            query = template.query(values) if self.api.method == "GET" else None
        except FieldValueError as exc:
            return Exchange.unsent(
                self.api.method, self.api.url, Outcome.REJECTED, "template", str(exc)
            )
        return await self.call(message_id, body, template.content_type, query=query, test=test)

    async def call(
        self,
        message_id: str,
        body: bytes,
        content_type: str,
        *,
        query: list[tuple[str, str]] | None = None,
        test: bool = False,
    ) -> Exchange:
        """Send one referral's request; the exchange, decided by the rules (never raises
        for a network failure: that is an exchange with an error and a RETRY verdict)."""
        api = self.api
        url = self._target(test, query)
        method = api.method
        send_body = b"" if method == "GET" else body
        headers = dict(api.headers)
        # The same on every attempt of one referral: a receiver can tell a retry.
        headers["Idempotency-Key"] = message_id
        headers["webhook-id"] = message_id
        if send_body:
            headers["Content-Type"] = content_type
        exchange = Exchange(method, _redacted_url(url, api), {}, send_body)

        async def perform(session: aiohttp.ClientSession) -> None:
            for second_try in (False, True):
                token = await self._auth_headers(headers)
                if api.standard_webhooks:
                    timestamp = int(self._now().timestamp())
                    headers["webhook-timestamp"] = str(timestamp)
                    headers["webhook-signature"] = self._signatures(
                        message_id, timestamp, send_body
                    )
                if test:  # only a test call shows headers; attempts never record them
                    exchange.request_headers = redacted_headers(headers, api)
                async with session.request(
                    method, url, data=send_body or None, headers=headers, allow_redirects=False
                ) as answer:
                    if answer.status == 401 and self._tokens is not None and not second_try:
                        await answer.content.read(MAX_ANSWER)
                        self._tokens.invalidate(token)  # a revoked or rotated token: once
                        continue
                    await read_answer(answer, exchange, self._rules.decide, self._now(), test=test)
                    break

        return await self.http.exchange(exchange, url, perform)


class _RefusedError(Exception):
    def __init__(self, diagnosis: Diagnosis, message: str) -> None:
        super().__init__(message)
        self.diagnosis = diagnosis

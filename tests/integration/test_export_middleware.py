"""The export API's middleware on a real loopback server with real credentials: request
ids, trace context, forwarded headers from trusted proxies only, and the rate limit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from multidict import CIMultiDict
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.common.auth.context import current_request_id
from services.common.auth.http_access import add_route
from services.common.auth.model import AccessRule
from services.export.forwarded import TrustedProxies
from services.export.health_routes import Readiness
from services.export.http_app import create_app, serve_http
from services.export.rate_limit import RateLimit
from services.export.store import ExportStore
from tests.integration.credentials_support import account_token, authenticator
from tests.integration.layouts_support import create_account

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
GUARDED = "/v1/accounts/{account_id}/echo"


class FakeClock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _echo(request: web.Request) -> web.StreamResponse:
    """What the handler sees of the client after the middleware."""
    return web.json_response(
        {
            "remote": request.remote,
            "secure": request.secure,
            "url": str(request.url),
            "request_id": current_request_id.get(),
        }
    )


async def _stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_type = "text/plain"
    await response.prepare(request)
    await response.write(b"one\n")
    await response.write(b"two\n")
    await response.write_eof()
    return response


@asynccontextmanager
async def export_server(pool: asyncpg.Pool, **options: Any) -> AsyncIterator[str]:
    """The export app plus an open echo, a streamed route and a guarded echo."""
    app = create_app(
        ExportStore(pool),
        Readiness(),
        authenticator(pool),
        expected_schema_version=1,
        health_timeout_s=2,
        **options,
    )
    app.router.add_get("/test/echo", _echo)
    app.router.add_get("/test/stream", _stream)
    add_route(app, "GET", GUARDED, _echo, AccessRule(any_caller=True))
    async with serve_http(app, "127.0.0.1", 0, grace_s=0.5) as port:
        yield f"http://127.0.0.1:{port}"


async def _get(
    url: str, headers: dict[str, str] | None = None, token: str = ""
) -> tuple[int, CIMultiDict[str], str]:
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session, session.get(url, headers=sent) as response:
        return response.status, response.headers.copy(), await response.text()


async def _client_seen(base: str, headers: dict[str, str]) -> dict[str, Any]:
    status, _, body = await _get(f"{base}/test/echo", headers)
    assert status == 200, body
    seen: dict[str, Any] = json.loads(body)
    return seen


def _is_generated(request_id: str) -> bool:
    return len(request_id) == 32 and all(c in "0123456789abcdef" for c in request_id)


async def _account_token(pool: asyncpg.Pool) -> tuple[str, str]:
    account = str((await create_account(pool))[0])
    return account, await account_token(pool, account, "referrals:read")


# --- request ids -------------------------------------------------------------------


async def test_a_valid_request_id_is_echoed_on_every_kind_of_answer(pool: asyncpg.Pool) -> None:
    async with export_server(pool) as base:
        sent = {"X-Request-Id": "gw-7f3a:01/trace=ok"}
        for path, status in [
            ("/healthz", 200),
            ("/v1/me", 401),  # a problem document from the access middleware
            ("/v1/nothing-here", 404),
            ("/test/stream", 200),  # prepared by the handler: the signal adds it
        ]:
            got, headers, _ = await _get(f"{base}{path}", sent)
            assert (path, got) == (path, status)
            assert headers["X-Request-Id"] == "gw-7f3a:01/trace=ok", path
        seen = await _client_seen(base, sent)
        assert seen["request_id"] == "gw-7f3a:01/trace=ok"  # what the logs carry


@pytest.mark.parametrize("presented", [None, "", "has space", "x" * 129, "caf\u00e9"])
async def test_a_missing_or_invalid_request_id_is_replaced_by_a_generated_one(
    pool: asyncpg.Pool, presented: str | None
) -> None:
    async with export_server(pool) as base:
        sent = {} if presented is None else {"X-Request-Id": presented}
        _, headers, body = await _get(f"{base}/test/echo", sent)
        assert _is_generated(headers["X-Request-Id"])
        assert json.loads(body)["request_id"] == headers["X-Request-Id"]
        _, again, _ = await _get(f"{base}/test/echo", sent)
        assert again["X-Request-Id"] != headers["X-Request-Id"]


async def test_behind_the_access_middleware_the_request_id_is_still_the_validated_one(
    pool: asyncpg.Pool,
) -> None:
    account, token = await _account_token(pool)
    async with export_server(pool) as base:
        url = f"{base}/v1/accounts/{account}/echo"
        status, headers, body = await _get(url, {"X-Request-Id": "bad id"}, token)
        assert status == 200
        assert json.loads(body)["request_id"] == headers["X-Request-Id"]
        assert _is_generated(headers["X-Request-Id"])
        status, headers, body = await _get(url, {"X-Request-Id": "x" * 128}, token)
        assert (json.loads(body)["request_id"], headers["X-Request-Id"]) == ("x" * 128,) * 2


# --- trace context -----------------------------------------------------------------


def _spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_the_server_span_continues_the_incoming_trace(
    pool: asyncpg.Pool, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    account, token = await _account_token(pool)
    async with export_server(pool, tracer_provider=provider) as base:
        status, _, me = await _get(f"{base}/v1/me", token=token)
        assert status == 200
        exporter.clear()
        sent = {
            "traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01",
            "tracestate": "vendor=abc123",
            "X-Request-Id": "rid-1",
        }
        status, _, _ = await _get(f"{base}/v1/accounts/{account}/echo", sent, token)
        assert status == 200
    [span] = _spans(exporter)
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == PARENT_SPAN_ID
    assert span.parent.is_remote
    assert span.context.trace_state.get("vendor") == "abc123"
    attributes = dict(span.attributes or {})
    assert span.name == f"GET {GUARDED}"
    assert attributes["http.route"] == GUARDED  # the template, not the account's id
    assert attributes["http.response.status_code"] == 200
    assert attributes["handoff.credential_id"] == json.loads(me)["credential_id"]
    assert attributes["handoff.request_id"] == "rid-1"
    assert token not in repr(attributes)


async def test_a_request_without_trace_context_starts_a_trace_and_404s_have_no_route(
    pool: asyncpg.Pool, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    async with export_server(pool, tracer_provider=provider) as base:
        assert (await _get(f"{base}/v1/nothing/123"))[0] == 404
        assert (await _get(f"{base}/v1/me"))[0] == 401
    missing, refused = _spans(exporter)
    assert missing.parent is None
    assert missing.name == "GET"
    assert "http.route" not in (missing.attributes or {})
    assert (missing.attributes or {})["http.response.status_code"] == 404
    assert (refused.attributes or {})["http.route"] == "/v1/me"
    assert (refused.attributes or {})["http.response.status_code"] == 401
    assert "handoff.credential_id" not in (refused.attributes or {})


async def test_request_durations_are_recorded_by_route_and_status(pool: asyncpg.Pool) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    _, token = await _account_token(pool)
    async with export_server(pool, meter_provider=provider) as base:
        for _ in range(2):
            assert (await _get(f"{base}/v1/me", token=token))[0] == 200
        assert (await _get(f"{base}/v1/gone/1"))[0] == 404
    data = reader.get_metrics_data()
    assert data is not None
    [histogram] = [
        metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "http.server.request.duration"
    ]
    counts = {
        (p.attributes.get("http.route"), p.attributes["http.response.status_code"]): p.count
        for p in histogram.data.data_points
        if isinstance(p, HistogramDataPoint) and p.attributes is not None
    }
    assert counts == {("/v1/me", 200): 2, (None, 404): 1}


# --- forwarded headers -------------------------------------------------------------

SPOOF = {
    "Forwarded": "for=203.0.113.7;proto=https;host=evil.example",
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
}


async def test_an_untrusted_peer_cannot_spoof_its_address_scheme_or_host(
    pool: asyncpg.Pool,
) -> None:
    for trusted in (None, TrustedProxies.parse("10.0.0.0/8, 2001:db8::/32")):
        async with export_server(pool, trusted_proxies=trusted) as base:
            seen = await _client_seen(base, SPOOF)
            assert (seen["remote"], seen["secure"]) == ("127.0.0.1", False)
            assert seen["url"].startswith("http://127.0.0.1:")


async def test_a_trusted_proxy_names_the_client_scheme_and_host(pool: asyncpg.Pool) -> None:
    trusted = TrustedProxies.parse("127.0.0.1")
    async with export_server(pool, trusted_proxies=trusted) as base:
        seen = await _client_seen(
            base, {"Forwarded": 'for=203.0.113.7;proto=https;host="api.example.com"'}
        )
        assert seen == seen | {
            "remote": "203.0.113.7",
            "secure": True,
            "url": "https://api.example.com/test/echo",
        }
        seen = await _client_seen(
            base,
            {
                "X-Forwarded-For": "203.0.113.8",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "api.example.com:8443",
            },
        )
        assert (seen["remote"], seen["url"]) == (
            "203.0.113.8",
            "https://api.example.com:8443/test/echo",
        )
        # Forwarded is preferred when both are sent.
        both = {"Forwarded": "for=203.0.113.7", "X-Forwarded-For": "198.51.100.1"}
        assert (await _client_seen(base, both))["remote"] == "203.0.113.7"


async def test_the_chain_is_walked_from_the_right_past_every_trusted_hop(
    pool: asyncpg.Pool,
) -> None:
    trusted = TrustedProxies.parse("127.0.0.1,10.0.0.0/8")
    async with export_server(pool, trusted_proxies=trusted) as base:
        # The left-most entry is whatever the client wrote: not believed past 203.0.113.7.
        chain = {"X-Forwarded-For": "198.51.100.9, 203.0.113.7, 10.0.0.5,10.0.0.6"}
        assert (await _client_seen(base, chain))["remote"] == "203.0.113.7"
        forwarded = {
            "Forwarded": "for=198.51.100.9, for=203.0.113.7;proto=https, for=10.1.2.3;proto=http"
        }
        seen = await _client_seen(base, forwarded)
        assert (seen["remote"], seen["secure"]) == ("203.0.113.7", True)
        # Two header lines are one list.
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{base}/test/echo",
                headers=[("Forwarded", "for=203.0.113.9"), ("Forwarded", "for=10.0.0.7")],
            ) as response,
        ):
            assert (await response.json())["remote"] == "203.0.113.9"
        # Every hop trusted: the farthest is the best we know.
        assert (await _client_seen(base, {"X-Forwarded-For": "10.9.9.9, 10.0.0.5"}))[
            "remote"
        ] == "10.9.9.9"


async def test_forwarded_ipv6_and_obfuscated_identifiers(pool: asyncpg.Pool) -> None:
    trusted = TrustedProxies.parse("127.0.0.1,10.0.0.0/8")
    async with export_server(pool, trusted_proxies=trusted) as base:
        ipv6 = {"Forwarded": 'for="[2001:db8::1]:4711";proto=https'}
        seen = await _client_seen(base, ipv6)
        assert (seen["remote"], seen["secure"]) == ("2001:db8::1", True)
        for node in ("_hidden", "unknown", "_SEVKISEK"):
            assert (await _client_seen(base, {"Forwarded": f"for={node}"}))["remote"] == node
        # An identifier is never a trusted hop: the walk stops there.
        hidden = {"Forwarded": "for=198.51.100.9, for=_hidden, for=10.0.0.5"}
        assert (await _client_seen(base, hidden))["remote"] == "_hidden"
        assert (await _client_seen(base, {"X-Forwarded-For": "unknown"}))["remote"] == "unknown"


@pytest.mark.parametrize(
    "headers",
    [
        {"Forwarded": "for="},
        {"Forwarded": "garbage"},
        {"Forwarded": 'for="[2001:db8::1"'},
        {"Forwarded": "for=2001:db8::1"},  # IPv6 must be quoted and bracketed
        {"Forwarded": "for=1.2.3.999"},
        {"Forwarded": "for=example.com"},
        {"Forwarded": "for=203.0.113.7;for=203.0.113.8"},
        {"Forwarded": "for=203.0.113.7;proto=gopher"},
        {"Forwarded": 'for=203.0.113.7;host="evil host/"'},
        {"Forwarded": 'for=203.0.113.7;host="api.example:99999"'},
        {"Forwarded": 'for=203.0.113.7;host="[::1::2]"'},
        {"Forwarded": "proto=https"},
        {"Forwarded": 'for="unterminated'},
        {"X-Forwarded-For": "not-an-ip"},
        {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https, ftp"},
        {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Host": "a" * 300},
        {"X-Forwarded-For": ", ".join(["203.0.113.7"] * 100)},
    ],
)
async def test_malformed_forwarding_headers_are_ignored_not_an_error(
    pool: asyncpg.Pool, headers: dict[str, str]
) -> None:
    trusted = TrustedProxies.parse("127.0.0.1")
    async with export_server(pool, trusted_proxies=trusted) as base:
        seen = await _client_seen(base, headers)
        assert (seen["remote"], seen["secure"]) == ("127.0.0.1", False)


async def test_only_a_trusted_proxy_makes_a_remote_credential_count_as_https(
    pool: asyncpg.Pool, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    _, token = await _account_token(pool)
    trusted = TrustedProxies.parse("127.0.0.1")
    async with export_server(pool, trusted_proxies=trusted, tracer_provider=provider) as base:
        # The client is remote and reached the proxy over plaintext: refused.
        plain = {"Forwarded": "for=203.0.113.7;proto=http"}
        status, _, problem = await _get(f"{base}/v1/me", plain, token)
        assert status == 401
        assert "plaintext" in problem
        assert (await _get(f"{base}/v1/me", {"X-Forwarded-For": "203.0.113.7"}, token))[0] == 401
        # The proxy terminated TLS for it: accepted.
        https = {"Forwarded": "for=203.0.113.7;proto=https"}
        assert (await _get(f"{base}/v1/me", https, token))[0] == 200
    assert (_spans(exporter)[-1].attributes or {})["client.address"] == "203.0.113.7"


# --- rate limit --------------------------------------------------------------------


async def test_a_credential_over_its_rate_gets_429_with_retry_after(pool: asyncpg.Pool) -> None:
    clock = FakeClock()
    _, token = await _account_token(pool)
    _, other = await _account_token(pool)
    limit = RateLimit(rate_per_s=0.25, burst=2, clock=clock)
    async with export_server(pool, rate_limit=limit) as base:
        me = f"{base}/v1/me"
        assert [(await _get(me, token=token))[0] for _ in range(2)] == [200, 200]
        status, headers, body = await _get(me, {"X-Request-Id": "r-429"}, token)
        assert status == 429
        assert headers["Content-Type"].startswith("application/problem+json")
        assert headers["Retry-After"] == "4"  # one token at 0.25/s
        assert (headers["RateLimit-Limit"], headers["RateLimit-Remaining"]) == ("2", "0")
        assert headers["RateLimit-Reset"] == "8"
        assert headers["X-Request-Id"] == "r-429"
        problem = json.loads(body)
        assert (problem["status"], problem["instance"]) == (429, "/v1/me")
        assert token not in body
        # Another credential has its own bucket.
        assert (await _get(me, token=other))[0] == 200
        clock.now += 1.0
        assert (await _get(me, token=token))[1]["Retry-After"] == "3"
        clock.now += 3.0
        assert (await _get(me, token=token))[0] == 200
        assert (await _get(me, token=token))[0] == 429


async def test_probes_open_paths_and_refused_credentials_are_not_limited(
    pool: asyncpg.Pool,
) -> None:
    clock = FakeClock()
    limit = RateLimit(rate_per_s=1, burst=1, clock=clock)
    async with export_server(pool, rate_limit=limit) as base:
        for path in ("/healthz", "/readyz", "/test/echo"):
            statuses = {(await _get(f"{base}{path}"))[0] for _ in range(5)}
            assert 429 not in statuses, path
        # A flood of distinct bad tokens: refused as bad, never counted or remembered.
        statuses = {(await _get(f"{base}/v1/me", token=f"hoff_at_bad{i}"))[0] for i in range(20)}
        assert statuses == {401}


async def test_no_rate_limit_when_turned_off(pool: asyncpg.Pool) -> None:
    _, token = await _account_token(pool)
    async with export_server(pool, rate_limit=None) as base:
        statuses = {(await _get(f"{base}/v1/me", token=token))[0] for _ in range(50)}
        assert statuses == {200}

"""The export API's cross-cutting middleware: request ids, the client behind trusted
proxies, a server span per request, and the per-credential rate limit.

Order in the app: request id (first, so every answer carries one), forwarded headers,
tracing (it sees the client and the final status), problems, access (which calls the
rate limit once the caller is known).
"""

from __future__ import annotations

import re
import time
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import metrics, propagate, trace

from services.common.auth.context import current_caller, current_request_id
from services.common.auth.http_access import AfterAuth
from services.common.auth.model import Caller
from services.export.forwarded import TrustedProxies
from services.export.problems import problem_response
from services.export.rate_limit import RateLimit, TokenBuckets

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID = web.RequestKey("request_id", str)
# Visible ASCII only: the id lands in logs and in a response header.
_VALID_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
PROBE_PATHS = frozenset({"/healthz", "/readyz"})


def request_id_of(presented: str | None) -> str:
    """The presented id when it is 1-128 visible ASCII characters, else a new one."""
    if presented is not None and _VALID_REQUEST_ID.fullmatch(presented):
        return presented
    return uuid.uuid4().hex


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Take or make the request id, put it where logs find it, and echo it."""
    request_id = request_id_of(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID] = request_id
    current_request_id.set(request_id)
    response = await handler(request)
    if not response.prepared:  # a streamed one got it from echo_request_id
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, streamed ones and raised ones included."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id


def forwarded_middleware(trusted: TrustedProxies) -> Middleware:
    """Believe Forwarded / X-Forwarded-* only from a trusted peer; downstream,
    `request.remote`, `.scheme`, `.secure` and `.url` then describe the client."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        headers = request.headers
        view = trusted.resolve(
            request.remote,
            headers.getall("Forwarded", []),
            headers.getall("X-Forwarded-For", []),
            headers.getall("X-Forwarded-Proto", []),
            headers.getall("X-Forwarded-Host", []),
        )
        if view is None:
            return await handler(request)
        client = request.clone(
            remote=view.remote,
            scheme=view.scheme or request.scheme,
            host=view.host or request.host,
        )
        return await handler(client)

    return middleware


def _route_of(request: web.Request) -> str:
    """The route template (/v1/accounts/{account_id}), never the raw path: low cardinality."""
    if request.match_info.http_exception is not None:  # 404, 405: no route matched
        return ""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else ""


def tracing_middleware(
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> Middleware:
    """A SERVER span per request, child of the incoming traceparent/tracestate, and the
    http.server.request.duration histogram (what the aiohttp instrumentation recorded)."""
    tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
    duration = metrics.get_meter(__name__, meter_provider=meter_provider).create_histogram(
        "http.server.request.duration", unit="s", description="Duration of HTTP server requests."
    )

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = _route_of(request)
        method = request.method
        started = time.perf_counter()
        status = 500  # an exception that escapes is answered 500 by aiohttp
        with tracer.start_as_current_span(
            f"{method} {route}" if route else method,
            context=propagate.extract(request.headers),
            kind=trace.SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.scheme": request.scheme,
                "client.address": request.remote or "",
                "handoff.request_id": request.get(REQUEST_ID, ""),
            },
        ) as span:
            if route:
                span.set_attribute("http.route", route)
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(trace.StatusCode.ERROR)
                caller = current_caller.get()
                if caller is not None:  # the credential id, never the token
                    span.set_attribute("handoff.credential_id", str(caller.credential_id))
                labels: dict[str, str | int] = {
                    "http.request.method": method,
                    "http.response.status_code": status,
                }
                if route:
                    labels["http.route"] = route
                duration.record(time.perf_counter() - started, labels)

    return middleware


def rate_limit_check(limit: RateLimit) -> AfterAuth:
    """The access middleware's after-auth hook: one token bucket per credential id.

    Only authenticated calls are counted: refused credentials cost the Authenticator one
    cached look-up each, and keying them by address would put every client of an
    untrusted gateway in one bucket. Open paths (probes, signed links) never get here.
    """
    buckets = TokenBuckets(limit)

    def check(request: web.Request, caller: Caller) -> web.StreamResponse | None:
        if request.path in PROBE_PATHS:
            return None
        verdict = buckets.take(caller.credential_id)
        if verdict.allowed:
            return None
        return problem_response(
            429,
            f"this credential's rate limit ({limit.rate_per_s:g} requests/s, bursts of "
            f"{limit.burst}) is spent; retry after {verdict.retry_after_s} s",
            instance=request.path,
            headers={
                "Retry-After": str(verdict.retry_after_s),
                "RateLimit-Limit": str(verdict.limit),
                "RateLimit-Remaining": str(verdict.remaining),
                "RateLimit-Reset": str(verdict.reset_s),
            },
        )

    return check

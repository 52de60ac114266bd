"""The export service's aiohttp application and the listener that serves it."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from services.common.auth.http_access import access_middleware, add_route, check_rules
from services.common.auth.verify import Authenticator
from services.export.audience_routes import AudienceRoutes
from services.export.audit_routes import AuditRoutes
from services.export.caller_routes import caller_routes
from services.export.delivery_routes import DeliveryRoutes
from services.export.forwarded import TrustedProxies
from services.export.health_routes import HealthEndpoints, HealthStore, Readiness
from services.export.link_routes import LINK_PATHS, LinkRoutes
from services.export.middleware import (
    echo_request_id,
    forwarded_middleware,
    rate_limit_check,
    request_id_middleware,
    tracing_middleware,
)
from services.export.openapi import OPENAPI_PATH, add_openapi_route
from services.export.problems import problem_middleware, problem_response
from services.export.rate_limit import DEFAULT_RATE_LIMIT, RateLimit
from services.export.referral_routes import ReferralRoutes
from services.export.zapier_routes import ZapierRoutes

OPEN_PATHS = ("/healthz", "/readyz", OPENAPI_PATH)


def _problem(status: int, detail: str, instance: str, headers: dict[str, str]) -> web.Response:
    return problem_response(status, detail, instance=instance, headers=headers or None)


def create_app(
    store: HealthStore,
    readiness: Readiness,
    authenticator: Authenticator,
    *,
    expected_schema_version: int,
    health_timeout_s: float,
    tls_terminated_upstream: bool = False,
    links: LinkRoutes | None = None,
    referrals: ReferralRoutes | None = None,
    audit: AuditRoutes | None = None,
    trusted_proxies: TrustedProxies | None = None,
    rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    deliveries: DeliveryRoutes | None = None,
    audiences: AudienceRoutes | None = None,
    zapier: ZapierRoutes | None = None,
) -> web.Application:
    """Build the app: probe endpoints (open) and the API (every route behind a rule);
    every error answered as problem+json, every answer with an X-Request-Id.

    `trusted_proxies` None believes no forwarding header; `rate_limit` None limits
    nothing; the providers default to the global ones."""
    access = access_middleware(
        authenticator,
        _problem,
        tls_terminated_upstream=tls_terminated_upstream,
        after_auth=rate_limit_check(rate_limit) if rate_limit is not None else None,
    )
    app = web.Application(
        middlewares=[
            request_id_middleware,  # first: every answer, even a 500, carries the id
            forwarded_middleware(trusted_proxies or TrustedProxies()),
            tracing_middleware(tracer_provider, meter_provider),
            problem_middleware,
            access,
        ]
    )
    app.on_response_prepare.append(echo_request_id)
    HealthEndpoints(
        store,
        readiness,
        expected_schema_version=expected_schema_version,
        timeout_s=health_timeout_s,
    ).add_routes(app)
    add_openapi_route(app)
    routes = caller_routes()
    for mounted in (referrals, deliveries, audit, audiences, zapier):
        routes += mounted.routes() if mounted is not None else []
    for method, path, handler, rule in routes:
        add_route(app, method, path, handler, rule)
    if links is not None:  # signed links: the signature is the permission
        links.add_routes(app)
    check_rules(app, OPEN_PATHS + (LINK_PATHS if links is not None else ()))
    return app


@asynccontextmanager
async def serve_http(
    app: web.Application,
    host: str,
    port: int,
    *,
    grace_s: float,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[int]:
    """Serve `app` until the block exits, yielding the bound port (useful with port 0).

    On exit the listener closes at once and requests in flight get `grace_s` to finish.
    """
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=grace_s)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound: int = runner.addresses[0][1]
        yield bound
    finally:
        await runner.cleanup()

"""The export service's aiohttp application and the listener that serves it."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from services.common.auth.http_access import access_middleware, add_route, check_rules
from services.common.auth.verify import Authenticator
from services.export.caller_routes import caller_routes
from services.export.delivery_routes import DeliveryRoutes
from services.export.health_routes import HealthEndpoints, HealthStore, Readiness
from services.export.link_routes import LINK_PATHS, LinkRoutes
from services.export.problems import problem_middleware, problem_response

OPEN_PATHS = ("/healthz", "/readyz")


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
    deliveries: DeliveryRoutes | None = None,
) -> web.Application:
    """Build the app: probe endpoints (open) and the API (every route behind a rule);
    every error answered as problem+json."""
    access = access_middleware(
        authenticator, _problem, tls_terminated_upstream=tls_terminated_upstream
    )
    app = web.Application(middlewares=[problem_middleware, access])
    HealthEndpoints(
        store,
        readiness,
        expected_schema_version=expected_schema_version,
        timeout_s=health_timeout_s,
    ).add_routes(app)
    for method, path, handler, rule in caller_routes():
        add_route(app, method, path, handler, rule)
    for method, path, handler, rule in deliveries.routes() if deliveries is not None else ():
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

"""The export service's aiohttp application and the listener that serves it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from services.export.health_routes import HealthEndpoints, HealthStore, Readiness
from services.export.problems import problem_middleware


def create_app(
    store: HealthStore,
    readiness: Readiness,
    *,
    expected_schema_version: int,
    health_timeout_s: float,
) -> web.Application:
    """Build the app: probe endpoints; every error answered as problem+json."""
    app = web.Application(middlewares=[problem_middleware])
    HealthEndpoints(
        store,
        readiness,
        expected_schema_version=expected_schema_version,
        timeout_s=health_timeout_s,
    ).add_routes(app)
    return app


@asynccontextmanager
async def serve_http(
    app: web.Application, host: str, port: int, *, grace_s: float
) -> AsyncIterator[int]:
    """Serve `app` until the block exits, yielding the bound port (useful with port 0).

    On exit the listener closes at once and requests in flight get `grace_s` to finish.
    """
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=grace_s)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound: int = runner.addresses[0][1]
        yield bound
    finally:
        await runner.cleanup()

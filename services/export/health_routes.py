"""GET /healthz (the database answers) and GET /readyz (fit to take traffic)."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from aiohttp import web

from services.common.db import DatabaseError
from services.export.problems import problem_response

log = logging.getLogger(__name__)


class HealthStore(Protocol):
    """What the health endpoints read from the database."""

    async def ping(self) -> None: ...
    async def schema_version(self) -> int: ...


class Readiness:
    """Whether the process still takes new work; turned off once on shutdown."""

    def __init__(self) -> None:
        self._draining = False

    @property
    def draining(self) -> bool:
        """True once shutdown began."""
        return self._draining

    def begin_draining(self) -> None:
        """Refuse readiness from now on (load balancers stop sending traffic)."""
        self._draining = True


class HealthEndpoints:
    """The two probe handlers, bound to a store and the process's readiness."""

    def __init__(
        self,
        store: HealthStore,
        readiness: Readiness,
        *,
        expected_schema_version: int,
        timeout_s: float,
    ) -> None:
        self._store = store
        self._readiness = readiness
        self._expected_schema_version = expected_schema_version
        self._timeout_s = timeout_s

    def add_routes(self, app: web.Application) -> None:
        """Mount /healthz and /readyz on `app`."""
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)

    async def _database_problem(self) -> str | None:
        """None when the database answers in time, else why not."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._store.ping()
        except TimeoutError:
            return f"the database did not answer within {self._timeout_s:g} s"
        except DatabaseError as exc:
            log.warning("database check failed: %s", exc)
            return "the database is unavailable"
        return None

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        """200 {"status": "ok"} when the database answers, else 503 problem+json."""
        problem = await self._database_problem()
        if problem is not None:
            log.warning("health check failed: %s", problem)
            return problem_response(503, problem, instance=request.path)
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        """200 when not shutting down, the database answers and its schema is current."""
        if self._readiness.draining:
            return problem_response(503, "shutting down", instance=request.path)
        problem = await self._database_problem()
        if problem is not None:
            return problem_response(503, problem, instance=request.path)
        try:
            async with asyncio.timeout(self._timeout_s):
                version = await self._store.schema_version()
        except TimeoutError:
            detail = f"the schema version was not read within {self._timeout_s:g} s"
            return problem_response(503, detail, instance=request.path)
        except DatabaseError as exc:
            log.warning("schema version check failed: %s", exc)
            return problem_response(503, "the database is unavailable", instance=request.path)
        if version < self._expected_schema_version:
            return problem_response(
                503,
                f"database schema is at version {version}, the code needs "
                f"{self._expected_schema_version}: run the migrations",
                instance=request.path,
            )
        return web.json_response({"status": "ready", "schema_version": version})

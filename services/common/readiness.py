"""Readiness that follows the database: the gRPC health service `readiness` turns
NOT_SERVING once the database has failed its checks for `grace_s`, and SERVING again when
it answers. The overall health ("", for liveness) stays SERVING: a pod whose database is
down is not broken, it only cannot work, so Kubernetes stops routing to it instead of
restarting it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from grpc_health.v1 import health, health_pb2

log = logging.getLogger(__name__)

READINESS_SERVICE = "readiness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
Check = Callable[[], Awaitable[object]]


async def follow_readiness(
    servicer: health.aio.HealthServicer,
    check: Check,
    *,
    every_s: float = 2.0,
    timeout_s: float = 2.0,
    grace_s: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run until cancelled: set `readiness` from `check` (which raises or times out when
    the dependency is down)."""
    failing_since: float | None = None
    ready = True
    await servicer.set(READINESS_SERVICE, SERVING)
    while True:
        try:
            async with asyncio.timeout(timeout_s):
                await check()
        except Exception as exc:  # any failure of the dependency counts
            failing_since = failing_since if failing_since is not None else clock()
            if ready and clock() - failing_since >= grace_s:
                ready = False
                log.warning("not ready: the database has failed for %.0f s: %s", grace_s, exc)
                await servicer.set(READINESS_SERVICE, NOT_SERVING)
        else:
            failing_since = None
            if not ready:
                ready = True
                log.info("ready again: the database answers")
                await servicer.set(READINESS_SERVICE, SERVING)
        await asyncio.sleep(every_s)


def database_answers(pool: object) -> Check:
    """A check that the pool's database answers a trivial query."""

    async def check() -> object:
        return await pool.fetchval("SELECT 1")  # type: ignore[attr-defined]

    return check

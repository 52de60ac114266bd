"""Runs the ingest service: python -m services.ingest."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from contextlib import AsyncExitStack

from services.common.auth.store import CredentialStore
from services.common.auth.verify import Authenticator
from services.common.config import ServiceConfig, env_float, env_int
from services.common.db import create_pool
from services.common.grpc_server import grpc_server_for
from services.common.readiness import database_answers
from services.common.service import announce, run_service, until_shutdown_or_failure
from services.common.watermark_monitor import WatermarkMonitor
from services.ingest.memory_budget import DEFAULT_BUDGET_BYTES, MIB
from services.ingest.server import STREAM_IDLE_S
from services.ingest.services import ingest_services
from services.ingest.store import IngestStore

DEFAULT_PORT = 50051


async def serve(config: ServiceConfig) -> None:
    """Serve IngestService and AccountService until SIGTERM, or until a task they own dies."""
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(
            create_pool(
                config.database_url, min_size=config.db_pool_min, max_size=config.db_pool_max
            )
        )
        credential_store = CredentialStore(pool)
        authenticator = Authenticator(credential_store, cache_ttl_s=config.access.auth_cache_ttl_s)
        # Entered before the server, so closed after it: calls in flight still drain.
        env = os.environ
        ingest = await stack.enter_async_context(
            ingest_services(
                IngestStore(pool),
                credential_store,
                stream_idle_s=env_float(env, "HANDOFF_INGEST_STREAM_IDLE_S", STREAM_IDLE_S),
                memory_budget_bytes=MIB
                * env_int(
                    env, "HANDOFF_INGEST_MEMORY_BUDGET_MB", DEFAULT_BUDGET_BYTES // MIB, minimum=1
                ),
            )
        )
        running = await stack.enter_async_context(
            grpc_server_for(config, ingest.grpc, authenticator, database_answers(pool))
        )
        announce("ingest", "gRPC", config.host, running.port)
        monitor = WatermarkMonitor(
            pool,
            every_s=env_float(env, "HANDOFF_WATERMARK_CHECK_S", 15.0),
            warn_after_s=env_float(env, "HANDOFF_WATERMARK_WARN_AFTER_S", 60.0),
        )
        watching = asyncio.create_task(monitor.run(), name="watermark monitor")
        try:
            await until_shutdown_or_failure(ingest.failed())
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching


if __name__ == "__main__":
    sys.exit(run_service("ingest", DEFAULT_PORT, serve, workers_allowed=True))

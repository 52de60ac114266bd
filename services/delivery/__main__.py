"""Runs the delivery service: python -m services.delivery."""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack

from services.common.auth.store import CredentialStore
from services.common.auth.verify import Authenticator
from services.common.config import ServiceConfig
from services.common.db import create_pool
from services.common.grpc_server import grpc_server_for, wait_for_shutdown_signal
from services.common.service import announce, run_service
from services.delivery.services import delivery_services

DEFAULT_PORT = 50053


async def serve(config: ServiceConfig) -> None:
    """Serve the delivery service's gRPC services (health at least) until SIGTERM."""
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(
            create_pool(
                config.database_url, min_size=config.db_pool_min, max_size=config.db_pool_max
            )
        )
        authenticator = Authenticator(
            CredentialStore(pool), cache_ttl_s=config.access.auth_cache_ttl_s
        )
        running = await stack.enter_async_context(
            grpc_server_for(config, delivery_services(pool), authenticator)
        )
        announce("delivery", "gRPC", config.host, running.port)
        await wait_for_shutdown_signal()


if __name__ == "__main__":
    sys.exit(run_service("delivery", DEFAULT_PORT, serve))

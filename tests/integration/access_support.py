"""Every gRPC service of every Handoff process on one test server, with credentials."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from services.common.auth.store import CredentialStore
from services.common.auth.verify import Authenticator
from services.common.grpc_server import GrpcService, RunningServer, grpc_server
from services.delivery.services import delivery_services
from services.ingest.services import ingest_services
from services.ingest.store import IngestStore
from services.scheduler.services import scheduler_services


def every_service(pool: asyncpg.Pool) -> list[GrpcService]:
    """What the ingest, scheduler, delivery and export processes mount (export: none)."""
    return [
        *ingest_services(IngestStore(pool), CredentialStore(pool)),
        *scheduler_services(pool),
        *delivery_services(pool),
    ]


@asynccontextmanager
async def serve_everything(
    pool: asyncpg.Pool, authenticator: Authenticator
) -> AsyncIterator[RunningServer]:
    """Every service on a free loopback port."""
    async with grpc_server(
        "127.0.0.1", 0, every_service(pool), authenticator=authenticator, grace_s=0.5
    ) as running:
        yield running

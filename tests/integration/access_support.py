"""Every gRPC service of every Handoff process on one test server, with credentials."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from services.common.auth.store import CredentialStore
from services.common.auth.verify import Authenticator
from services.common.egress import EgressPolicy
from services.common.grpc_server import GrpcService, RunningServer, grpc_server
from services.common.referral_rows import ReferralRowReader
from services.common.secrets import SecretBox, new_key_entry
from services.delivery.engine import DeliveryEngine, RetryPolicy
from services.delivery.services import delivery_services
from services.delivery.store import DeliveryStorePg
from services.ingest.services import ingest_services
from services.ingest.store import IngestStore
from services.scheduler.recipients.rules import Confirmations
from services.scheduler.services import scheduler_services

TEST_BOX = SecretBox.from_env({"HANDOFF_SECRET_KEYS": new_key_entry("test")})
LOOPBACK = EgressPolicy.from_env({"HANDOFF_EGRESS_ALLOW": "127.0.0.0/8"})
# Quick retries, so tests see a retry without waiting for it.
QUICK_RETRY = RetryPolicy(first_s=0.05, factor=1.0, max_s=0.05, window_s=3600.0, jitter=0.0)


def make_engine(pool: asyncpg.Pool, **options: object) -> DeliveryEngine:
    """The delivery engine over the test's database, loopback allowed, quick retries."""
    settings: dict[str, object] = {"lease_s": 5.0, "retry": QUICK_RETRY}
    settings.update(options)
    return DeliveryEngine(
        DeliveryStorePg(pool),
        ReferralRowReader(pool),
        TEST_BOX,
        LOOPBACK,
        **settings,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def every_service(
    pool: asyncpg.Pool,
    engine: DeliveryEngine | None = None,
    confirmations: Confirmations | None = None,
) -> AsyncIterator[list[GrpcService]]:
    """What the ingest, scheduler, delivery and export processes mount (export: none)."""
    async with ingest_services(IngestStore(pool), CredentialStore(pool)) as ingest:
        yield [
            *ingest.grpc,
            *scheduler_services(pool, TEST_BOX, LOOPBACK, confirmations),
            *delivery_services(engine or make_engine(pool)),
        ]


@asynccontextmanager
async def serve_everything(
    pool: asyncpg.Pool,
    authenticator: Authenticator,
    engine: DeliveryEngine | None = None,
    confirmations: Confirmations | None = None,
) -> AsyncIterator[RunningServer]:
    """Every service on a free loopback port."""
    async with (
        every_service(pool, engine, confirmations) as services,
        grpc_server("127.0.0.1", 0, services, authenticator=authenticator, grace_s=0.5) as running,
    ):
        yield running

"""What the fault tests share: an ingest server over a private cluster's database, and
checks of what a client sees (the status, its RetryInfo, health, the rows stored)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from services.common.auth.client import credential_channel
from services.common.auth.model import Role
from services.common.auth.store import CredentialStore
from services.common.db import create_pool
from services.common.gen.handoff.ingest.v1 import ingest_pb2, ingest_pb2_grpc, referral_pb2
from services.common.grpc_server import MAX_MESSAGE_BYTES, RunningServer, grpc_server
from services.ingest.memory_budget import DEFAULT_BUDGET_BYTES
from services.ingest.services import ingest_services
from services.ingest.store import IngestStore
from tests.integration.credentials_support import authenticator, service_token
from tests.integration.factories import referral
from tests.integration.layouts_support import create_account

if TYPE_CHECKING:
    from services.common.gen.handoff.ingest.v1.ingest_pb2_grpc import IngestServiceAsyncStub

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)


@dataclass
class Served:
    """An ingest server on a private database, a client of it, and what it acknowledged."""

    running: RunningServer
    pool: asyncpg.Pool
    channel: grpc.aio.Channel
    ingest: IngestServiceAsyncStub
    account_id: str
    campaign_id: str
    token: str
    acknowledged: set[str]

    def referrals(self, prefix: str, count: int) -> list[referral_pb2.Referral]:
        """`count` valid referrals of the served campaign, partner ids `prefix-<i>`."""
        return [referral(self.account_id, self.campaign_id, f"{prefix}-{i}") for i in range(count)]

    async def batch(self, rows: list[referral_pb2.Referral], **kwargs: Any) -> None:
        """IngestBatch; every row it answers stored is remembered as acknowledged."""
        reply = await self.ingest.IngestBatch(
            ingest_pb2.IngestBatchRequest(referrals=rows), **kwargs
        )
        stored = (ingest_pb2.RowResult.ACCEPTED, ingest_pb2.RowResult.DUPLICATE)
        self.acknowledged.update(r.partner_referral_id for r in reply.results if r.status in stored)

    async def unary(self, row: referral_pb2.Referral, **kwargs: Any) -> None:
        """Ingest; the row is acknowledged once it answers."""
        await self.ingest.Ingest(ingest_pb2.IngestRequest(referral=row), **kwargs)
        self.acknowledged.add(row.partner_referral_id)

    async def stream(self, rows: Iterable[referral_pb2.Referral], **kwargs: Any) -> None:
        """IngestStream of `rows`; all are acknowledged when the summary comes."""
        rows = list(rows)
        call = self.ingest.IngestStream(**kwargs)
        try:
            for row in rows:
                await call.write(ingest_pb2.IngestRequest(referral=row))
            await call.done_writing()
        except asyncio.InvalidStateError:
            pass  # the server ended the call early: its status says why
        summary = await call
        assert summary.received == len(rows), summary
        rejected = ingest_pb2.RowResult.REJECTED
        refused = {r.partner_referral_id for r in summary.not_accepted if r.status == rejected}
        ids = (row.partner_referral_id for row in rows)
        self.acknowledged.update(i for i in ids if i not in refused)

    async def health(self, service: str = "") -> int:
        """The health service's answer for `service` ("" is liveness), within 5 s."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        status: int = answer.status
        return status

    async def assert_nothing_acknowledged_is_lost(self) -> None:
        """Every acknowledged partner id is stored (checked on a fresh connection)."""
        stored = await self.stored_ids()
        missing = self.acknowledged - stored
        assert not missing, (
            f"{len(missing)} acknowledged rows are not stored: {sorted(missing)[:5]}"
        )

    async def stored_ids(self) -> set[str]:
        """The partner ids stored for the served account."""
        records = await self.pool.fetch(
            "SELECT partner_referral_id FROM referrals WHERE account_id = $1", self.account_id
        )
        return {r["partner_referral_id"] for r in records}


@asynccontextmanager
async def served(
    dsn: str,
    *,
    pool_max: int = 10,
    pool_min: int = 1,
    stream_idle_s: float = 30.0,
    memory_budget_bytes: int = DEFAULT_BUDGET_BYTES,
    acquire_timeout_s: float = 10.0,
    **server_options: Any,
) -> AsyncIterator[Served]:
    """IngestService over `dsn`, on a free loopback port, with a client presenting an
    INGEST credential and a fresh account and campaign."""
    async with create_pool(dsn, min_size=pool_min, max_size=pool_max) as pool:
        account, campaign = (str(x) for x in await create_account(pool))
        token = await service_token(pool, Role.INGEST)
        # Long enough that the credential stays cached while the database is away.
        verify = authenticator(pool, cache_ttl_s=300)
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        async with (
            ingest_services(
                IngestStore(pool, acquire_timeout_s=acquire_timeout_s),
                CredentialStore(pool),
                stream_idle_s=stream_idle_s,
                memory_budget_bytes=memory_budget_bytes,
            ) as services,
            grpc_server(
                "127.0.0.1", 0, services.grpc, authenticator=verify, grace_s=1.0, **server_options
            ) as running,
            credential_channel(f"127.0.0.1:{running.port}", token, options=options) as channel,
        ):
            ingest = ingest_pb2_grpc.IngestServiceStub(channel)
            client = Served(running, pool, channel, ingest, account, campaign, token, set())
            await client.unary(referral(account, campaign, "warm-up"))  # caches the credential
            yield client


@asynccontextmanager
async def table_locked(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """`referrals` locked by another session for the block: writers wait for it."""
    locker = await asyncpg.connect(dsn)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE referrals IN ACCESS EXCLUSIVE MODE")
            yield locker
    finally:
        await locker.close()


def retry_info(error: grpc.aio.AioRpcError) -> error_details_pb2.RetryInfo | None:
    """The RetryInfo in a failed call's google.rpc.Status details, if any."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info
    return None


def assert_retryable(
    error: BaseException, codes: tuple[grpc.StatusCode, ...] = RETRYABLE
) -> grpc.aio.AioRpcError:
    """The failure is one of `codes`, with RetryInfo, and says nothing of the driver."""
    assert isinstance(error, grpc.aio.AioRpcError), repr(error)
    assert error.code() in codes, (error.code(), error.details())
    assert retry_info(error) is not None, f"no RetryInfo in {error.code()}: {error.details()}"
    assert "asyncpg" not in (error.details() or "")
    return error


async def backends_waiting_on_a_lock(admin: asyncpg.Connection, database: str) -> list[int]:
    """Pids of the backends of `database` waiting for a lock."""
    records = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
        database,
    )
    return [r["pid"] for r in records]


async def wait_for(condition: Any, timeout_s: float = 10.0) -> Any:
    """Poll the coroutine function `condition` until it returns something true."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await condition()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{condition} stayed false for {timeout_s} s")
        await asyncio.sleep(0.02)

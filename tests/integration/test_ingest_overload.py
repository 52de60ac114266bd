"""Overload is answered RESOURCE_EXHAUSTED with RetryInfo, or accepted: a burst over gRPC
core's pending-request cap, a byte budget exceeded, stalled streams at the limit. Health
answers throughout, and nothing acknowledged is lost (on a PostgreSQL of the tests' own)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.common.auth.client import credential_channel
from services.common.gen.handoff.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from services.ingest.memory_budget import MemoryBudget
from tests.integration.factories import referral
from tests.integration.fault_support import (
    assert_retryable,
    backends_waiting_on_a_lock,
    served,
    table_locked,
    wait_for,
)

pytestmark = pytest.mark.integration
SERVING = health_pb2.HealthCheckResponse.SERVING
BURST = 2000


@pytest.mark.parametrize("limit", [1000, 100])
async def test_a_burst_over_the_pending_cap_is_accepted_or_refused_with_retry_info(
    private_database: str, limit: int
) -> None:
    # 2,000 calls at once: twice gRPC core's default pending cap, and over the bound on
    # calls in flight (the default, and a smaller one).
    async with served(private_database, max_concurrent_rpcs=limit) as client:
        token = client.token
        target = f"127.0.0.1:{client.running.port}"
        # Several connections, as many clients would open: one channel's calls could
        # also queue at the client, behind the connection's stream limit.
        channels = [credential_channel(target, token) for _ in range(4)]
        opened = [await c.__aenter__() for c in channels]
        try:
            stubs = [ingest_pb2_grpc.IngestServiceStub(c) for c in opened]
            rows = client.referrals("burst", BURST)

            ended: list[int] = []

            async def one(i: int) -> grpc.StatusCode:
                request = ingest_pb2.IngestRequest(referral=rows[i])
                try:
                    await stubs[i % len(stubs)].Ingest(request, timeout=90)
                except grpc.aio.AioRpcError as error:
                    if error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                        assert_retryable(error, (grpc.StatusCode.RESOURCE_EXHAUSTED,))
                    return error.code()
                finally:
                    ended.append(i)
                client.acknowledged.add(rows[i].partner_referral_id)
                return grpc.StatusCode.OK

            # Writes wait meanwhile, so the calls that are let in stay in flight.
            # Held until all but `limit` calls have ended: the rest are the ones let in.
            async with table_locked(private_database):
                burst = asyncio.gather(*(one(i) for i in range(BURST)))

                async def all_but_the_admitted_ended() -> bool:
                    return len(ended) >= BURST - limit

                await wait_for(all_but_the_admitted_ended, timeout_s=60)
                assert await client.health() == SERVING
            codes = Counter(await burst)
        finally:
            for c in channels:
                await c.__aexit__(None, None, None)
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        assert codes[grpc.StatusCode.OK] > 0
        assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] >= BURST - limit, codes
        await client.assert_nothing_acknowledged_is_lost()


async def test_stalled_streams_at_the_limit_are_ended_when_idle_and_starve_nobody(
    private_database: str,
) -> None:
    limit, idle_s = 40, 1.5
    async with served(private_database, max_concurrent_rpcs=limit, stream_idle_s=idle_s) as client:
        rows = client.referrals("stalled", limit // 4)
        stalled = [client.ingest.IngestStream(timeout=30) for _ in rows]
        for call, row in zip(stalled, rows, strict=True):  # one message each, then nothing
            await call.write(ingest_pb2.IngestRequest(referral=row))

        async def all_stored() -> bool:
            return len(await client.stored_ids() & {r.partner_referral_id for r in rows}) == len(
                rows
            )

        await wait_for(all_stored)  # every stalled stream holds its slot now
        # The streams' share is taken: one more stream is refused, and told to retry ...
        extra = client.ingest.IngestStream(timeout=10)
        await extra.done_writing()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await extra
        assert_retryable(caught.value, (grpc.StatusCode.RESOURCE_EXHAUSTED,))
        # ... while unary and batch calls, and health, are still answered.
        await client.unary(client.referrals("unary", 1)[0], timeout=10)
        await client.batch(client.referrals("batch", 100), timeout=10)
        assert await client.health() == SERVING
        assert await client.health("handoff.ingest.v1.IngestService") == SERVING
        # After idle_s without a message, each stalled stream is ended, retryably; the
        # row it sent stays stored.
        started = asyncio.get_running_loop().time()
        for call in stalled:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            error = assert_retryable(caught.value, (grpc.StatusCode.UNAVAILABLE,))
            assert "sent nothing" in (error.details() or "")
        assert asyncio.get_running_loop().time() - started < idle_s + 5
        assert await all_stored()
        # Their slots are free again.
        await client.stream(client.referrals("after", 10), timeout=10)
        await client.assert_nothing_acknowledged_is_lost()


async def test_a_batch_beyond_the_memory_budget_is_refused_with_retry_info_and_a_stream_waits(
    private_database: str,
) -> None:
    # Room for one 2,000-row batch at a time (the ids are as long as the served ones).
    sample = [referral(str(uuid.uuid4()), str(uuid.uuid4()), f"first-{i}") for i in range(2000)]
    size = ingest_pb2.IngestBatchRequest(referrals=sample).ByteSize()
    budget = MemoryBudget().cost(size) * 3 // 2
    database = urlsplit(private_database).path.lstrip("/")
    async with served(private_database, memory_budget_bytes=budget) as client:
        first, second = client.referrals("first", 2000), client.referrals("second", 2000)
        admin = await asyncpg.connect(private_database)
        try:
            async with table_locked(private_database):
                held = asyncio.ensure_future(client.batch(first, timeout=30))
                # Admitted, and in flight: its transaction waits for the lock.
                await wait_for(lambda: backends_waiting_on_a_lock(admin, database))
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await client.batch(second, timeout=10)
                error = assert_retryable(caught.value, (grpc.StatusCode.RESOURCE_EXHAUSTED,))
                assert "memory budget" in (error.details() or "")
                # A stream is not refused: it waits for the budget, its client held back.
                streaming = asyncio.ensure_future(client.stream(client.referrals("waits", 2000)))
                assert await client.health() == SERVING
                await asyncio.sleep(0.3)
                assert not streaming.done()
        finally:
            await admin.close()
        await held
        await streaming
        await client.batch(second, timeout=30)  # the retry fits now
        await client.assert_nothing_acknowledged_is_lost()
        assert len(client.acknowledged) == 1 + 3 * 2000

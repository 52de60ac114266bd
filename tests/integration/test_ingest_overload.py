"""Overload is answered RESOURCE_EXHAUSTED with RetryInfo, or accepted: a burst over gRPC
core's pending-request cap, a byte budget exceeded, stalled streams at the limit. Health
answers throughout, and nothing acknowledged is lost (on a PostgreSQL of the tests' own)."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.common.auth.client import credential_channel
from services.common.gen.handoff.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tests.integration.fault_support import assert_retryable, served, table_locked, wait_for

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

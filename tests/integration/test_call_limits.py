"""The bound on calls in flight: stalled client streams take only their share, health is
always answered, and refusals are RESOURCE_EXHAUSTED with RetryInfo."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from services.common.auth.client import credential_channel
from services.common.auth.model import Role
from services.common.auth.store import CredentialStore
from services.common.gen.handoff.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from services.common.grpc_server import grpc_server
from services.ingest.services import ingest_services
from services.ingest.store import IngestStore
from tests.integration.credentials_support import authenticator, service_token
from tests.integration.factories import referral
from tests.integration.layouts_support import create_account

pytestmark = pytest.mark.integration


def _retry_info(error: grpc.aio.AioRpcError) -> bool:
    status = rpc_status.from_call(error)
    return (
        any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
        if status
        else False
    )


async def test_stalled_streams_take_only_their_share_and_health_still_answers(
    pool: asyncpg.Pool,
) -> None:
    account, campaign = (str(x) for x in await create_account(pool))
    token = await service_token(pool, Role.INGEST)
    async with (
        ingest_services(IngestStore(pool), CredentialStore(pool)) as services,
        grpc_server(
            "127.0.0.1", 0, services.grpc, authenticator=authenticator(pool), grace_s=0.5,
            max_concurrent_rpcs=4,
        ) as running,
        credential_channel(f"127.0.0.1:{running.port}", token) as channel,
    ):  # fmt: skip
        ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        stalled = ingest.IngestStream()  # one message, then nothing: holds the stream share
        await stalled.write(ingest_pb2.IngestRequest(referral=referral(account, campaign, "s-1")))
        # Its row stored: the server has started it, so it holds its slot now.
        for _ in range(500):
            if await pool.fetchval(
                "SELECT count(*) FROM referrals WHERE partner_referral_id = 's-1'"
            ):
                break
            await asyncio.sleep(0.01)
        second = ingest.IngestStream()
        await second.done_writing()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await second
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _retry_info(caught.value)
        # Unary calls still have room, and health is always answered.
        answer = await ingest.Ingest(
            ingest_pb2.IngestRequest(referral=referral(account, campaign, "u-1")), timeout=10
        )
        assert answer.seq > 0
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        await stalled.done_writing()
        summary = await stalled
        assert summary.accepted == 1

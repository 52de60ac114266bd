"""HANDOFF_INGEST_WORKERS: several ingest processes serve one port and stop together."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import psutil
import pytest

from services.common.auth.client import credential_channel
from services.common.gen.handoff.ingest.v1 import (
    accounts_pb2,
    accounts_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
)
from services.demo_data import synthetic_referrals
from tests.e2e.conftest import Starter, service_env

pytestmark = pytest.mark.e2e

ACCOUNT_ID = "0e2e0000-0000-4000-8000-0000000000a1"
CAMPAIGN_ID = "0e2e0000-0000-4000-8000-0000000000a2"


async def test_two_workers_share_the_port_store_every_referral_and_stop_on_sigterm(
    database_url: str, start_service: Starter, operator_token: str
) -> None:
    env = service_env(database_url, HANDOFF_INGEST_WORKERS="2")
    ingest = await start_service("ingest", env)
    parent = psutil.Process(ingest.child.process.pid)
    for _ in range(100):
        workers = parent.children()
        if workers:
            break
        await asyncio.sleep(0.05)
    assert len(workers) == 1  # the parent serves too

    # Separate connections, so the kernel spreads them over both processes.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        credential_channel(ingest.grpc_target, operator_token, options=options) for _ in range(8)
    ]
    try:
        await accounts_pb2_grpc.AccountServiceStub(channels[0]).CreateAccount(
            accounts_pb2.CreateAccountRequest(id=ACCOUNT_ID, name="Workers"), timeout=10
        )
        await accounts_pb2_grpc.AccountServiceStub(channels[0]).CreateCampaign(
            accounts_pb2.CreateCampaignRequest(account_id=ACCOUNT_ID, id=CAMPAIGN_ID, name="C"),
            timeout=10,
        )
        rows = synthetic_referrals(ACCOUNT_ID, CAMPAIGN_ID, 400, seed=21)
        replies = await asyncio.gather(
            *(
                ingest_pb2_grpc.IngestServiceStub(channels[i % 8]).Ingest(
                    ingest_pb2.IngestRequest(referral=row), timeout=20
                )
                for i, row in enumerate(rows)
            )
        )
    finally:
        for channel in channels:
            await channel.close()
    assert len({r.seq for r in replies}) == 400

    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM referrals") == 400
    finally:
        await conn.close()

    ingest.child.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(ingest.child.wait(), 20) == 0
    assert not workers[0].is_running() or workers[0].status() == psutil.STATUS_ZOMBIE

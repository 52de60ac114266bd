"""Committed ingests wake listeners on 'referrals_ingested' with the highest new seq."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import asyncpg
import pytest

from services.common.gen.handoff.ingest.v1 import ingest_pb2
from services.ingest.store import NOTIFY_CHANNEL, QUERIES, SMALL_BATCH, IngestStore
from tests.integration.conftest import Target
from tests.integration.factories import referral, valid_referral

if TYPE_CHECKING:
    from services.common.gen.handoff.ingest.v1.ingest_pb2_grpc import IngestServiceAsyncStub

QUIET_S = 0.3  # how long "no notification" is watched for


@pytest.fixture
async def notifications(database_url: str) -> AsyncIterator[asyncio.Queue[str]]:
    """Payloads received by a LISTEN connection, in order."""
    received: asyncio.Queue[str] = asyncio.Queue()
    conn = await asyncpg.connect(database_url)

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        received.put_nowait(payload)

    await conn.add_listener(NOTIFY_CHANNEL, on_notify)
    try:
        yield received
    finally:
        await conn.close()


def test_channel_is_the_documented_one() -> None:
    assert NOTIFY_CHANNEL == "referrals_ingested"


def test_every_notify_in_the_ingest_sql_names_the_channel_listeners_use() -> None:
    # The channel is written into the SQL text; listeners subscribe to NOTIFY_CHANNEL.
    sent = {
        (name, channel)
        for name, sql in QUERIES.items()
        for channel in re.findall(r"pg_notify\(\s*'([^']*)'", sql)
    }

    assert {name for name, _ in sent} == {
        "insert_referrals",
        "insert_staged_referrals",
        "notify_referrals_ingested",
    }
    assert {channel for _, channel in sent} == {NOTIFY_CHANNEL}
    assert all("pg_notify" not in sql or "pg_notify('" in sql for sql in QUERIES.values())


async def test_ingest_notifies_its_seq_after_commit(
    ingest: IngestServiceAsyncStub, target: Target, notifications: asyncio.Queue[str]
) -> None:
    response = await ingest.Ingest(
        ingest_pb2.IngestRequest(referral=referral(target.account_id, target.campaign_id, "p-1"))
    )

    payload = await asyncio.wait_for(notifications.get(), timeout=5)

    assert int(payload) == response.seq


async def test_batch_notifies_once_with_its_highest_seq(
    ingest: IngestServiceAsyncStub, target: Target, notifications: asyncio.Queue[str]
) -> None:
    rows = [referral(target.account_id, target.campaign_id, f"p-{i}") for i in range(25)]

    response = await ingest.IngestBatch(ingest_pb2.IngestBatchRequest(referrals=rows))

    payload = await asyncio.wait_for(notifications.get(), timeout=5)
    assert int(payload) == max(r.seq for r in response.results)
    await asyncio.sleep(QUIET_S)
    assert notifications.empty()


async def test_large_batch_notifies_once_with_its_highest_seq(
    ingest: IngestServiceAsyncStub, target: Target, notifications: asyncio.Queue[str]
) -> None:
    # Past SMALL_BATCH: the COPY paths, whose NOTIFY is a statement of its own.
    rows = [referral(target.account_id, target.campaign_id, f"p-{i}") for i in range(100)]
    assert len(rows) > SMALL_BATCH

    response = await ingest.IngestBatch(ingest_pb2.IngestBatchRequest(referrals=rows))

    payload = await asyncio.wait_for(notifications.get(), timeout=5)
    assert int(payload) == max(r.seq for r in response.results)
    await asyncio.sleep(QUIET_S)
    assert notifications.empty()


async def test_pure_duplicate_ingest_notifies_nothing(
    ingest: IngestServiceAsyncStub, target: Target, notifications: asyncio.Queue[str]
) -> None:
    message = ingest_pb2.IngestRequest(
        referral=referral(target.account_id, target.campaign_id, "p-1")
    )
    await ingest.Ingest(message)
    await asyncio.wait_for(notifications.get(), timeout=5)

    again = await ingest.Ingest(message)

    assert again.duplicate
    await asyncio.sleep(QUIET_S)
    assert notifications.empty()


async def test_batch_of_only_rejected_rows_notifies_nothing(
    ingest: IngestServiceAsyncStub, target: Target, notifications: asyncio.Queue[str]
) -> None:
    rows = [
        referral(target.account_id, target.campaign_id, "p-1", consumer={"email": "x"}),
        referral(target.account_id, target.campaign_id, "p-2", opted_in_at=None),
    ]

    response = await ingest.IngestBatch(ingest_pb2.IngestBatchRequest(referrals=rows))

    assert response.rejected == 2
    await asyncio.sleep(QUIET_S)
    assert notifications.empty()


async def test_notification_arrives_only_when_the_transaction_commits(
    target: Target, notifications: asyncio.Queue[str], database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        transaction = conn.transaction()
        await transaction.start()
        stored = await IngestStore(conn).insert_referrals(
            [valid_referral(target.account_id, target.campaign_id, "held")]
        )
        await asyncio.sleep(QUIET_S)
        assert notifications.empty()

        await transaction.commit()

        payload = await asyncio.wait_for(notifications.get(), timeout=5)
        assert int(payload) == next(iter(stored.values())).seq
    finally:
        await conn.close()

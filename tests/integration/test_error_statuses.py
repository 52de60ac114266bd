"""Failures nobody planned for reach callers as a status with a reference, never as internals."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.common.gen.handoff.ingest.v1 import ingest_pb2
from tests.integration.conftest import Target
from tests.integration.factories import referral

if TYPE_CHECKING:
    from services.common.gen.handoff.ingest.v1.ingest_pb2_grpc import IngestServiceAsyncStub


async def test_database_error_answers_internal_with_a_reference_and_no_sql(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    # A real failure inside PostgreSQL: the table the insert needs is gone.
    await pool.execute("DROP TABLE referrals")
    request = ingest_pb2.IngestRequest(
        referral=referral(target.account_id, target.campaign_id, "p1")
    )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.Ingest(request)

    assert caught.value.code() is grpc.StatusCode.INTERNAL
    details = caught.value.details() or ""
    assert re.fullmatch(r"internal error \(reference [0-9a-f]{12}\)", details), details
    assert "referrals" not in details
    assert "relation" not in details


async def test_batch_database_error_is_internal_too(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    await pool.execute("DROP TABLE referrals")
    rows = [referral(target.account_id, target.campaign_id, f"p{i}") for i in range(3)]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.IngestBatch(ingest_pb2.IngestBatchRequest(referrals=rows))

    assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert "relation" not in (caught.value.details() or "")


async def test_a_deadlock_that_outlasts_its_retries_is_unavailable_with_retry_info(
    ingest: IngestServiceAsyncStub, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [referral(target.account_id, target.campaign_id, f"d{i}") for i in range(100)]
    request = ingest_pb2.IngestBatchRequest(referrals=rows)
    await ingest.IngestBatch(request)  # stored: the same batch again takes the staged path
    original = asyncpg.Connection.fetchrow

    async def always_deadlock(self: asyncpg.Connection, query: str, *args: object) -> object:
        if "referral_staging" in query:
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        return await original(self, query, *args)

    monkeypatch.setattr(asyncpg.Connection, "fetchrow", always_deadlock)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.IngestBatch(request)

    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    status = rpc_status.from_call(caught.value)
    assert status is not None
    assert [d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details] == [True]
    assert "deadlock" not in (caught.value.details() or "")

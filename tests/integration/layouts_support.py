"""Helpers for the layout integration tests: accounts, referrals, a served LayoutService."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.common.auth.client import credential_channel
from services.common.auth.model import Role
from services.common.gen.handoff.scheduler.v1 import layouts_pb2_grpc
from services.common.grpc_server import grpc_server
from services.common.referral_rows import ReferralRowReader
from services.scheduler.layouts.server import layout_service
from services.scheduler.layouts.store import LayoutStorePg
from tests.integration.credentials_support import authenticator, service_token

if TYPE_CHECKING:
    from services.common.gen.handoff.scheduler.v1.layouts_pb2_grpc import LayoutServiceAsyncStub

REFERRAL_DEFAULTS: dict[str, Any] = {
    "email": "ada@example.com",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "gender": "F",
    "date_of_birth": date(1985, 12, 10),
    "mobile": "07911 123456",
    "city": "London",
    "country": "GB",
    "partner_id": "partner-7",
    "opted_in_at": datetime(2024, 7, 1, 12, 30, tzinfo=UTC),
    "ip_address": "203.0.113.7",
    "extra": {},
}


async def create_account(
    pool: asyncpg.Pool, *, time_zone: str = "UTC", campaign: str = "Spring offer"
) -> tuple[UUID, UUID]:
    """A new account with one campaign: (account id, campaign id)."""
    account_id, campaign_id = uuid.uuid4(), uuid.uuid4()
    await pool.execute(
        "INSERT INTO accounts (id, name, time_zone) VALUES ($1, $2, $3)",
        account_id,
        f"Advertiser {account_id.hex[:6]}",
        time_zone,
    )
    await pool.execute(
        "INSERT INTO campaigns (id, account_id, name) VALUES ($1, $2, $3)",
        campaign_id,
        account_id,
        campaign,
    )
    return account_id, campaign_id


async def insert_referrals(
    pool: asyncpg.Pool, account_id: UUID, campaign_id: UUID, rows: Sequence[Mapping[str, Any]]
) -> list[int]:
    """Store referrals (defaults filled in) in order; their seqs."""
    seqs = []
    for i, values in enumerate(rows):
        row = {**REFERRAL_DEFAULTS, **values}
        row.setdefault("partner_referral_id", f"ref-{uuid.uuid4().hex[:8]}-{i}")
        columns = ["account_id", "campaign_id", *row]
        placeholders = ", ".join(f"${n + 1}" for n in range(len(columns)))
        seq = await pool.fetchval(
            f"INSERT INTO referrals ({', '.join(columns)}) VALUES ({placeholders}) RETURNING seq",
            account_id,
            campaign_id,
            *row.values(),
        )
        seqs.append(seq)
    return seqs


@asynccontextmanager
async def layout_client(pool: asyncpg.Pool) -> AsyncIterator[LayoutServiceAsyncStub]:
    """LayoutService served on a free port over the test's database, and a client."""
    service = layout_service(LayoutStorePg(pool), ReferralRowReader(pool))
    token = await service_token(pool, Role.OPERATOR)
    async with (
        grpc_server(
            "127.0.0.1", 0, [service], authenticator=authenticator(pool), grace_s=0.5
        ) as running,
        credential_channel(f"127.0.0.1:{running.port}", token) as channel,
    ):
        yield layouts_pb2_grpc.LayoutServiceStub(channel)


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """(field, reason) of each google.rpc.BadRequest violation in an error."""
    status = rpc_status.from_call(error)
    found: list[tuple[str, str]] = []
    for detail in status.details if status else []:
        assert isinstance(detail, any_pb2.Any)
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found += [(v.field, v.reason) for v in bad.field_violations]
    return found

"""Ingest (one referral) over real gRPC into the real PostgreSQL."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from datetime import date
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.common.gen.handoff.ingest.v1 import accounts_pb2, ingest_pb2
from tests.integration.conftest import MakeTarget, Target
from tests.integration.factories import CONSUMER, OPT_IN, OPTED_IN_AT, referral

if TYPE_CHECKING:
    from services.common.gen.handoff.ingest.v1.accounts_pb2_grpc import AccountServiceAsyncStub
    from services.common.gen.handoff.ingest.v1.ingest_pb2_grpc import IngestServiceAsyncStub


async def _count(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM referrals"))


async def _ingest_error(
    ingest: IngestServiceAsyncStub, message: ingest_pb2.IngestRequest
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.Ingest(message)
    return caught.value


def _violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """(field, reason) of each google.rpc.BadRequest violation in the trailers."""
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailing metadata"
    found: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.extend((v.field, v.reason) for v in bad_request.field_violations)
    return found


async def test_ingest_stores_the_row_as_sent(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    message = referral(target.account_id, target.campaign_id, "p-1", extra={"q1": "yes", "n": "2"})

    response = await ingest.Ingest(ingest_pb2.IngestRequest(referral=message))

    assert response.seq > 0
    assert not response.duplicate
    row = await pool.fetchrow("SELECT * FROM referrals WHERE seq = $1", response.seq)
    assert row is not None
    assert str(row["account_id"]) == target.account_id
    assert str(row["campaign_id"]) == target.campaign_id
    assert row["partner_referral_id"] == "p-1"
    for name, value in CONSUMER.items():
        if name == "date_of_birth":
            assert row[name] == date(1985, 12, 10)
        else:
            assert row[name] == value, name
    for name, value in OPT_IN.items():
        if name == "ip_address":
            assert row[name] == ipaddress.ip_address("203.0.113.7")
        else:
            assert row[name] == value, name
    assert row["opted_in_at"] == OPTED_IN_AT
    assert row["extra"] == {"q1": "yes", "n": "2"}
    assert await pool.fetchval("SELECT jsonb_typeof(extra) FROM referrals") == "object"


async def test_ingest_normalises_country_and_state_codes(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    message = referral(
        target.account_id, target.campaign_id, "p-1", consumer={"country": "us", "state": "us-ca"}
    )

    response = await ingest.Ingest(ingest_pb2.IngestRequest(referral=message))

    row = await pool.fetchrow("SELECT country, state FROM referrals WHERE seq = $1", response.seq)
    assert row is not None
    assert (row["country"], row["state"]) == ("US", "CA")


async def test_ingest_stores_ipv6_and_leaves_empty_optional_fields_empty(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    blank = dict.fromkeys(CONSUMER, "") | {"email": "bob@example.org"}
    message = referral(
        target.account_id,
        target.campaign_id,
        "p-1",
        consumer=blank,
        opt_in={"ip_address": "2001:DB8::1", "publisher_id": ""},
        extra={},
    )

    response = await ingest.Ingest(ingest_pb2.IngestRequest(referral=message))

    row = await pool.fetchrow("SELECT * FROM referrals WHERE seq = $1", response.seq)
    assert row is not None
    assert row["ip_address"] == ipaddress.ip_address("2001:db8::1")
    assert row["date_of_birth"] is None
    assert row["first_name"] == ""
    assert row["publisher_id"] == ""
    assert row["extra"] == {}


async def test_sending_again_answers_original_seq_and_stores_nothing_new(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    message = referral(target.account_id, target.campaign_id, "p-1")
    first = await ingest.Ingest(ingest_pb2.IngestRequest(referral=message))

    again = await ingest.Ingest(ingest_pb2.IngestRequest(referral=message))

    assert again.seq == first.seq
    assert again.duplicate
    assert await _count(pool) == 1


async def test_resend_with_changed_fields_is_still_a_duplicate_and_keeps_the_original(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    first = await ingest.Ingest(
        ingest_pb2.IngestRequest(referral=referral(target.account_id, target.campaign_id, "p-1"))
    )
    changed = referral(
        target.account_id, target.campaign_id, " p-1 ", consumer={"email": "new@example.com"}
    )

    again = await ingest.Ingest(ingest_pb2.IngestRequest(referral=changed))

    assert (again.seq, again.duplicate) == (first.seq, True)
    assert await pool.fetchval("SELECT email FROM referrals") == CONSUMER["email"]


async def test_same_partner_id_in_two_accounts_is_two_referrals(
    ingest: IngestServiceAsyncStub, make_target: MakeTarget, pool: asyncpg.Pool
) -> None:
    one, two = await make_target(), await make_target()

    a = await ingest.Ingest(
        ingest_pb2.IngestRequest(referral=referral(one.account_id, one.campaign_id, "same"))
    )
    b = await ingest.Ingest(
        ingest_pb2.IngestRequest(referral=referral(two.account_id, two.campaign_id, "same"))
    )

    assert not a.duplicate
    assert not b.duplicate
    assert a.seq != b.seq
    assert await _count(pool) == 2


async def test_invalid_referral_is_invalid_argument_with_field_violations(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    message = referral(
        target.account_id,
        target.campaign_id,
        "p-1",
        consumer={"email": "not-an-email", "date_of_birth": "2023-02-30", "country": "XX"},
        opt_in={"ip_address": "999.1.1.1"},
    )

    error = await _ingest_error(ingest, ingest_pb2.IngestRequest(referral=message))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(_violations(error)) == [
        ("consumer.country", "UNKNOWN_CODE"),
        ("consumer.date_of_birth", "INVALID_DATE"),
        ("consumer.email", "INVALID_FORMAT"),
        ("opt_in.ip_address", "INVALID_FORMAT"),
    ]
    assert await _count(pool) == 0


async def test_missing_everything_names_each_required_field(
    ingest: IngestServiceAsyncStub, pool: asyncpg.Pool
) -> None:
    error = await _ingest_error(ingest, ingest_pb2.IngestRequest())

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(_violations(error)) == [
        ("account_id", "REQUIRED"),
        ("campaign_id", "REQUIRED"),
        ("consumer.email", "REQUIRED"),
        ("opt_in.opted_in_at", "REQUIRED"),
        ("opt_in.partner_id", "REQUIRED"),
        ("partner_referral_id", "REQUIRED"),
    ]
    assert await _count(pool) == 0


async def test_unknown_campaign_is_not_found(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    message = referral(target.account_id, str(uuid.uuid4()), "p-1")

    error = await _ingest_error(ingest, ingest_pb2.IngestRequest(referral=message))

    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert await _count(pool) == 0


async def test_unknown_account_is_not_found(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    message = referral(str(uuid.uuid4()), target.campaign_id, "p-1")

    error = await _ingest_error(ingest, ingest_pb2.IngestRequest(referral=message))

    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert await _count(pool) == 0


async def test_campaign_of_another_account_is_not_found(
    ingest: IngestServiceAsyncStub, make_target: MakeTarget, pool: asyncpg.Pool
) -> None:
    mine, theirs = await make_target(), await make_target()
    message = referral(mine.account_id, theirs.campaign_id, "p-1")

    error = await _ingest_error(ingest, ingest_pb2.IngestRequest(referral=message))

    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert theirs.campaign_id in (error.details() or "")
    assert await _count(pool) == 0


async def test_archived_campaign_is_failed_precondition(
    ingest: IngestServiceAsyncStub,
    accounts: AccountServiceAsyncStub,
    target: Target,
    pool: asyncpg.Pool,
) -> None:
    await accounts.ArchiveCampaign(
        accounts_pb2.ArchiveCampaignRequest(account_id=target.account_id, id=target.campaign_id)
    )
    message = referral(target.account_id, target.campaign_id, "p-1")

    error = await _ingest_error(ingest, ingest_pb2.IngestRequest(referral=message))

    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "archived" in (error.details() or "")
    assert await _count(pool) == 0


async def test_archived_account_is_failed_precondition(
    ingest: IngestServiceAsyncStub,
    accounts: AccountServiceAsyncStub,
    target: Target,
    pool: asyncpg.Pool,
) -> None:
    await accounts.ArchiveAccount(accounts_pb2.ArchiveAccountRequest(id=target.account_id))
    message = referral(target.account_id, target.campaign_id, "p-1")

    error = await _ingest_error(ingest, ingest_pb2.IngestRequest(referral=message))

    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert f"account {target.account_id} is archived" in (error.details() or "")
    assert await _count(pool) == 0


async def test_referral_stored_before_archiving_is_still_answered_as_duplicate(
    ingest: IngestServiceAsyncStub,
    accounts: AccountServiceAsyncStub,
    target: Target,
) -> None:
    message = ingest_pb2.IngestRequest(
        referral=referral(target.account_id, target.campaign_id, "p-1")
    )
    first = await ingest.Ingest(message)
    await accounts.ArchiveAccount(accounts_pb2.ArchiveAccountRequest(id=target.account_id))

    again = await ingest.Ingest(message)

    assert (again.seq, again.duplicate) == (first.seq, True)


async def test_concurrent_identical_ingests_store_one_row_and_answer_one_seq(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    message = ingest_pb2.IngestRequest(
        referral=referral(target.account_id, target.campaign_id, "raced")
    )

    responses = await asyncio.gather(*(ingest.Ingest(message) for _ in range(20)))

    assert len({r.seq for r in responses}) == 1
    assert sum(not r.duplicate for r in responses) == 1
    assert await _count(pool) == 1


async def test_scoped_ipv6_address_is_refused_not_a_server_error(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    message = referral(
        target.account_id, target.campaign_id, "p-1", opt_in={"ip_address": "fe80::1%eth0"}
    )

    error = await _ingest_error(ingest, ingest_pb2.IngestRequest(referral=message))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(error) == [("opt_in.ip_address", "INVALID_FORMAT")]
    assert await _count(pool) == 0

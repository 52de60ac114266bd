"""IngestBatch and IngestStream over real gRPC into the real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest

import services.ingest.server as ingest_server_module
from services.common.gen.handoff.ingest.v1 import accounts_pb2, ingest_pb2, referral_pb2
from services.ingest import native
from services.ingest import store as store_module
from services.ingest.store import SMALL_BATCH
from tests.integration.conftest import MakeTarget, Target
from tests.integration.factories import referral

if TYPE_CHECKING:
    from services.common.gen.handoff.ingest.v1.accounts_pb2_grpc import AccountServiceAsyncStub
    from services.common.gen.handoff.ingest.v1.ingest_pb2_grpc import IngestServiceAsyncStub

ACCEPTED = ingest_pb2.RowResult.ACCEPTED
DUPLICATE = ingest_pb2.RowResult.DUPLICATE
REJECTED = ingest_pb2.RowResult.REJECTED


async def _stored(pool: asyncpg.Pool) -> dict[str, int]:
    """partner_referral_id -> seq of every stored referral."""
    rows = await pool.fetch("SELECT partner_referral_id, seq FROM referrals")
    return {r["partner_referral_id"]: r["seq"] for r in rows}


def _errors(result: ingest_pb2.RowResult) -> list[tuple[str, str]]:
    return [(e.field, e.code) for e in result.errors]


async def test_batch_stores_exactly_the_valid_rows_and_reports_each(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    rows = [
        referral(target.account_id, target.campaign_id, "ok-0"),
        referral(target.account_id, target.campaign_id, "bad-1", consumer={"email": "nope"}),
        referral(target.account_id, target.campaign_id, "ok-2"),
        referral(
            target.account_id,
            target.campaign_id,
            "bad-3",
            consumer={"first_name": "A\nB"},
            opted_in_at=None,
        ),
        referral(target.account_id, target.campaign_id, "ok-4"),
    ]

    response = await ingest.IngestBatch(ingest_pb2.IngestBatchRequest(referrals=rows))

    assert [(r.index, r.status) for r in response.results] == [
        (0, ACCEPTED),
        (1, REJECTED),
        (2, ACCEPTED),
        (3, REJECTED),
        (4, ACCEPTED),
    ]
    assert [r.partner_referral_id for r in response.results] == [
        "ok-0",
        "bad-1",
        "ok-2",
        "bad-3",
        "ok-4",
    ]
    assert _errors(response.results[1]) == [("consumer.email", "INVALID_FORMAT")]
    assert sorted(_errors(response.results[3])) == [
        ("consumer.first_name", "CONTROL_CHARACTER"),
        ("opt_in.opted_in_at", "REQUIRED"),
    ]
    assert all(r.message for r in response.results[3].errors)
    assert (response.accepted, response.duplicates, response.rejected) == (3, 0, 2)
    stored = await _stored(pool)
    assert stored == {r.partner_referral_id: r.seq for r in response.results if r.seq}
    assert set(stored) == {"ok-0", "ok-2", "ok-4"}
    assert response.results[1].seq == response.results[3].seq == 0


async def test_retried_batch_stores_nothing_new_and_answers_original_seqs(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    rows = [referral(target.account_id, target.campaign_id, f"r-{i}") for i in range(50)]
    request = ingest_pb2.IngestBatchRequest(referrals=rows)
    first = await ingest.IngestBatch(request)

    retry = await ingest.IngestBatch(request)

    assert {r.status for r in retry.results} == {DUPLICATE}
    assert [r.seq for r in retry.results] == [r.seq for r in first.results]
    assert (retry.accepted, retry.duplicates, retry.rejected) == (0, 50, 0)
    assert len(await _stored(pool)) == 50


async def test_batch_mixing_new_and_known_rows_stores_only_the_new(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    known = await ingest.IngestBatch(
        ingest_pb2.IngestBatchRequest(
            referrals=[referral(target.account_id, target.campaign_id, "old")]
        )
    )

    response = await ingest.IngestBatch(
        ingest_pb2.IngestBatchRequest(
            referrals=[
                referral(target.account_id, target.campaign_id, "new"),
                referral(target.account_id, target.campaign_id, "old"),
            ]
        )
    )

    assert [r.status for r in response.results] == [ACCEPTED, DUPLICATE]
    assert response.results[1].seq == known.results[0].seq
    assert response.results[0].seq > known.results[0].seq
    assert set(await _stored(pool)) == {"old", "new"}


async def test_partner_id_repeated_inside_a_batch_is_stored_once_and_the_repeat_refused(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    rows = [
        referral(target.account_id, target.campaign_id, "a"),
        referral(target.account_id, target.campaign_id, "b"),
        referral(target.account_id, target.campaign_id, "a", consumer={"first_name": "Other"}),
        referral(target.account_id, target.campaign_id, " b "),
    ]

    response = await ingest.IngestBatch(ingest_pb2.IngestBatchRequest(referrals=rows))

    assert [r.status for r in response.results] == [ACCEPTED, ACCEPTED, REJECTED, REJECTED]
    assert _errors(response.results[2]) == [("partner_referral_id", "DUPLICATE_IN_BATCH")]
    assert "row 0" in response.results[2].errors[0].message
    assert "row 1" in response.results[3].errors[0].message
    assert await pool.fetchval("SELECT count(*) FROM referrals") == 2
    assert await pool.fetchval(
        "SELECT first_name FROM referrals WHERE partner_referral_id='a'"
    ) == ("Ada")


# Batches of a few rows go as one statement; padded past SMALL_BATCH they take the
# compiled scanner and the COPY paths. Both must answer alike.
PADDINGS = [0, SMALL_BATCH + 36]


def _padding(target: Target, count: int) -> list[referral_pb2.Referral]:
    return [referral(target.account_id, target.campaign_id, f"pad-{i}") for i in range(count)]


@pytest.mark.parametrize("padding", PADDINGS)
async def test_same_partner_id_for_two_accounts_in_one_batch_is_two_referrals(
    ingest: IngestServiceAsyncStub, make_target: MakeTarget, pool: asyncpg.Pool, padding: int
) -> None:
    one, two = await make_target(), await make_target()
    rows = [
        referral(one.account_id, one.campaign_id, "same"),
        referral(two.account_id, two.campaign_id, "same"),
        *_padding(two, padding),
    ]

    response = await ingest.IngestBatch(ingest_pb2.IngestBatchRequest(referrals=rows))

    assert [r.status for r in response.results] == [ACCEPTED] * (2 + padding)
    assert await pool.fetchval("SELECT count(*) FROM referrals") == 2 + padding
    seqs = dict(
        await pool.fetch(
            "SELECT account_id::text, seq FROM referrals WHERE partner_referral_id = 'same'"
        )
    )
    assert [r.seq for r in response.results[:2]] == [seqs[one.account_id], seqs[two.account_id]]


@pytest.mark.parametrize("padding", PADDINGS)
async def test_batch_rows_of_unknown_foreign_or_archived_campaigns_are_rejected_per_row(
    ingest: IngestServiceAsyncStub,
    accounts: AccountServiceAsyncStub,
    make_target: MakeTarget,
    pool: asyncpg.Pool,
    padding: int,
) -> None:
    mine, theirs, archived_account = await make_target(), await make_target(), await make_target()
    archived_campaign = await accounts.CreateCampaign(
        accounts_pb2.CreateCampaignRequest(account_id=mine.account_id, name="Old offer")
    )
    await accounts.ArchiveCampaign(
        accounts_pb2.ArchiveCampaignRequest(account_id=mine.account_id, id=archived_campaign.id)
    )
    await accounts.ArchiveAccount(
        accounts_pb2.ArchiveAccountRequest(id=archived_account.account_id)
    )
    rows = [
        referral(mine.account_id, mine.campaign_id, "fine"),
        referral(mine.account_id, str(uuid.uuid4()), "unknown"),
        referral(mine.account_id, theirs.campaign_id, "foreign"),
        referral(mine.account_id, archived_campaign.id, "archived-campaign"),
        referral(archived_account.account_id, archived_account.campaign_id, "archived-account"),
        *_padding(mine, padding),
    ]

    response = await ingest.IngestBatch(ingest_pb2.IngestBatchRequest(referrals=rows))

    statuses = [r.status for r in response.results]
    assert statuses == [ACCEPTED, *[REJECTED] * 4, *[ACCEPTED] * padding]
    assert [_errors(r) for r in response.results[1:5]] == [
        [("campaign_id", "NOT_FOUND")],
        [("campaign_id", "NOT_FOUND")],
        [("campaign_id", "ARCHIVED")],
        [("account_id", "ARCHIVED")],
    ]
    assert set(await _stored(pool)) == {"fine"} | {f"pad-{i}" for i in range(padding)}


async def test_empty_batch_is_invalid_argument(
    ingest: IngestServiceAsyncStub, pool: asyncpg.Pool
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.IngestBatch(ingest_pb2.IngestBatchRequest())

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "at least one" in (caught.value.details() or "")


async def test_batch_over_the_limit_is_invalid_argument_naming_the_limit(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    one = referral(target.account_id, target.campaign_id, "x")
    request = ingest_pb2.IngestBatchRequest()
    for i in range(10_001):
        row = request.referrals.add()
        row.CopyFrom(one)
        row.partner_referral_id = f"x-{i}"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.IngestBatch(request)

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "10000" in (caught.value.details() or "")
    assert await pool.fetchval("SELECT count(*) FROM referrals") == 0


async def test_batch_at_the_limit_is_stored_whole(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    one = referral(target.account_id, target.campaign_id, "x")
    request = ingest_pb2.IngestBatchRequest()
    for i in range(10_000):
        row = request.referrals.add()
        row.CopyFrom(one)
        row.partner_referral_id = f"x-{i}"

    response = await ingest.IngestBatch(request)

    assert response.accepted == 10_000
    assert await pool.fetchval("SELECT count(*) FROM referrals") == 10_000


# --- IngestStream -------------------------------------------------------------------------


async def _requests(rows: list[referral_pb2.Referral]) -> AsyncIterator[ingest_pb2.IngestRequest]:
    for row in rows:
        yield ingest_pb2.IngestRequest(referral=row)


async def test_stream_stores_valid_rows_and_lists_every_other_row_by_stream_index(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    known = await ingest.Ingest(
        ingest_pb2.IngestRequest(referral=referral(target.account_id, target.campaign_id, "known"))
    )
    rows: list[referral_pb2.Referral] = []
    invalid: set[int] = set()
    duplicate_of_known: set[int] = set()
    repeats: dict[int, int] = {}  # index -> index of the row it repeats
    for i in range(1500):  # more than one chunk of 1,000
        if i % 97 == 13:
            invalid.add(i)
            rows.append(referral(target.account_id, target.campaign_id, f"s-{i}", opted_in_at=None))
        elif i % 211 == 7:
            duplicate_of_known.add(i)
            rows.append(referral(target.account_id, target.campaign_id, "known"))
        elif i % 150 == 149 and (i - 100) not in invalid | duplicate_of_known | set(repeats):
            repeats[i] = i - 100
            rows.append(referral(target.account_id, target.campaign_id, f"s-{i - 100}"))
        else:
            rows.append(referral(target.account_id, target.campaign_id, f"s-{i}"))

    response = await ingest.IngestStream(_requests(rows))

    new = 1500 - len(invalid) - len(duplicate_of_known) - len(repeats)
    assert response.received == 1500
    assert response.accepted == new
    assert response.duplicates == len(duplicate_of_known) + len(repeats)
    assert response.rejected == len(invalid)
    by_index = {r.index: r for r in response.not_accepted}
    assert set(by_index) == invalid | duplicate_of_known | set(repeats)
    assert [r.index for r in response.not_accepted] == sorted(by_index)
    for i in invalid:
        assert by_index[i].status == REJECTED
        assert _errors(by_index[i]) == [("opt_in.opted_in_at", "REQUIRED")]
    for i in duplicate_of_known:
        assert (by_index[i].status, by_index[i].seq) == (DUPLICATE, known.seq)
    stored = await _stored(pool)
    for i, first in repeats.items():
        assert by_index[i].status == DUPLICATE
        assert by_index[i].seq == stored[f"s-{first}"]
    expected = {f"s-{i}" for i in range(1500)} - {f"s-{i}" for i in invalid | set(repeats)}
    expected -= {f"s-{i}" for i in duplicate_of_known}
    assert set(stored) == expected | {"known"}


async def test_stream_of_one_chunk_answers_a_repeat_as_duplicate_of_its_first_row(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    rows = [
        referral(target.account_id, target.campaign_id, "a"),
        referral(target.account_id, target.campaign_id, "a"),
    ]

    response = await ingest.IngestStream(_requests(rows))

    (repeat,) = response.not_accepted
    stored = await _stored(pool)
    assert (repeat.index, repeat.status, repeat.seq) == (1, DUPLICATE, stored["a"])
    assert (response.accepted, response.duplicates, response.rejected) == (1, 1, 0)


async def test_empty_stream_answers_zero_counts(ingest: IngestServiceAsyncStub) -> None:
    response = await ingest.IngestStream(_requests([]))

    assert (response.received, response.accepted, len(response.not_accepted)) == (0, 0, 0)


async def test_retried_stream_stores_nothing_new(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    rows = [referral(target.account_id, target.campaign_id, f"s-{i}") for i in range(300)]
    await ingest.IngestStream(_requests(rows))

    again = await ingest.IngestStream(_requests(rows))

    assert (again.accepted, again.duplicates) == (0, 300)
    assert len(await _stored(pool)) == 300


async def test_concurrent_batches_sharing_ids_in_different_orders_all_succeed(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    # Row locks taken in request order would deadlock here; one batch would fail.
    rows = [referral(target.account_id, target.campaign_id, f"shared-{i}") for i in range(2000)]
    orders = [rows, rows[::-1], rows[1::2] + rows[::2], rows[::2][::-1] + rows[1::2]]

    responses = await asyncio.gather(
        *(ingest.IngestBatch(ingest_pb2.IngestBatchRequest(referrals=order)) for order in orders)
    )

    assert sum(r.accepted for r in responses) == 2000
    seqs = {r.partner_referral_id: r.seq for r in responses[0].results}
    for response in responses[1:]:
        assert {r.partner_referral_id: r.seq for r in response.results} == seqs
    assert len(await _stored(pool)) == 2000


async def test_row_with_an_impossible_timestamp_is_rejected_alone(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    broken = referral(target.account_id, target.campaign_id, "broken")
    broken.opt_in.opted_in_at.seconds = 10**12  # beyond year 9999
    rows = [referral(target.account_id, target.campaign_id, "fine"), broken]

    response = await ingest.IngestBatch(ingest_pb2.IngestBatchRequest(referrals=rows))

    assert [r.status for r in response.results] == [ACCEPTED, REJECTED]
    assert _errors(response.results[1]) == [("opt_in.opted_in_at", "INVALID_FORMAT")]
    assert set(await _stored(pool)) == {"fine"}


async def test_stream_lists_at_most_the_limit_of_rows_but_counts_every_one(
    ingest: IngestServiceAsyncStub, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_server_module, "STREAM_MAX_LISTED", 5)
    rows = [
        referral(target.account_id, target.campaign_id, f"t-{i}", opted_in_at=None)
        for i in range(12)
    ]

    response = await ingest.IngestStream(_requests(rows))

    assert (response.received, response.rejected) == (12, 12)
    assert [r.index for r in response.not_accepted] == [0, 1, 2, 3, 4]
    assert response.not_accepted_truncated


# --- requests read as bytes (the compiled scanner's input) ----------------------------------


async def test_a_stream_message_without_a_referral_is_rejected_alone(
    ingest: IngestServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    # The chunk can no longer be read as one batch, so the Python path takes it whole.
    rows = [referral(target.account_id, target.campaign_id, f"e-{i}") for i in range(100)]

    async def requests() -> AsyncIterator[ingest_pb2.IngestRequest]:
        for i, row in enumerate(rows):
            yield ingest_pb2.IngestRequest() if i == 50 else ingest_pb2.IngestRequest(referral=row)

    response = await ingest.IngestStream(requests())

    assert (response.received, response.accepted, response.rejected) == (100, 99, 1)
    (empty,) = response.not_accepted
    assert empty.index == 50
    assert ("account_id", "REQUIRED") in _errors(empty)
    assert len(await _stored(pool)) == 99


async def test_undecodable_bytes_are_invalid_argument_not_internal(
    channel: grpc.aio.Channel, target: Target, pool: asyncpg.Pool
) -> None:
    batch: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        "/handoff.ingest.v1.IngestService/IngestBatch"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await batch(bytes([0x0A, 0x05, 0x01]))  # a field running past the end
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid IngestBatchRequest" in (caught.value.details() or "")

    good = ingest_pb2.IngestRequest(
        referral=referral(target.account_id, target.campaign_id, "before")
    ).SerializeToString()
    stream: grpc.aio.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(
        "/handoff.ingest.v1.IngestService/IngestStream"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream(iter([good, bytes([0x0A, 0x05, 0x01])]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "stream message 1" in (caught.value.details() or "")
    assert await _stored(pool) == {}  # the chunk failed whole: nothing half-written


async def test_without_the_extension_a_large_batch_gets_the_same_answers(
    ingest: IngestServiceAsyncStub,
    target: Target,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a machine without a C compiler runs: protobuf, the Python validator, the
    # Python reply and seq numbering.
    monkeypatch.setattr(native, "_scan", None)
    monkeypatch.setattr(store_module, "number_lines", store_module._number_lines)
    rows = [referral(target.account_id, target.campaign_id, f"py-{i}") for i in range(100)]
    rows[7].consumer.email = "not an email"
    rows[9].partner_referral_id = "py-3"

    response = await ingest.IngestBatch(ingest_pb2.IngestBatchRequest(referrals=rows))

    assert (response.accepted, response.rejected) == (98, 2)
    assert _errors(response.results[7]) == [("consumer.email", "INVALID_FORMAT")]
    assert _errors(response.results[9]) == [("partner_referral_id", "DUPLICATE_IN_BATCH")]
    stored = await _stored(pool)
    assert len(stored) == 98
    assert {
        r.partner_referral_id: r.seq for r in response.results if r.status == ACCEPTED
    } == stored


@pytest.mark.parametrize("padding", PADDINGS)
async def test_resent_referrals_of_an_archived_campaign_answer_duplicate_with_their_seq(
    ingest: IngestServiceAsyncStub,
    accounts: AccountServiceAsyncStub,
    target: Target,
    pool: asyncpg.Pool,
    padding: int,
) -> None:
    rows = [referral(target.account_id, target.campaign_id, "kept"), *_padding(target, padding)]
    await ingest.IngestBatch(ingest_pb2.IngestBatchRequest(referrals=rows))
    stored = await _stored(pool)
    await accounts.ArchiveCampaign(
        accounts_pb2.ArchiveCampaignRequest(account_id=target.account_id, id=target.campaign_id)
    )

    batch = await ingest.IngestBatch(ingest_pb2.IngestBatchRequest(referrals=rows))
    stream = await ingest.IngestStream(_requests(rows))

    assert [(r.status, r.seq) for r in batch.results] == [
        (DUPLICATE, stored[r.partner_referral_id]) for r in rows
    ]
    assert (stream.duplicates, stream.rejected) == (len(rows), 0)
    assert {(r.status, r.seq) for r in stream.not_accepted} == {
        (DUPLICATE, stored[r.partner_referral_id]) for r in rows
    }
    assert await _stored(pool) == stored

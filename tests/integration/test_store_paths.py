"""The store's two COPY paths: straight into referrals, and staged with ON CONFLICT.

The direct path stores a batch of new referrals of active campaigns with one COPY and
seqs drawn up front; anything else (a stored key, an archived campaign) rolls it back
and the staged path decides. Either way the answer is the same.
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from services.ingest.model import ReferralRow
from services.ingest.store import SMALL_BATCH, IngestStore, copy_text
from tests.integration.conftest import Target
from tests.integration.factories import valid_referral

pytestmark = pytest.mark.integration
BATCH = SMALL_BATCH + 36  # above the one-statement size: the COPY paths


@pytest.fixture
async def two_campaigns(store: IngestStore) -> tuple[Target, Target]:
    account = await store.insert_account(uuid.uuid4(), "Paths Ltd", "UTC")
    assert account is not None
    targets = []
    for name in ("live", "ending"):
        campaign = await store.insert_campaign(uuid.uuid4(), account.id, name)
        assert campaign is not None
        targets.append(Target(str(account.id), str(campaign.id)))
    return targets[0], targets[1]


def _rows(target: Target, prefix: str, count: int = BATCH) -> list[ReferralRow]:
    return [
        valid_referral(target.account_id, target.campaign_id, f"{prefix}-{i:04}")
        for i in range(count)
    ]


async def _insert(
    store: IngestStore, rows: list[ReferralRow]
) -> dict[tuple[str, str], tuple[int, bool]]:
    stored = await store.insert_copy(
        [copy_text([r]) for r in rows],
        [(r.account_id, r.partner_referral_id) for r in rows],
        [r.campaign_id for r in rows],
    )
    return {key: (hit.seq, hit.duplicate) for key, hit in stored.items()}


async def _seqs_in_table(pool: asyncpg.Pool, account_id: str) -> dict[str, int]:
    records = await pool.fetch(
        "SELECT partner_referral_id, seq FROM referrals WHERE account_id = $1",
        uuid.UUID(account_id),
    )
    return {r["partner_referral_id"]: r["seq"] for r in records}


async def test_new_rows_go_in_directly_with_the_seqs_answered(
    store: IngestStore,
    pool: asyncpg.Pool,
    two_campaigns: tuple[Target, Target],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    live, _ = two_campaigns
    staged: list[int] = []
    original = IngestStore._insert_staged

    async def spy(self: IngestStore, *args: object) -> object:
        staged.append(1)
        return await original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(IngestStore, "_insert_staged", spy)
    answer = await _insert(store, _rows(live, "new"))

    assert staged == []  # the direct path took the batch
    in_table = await _seqs_in_table(pool, live.account_id)
    assert len(in_table) == BATCH
    assert {key[1]: seq for key, (seq, _) in answer.items()} == in_table
    assert not any(duplicate for _, duplicate in answer.values())


async def test_a_retried_batch_falls_back_and_answers_the_original_seqs(
    store: IngestStore, pool: asyncpg.Pool, two_campaigns: tuple[Target, Target]
) -> None:
    live, _ = two_campaigns
    first = await _insert(store, _rows(live, "again"))
    mixed = _rows(live, "again") + _rows(live, "fresh", 10)

    second = await _insert(store, mixed)

    assert {k: v for k, v in second.items() if k in first} == {
        k: (s, True) for k, (s, _) in first.items()
    }
    fresh = {k: v for k, v in second.items() if k not in first}
    assert len(fresh) == 10
    assert not any(duplicate for _, duplicate in fresh.values())
    assert len(await _seqs_in_table(pool, live.account_id)) == BATCH + 10


async def test_rows_of_an_archived_campaign_are_left_out_and_the_rest_stored(
    store: IngestStore, pool: asyncpg.Pool, two_campaigns: tuple[Target, Target]
) -> None:
    live, ending = two_campaigns
    await store.archive_campaign(uuid.UUID(ending.account_id), uuid.UUID(ending.campaign_id))

    answer = await _insert(store, _rows(live, "kept") + _rows(ending, "gone", 5))

    assert {key[1] for key in answer} == {f"kept-{i:04}" for i in range(BATCH)}
    assert set(await _seqs_in_table(pool, live.account_id)) == {key[1] for key in answer}


async def test_a_deadlock_in_the_staged_insert_is_retried(
    store: IngestStore,
    pool: asyncpg.Pool,
    two_campaigns: tuple[Target, Target],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    live, _ = two_campaigns
    first = await _insert(store, _rows(live, "dl"))  # stored: the retry takes the staged path
    calls: list[str] = []
    original = asyncpg.Connection.fetchrow

    async def deadlock_once(self: asyncpg.Connection, query: str, *args: object) -> object:
        if "referral_staging" in query:
            calls.append("staged")
            if len(calls) == 1:
                raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        return await original(self, query, *args)

    monkeypatch.setattr(asyncpg.Connection, "fetchrow", deadlock_once)
    again = await _insert(store, _rows(live, "dl"))

    assert calls == ["staged", "staged"]
    assert again == {key: (seq, True) for key, (seq, _) in first.items()}


async def test_a_deadlock_in_the_direct_copy_falls_back_to_the_staged_path(
    store: IngestStore,
    pool: asyncpg.Pool,
    two_campaigns: tuple[Target, Target],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    live, _ = two_campaigns
    original = asyncpg.Connection.copy_to_table

    async def deadlock_direct(self: asyncpg.Connection, table: str, **kwargs: object) -> object:
        if table == "referrals":
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        return await original(self, table, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "copy_to_table", deadlock_direct)
    answer = await _insert(store, _rows(live, "fb"))

    in_table = await _seqs_in_table(pool, live.account_id)
    assert {key[1]: seq for key, (seq, _) in answer.items()} == in_table
    assert len(in_table) == BATCH
    assert not any(duplicate for _, duplicate in answer.values())

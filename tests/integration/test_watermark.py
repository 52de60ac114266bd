"""The safe watermark: a reader that follows it never skips a referral, whatever the commit order.

Writers hold ingest transactions open on purpose so that later seqs commit before earlier
ones (and some roll back); readers repeatedly read (cursor, watermark] and advance. What
they read must be exactly what was committed, each once, and no watermark may pass a seq
whose transaction had not yet ended.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg
import pytest

from services.ingest.store import SMALL_BATCH, IngestStore
from tests.integration.conftest import Target
from tests.integration.factories import valid_referral

CATCH_UP_S = 10.0  # generous bound for a watermark to reach committed work


@pytest.fixture
async def store_target(store: IngestStore) -> Target:
    """An account with one campaign, created through the store (no server needed)."""
    account = await store.insert_account(uuid.uuid4(), "Watermark Ltd", "UTC")
    assert account is not None
    campaign = await store.insert_campaign(uuid.uuid4(), account.id, "Always on")
    assert campaign is not None
    return Target(str(account.id), str(campaign.id))


async def _insert(store: IngestStore, target: Target, count: int = 1) -> list[int]:
    """Store `count` fresh referrals through the real insert path; return their seqs."""
    rows = [
        valid_referral(target.account_id, target.campaign_id, uuid.uuid4().hex)
        for _ in range(count)
    ]
    stored = await store.insert_referrals(rows)
    assert len(stored) == count
    assert not any(s.duplicate for s in stored.values())
    return sorted(s.seq for s in stored.values())


@asynccontextmanager
async def held_ingest(
    database_url: str, target: Target, count: int = 1
) -> AsyncIterator[tuple[list[int], asyncpg.transaction.Transaction]]:
    """An ingest transaction left open: yields its seqs and the transaction to end."""
    conn = await asyncpg.connect(database_url)
    try:
        transaction = conn.transaction()
        await transaction.start()
        seqs = await _insert(IngestStore(conn), target, count)
        yield seqs, transaction
    finally:
        await conn.close()  # rolls back if the test did not end it


async def _watermark_reaching(store: IngestStore, seq: int) -> int:
    """Call the watermark until it reaches `seq` (the checkpoint design may need a few calls)."""
    deadline = time.monotonic() + CATCH_UP_S
    while (mark := await store.safe_watermark()) < seq:
        assert time.monotonic() < deadline, f"watermark stuck at {mark}, expected >= {seq}"
        await asyncio.sleep(0.01)
    return mark


async def test_watermark_of_an_empty_log_is_zero(store: IngestStore) -> None:
    assert await store.safe_watermark() == 0


async def test_watermark_reaches_committed_referrals(
    store: IngestStore, store_target: Target
) -> None:
    seqs = await _insert(store, store_target, 3)

    assert await _watermark_reaching(store, seqs[-1]) == seqs[-1]


async def test_watermark_stays_below_an_open_transaction_until_it_commits(
    store: IngestStore, store_target: Target, database_url: str
) -> None:
    await _watermark_reaching(store, (await _insert(store, store_target, 1))[-1])
    async with held_ingest(database_url, store_target) as ([held], transaction):
        later = [(await _insert(store, store_target))[0] for _ in range(5)]
        assert later == list(range(held + 1, held + 6))

        for _ in range(5):
            assert await store.safe_watermark() < held
            await asyncio.sleep(0.01)

        await transaction.commit()

    assert await _watermark_reaching(store, held + 5) >= held + 5


async def test_watermark_stays_below_an_open_copy_batch_until_it_commits(
    store: IngestStore, store_target: Target, database_url: str
) -> None:
    size = SMALL_BATCH + 6  # large enough for the COPY paths
    await _watermark_reaching(store, (await _insert(store, store_target, 1))[-1])
    async with held_ingest(database_url, store_target, size) as (held, transaction):
        later = await _insert(store, store_target, size)
        assert min(later) > max(held)

        for _ in range(5):
            assert await store.safe_watermark() < min(held)
            await asyncio.sleep(0.01)

        await transaction.commit()

    assert await _watermark_reaching(store, max(later)) >= max(later)


async def test_watermark_stays_below_an_open_transaction_that_holds_the_newest_xid(
    store: IngestStore, store_target: Target, database_url: str
) -> None:
    # Nothing newer than the held transaction has completed, so a snapshot's xmax
    # (latestCompletedXid + 1) does not list it as running: xmin == xmax looks idle.
    await _watermark_reaching(store, (await _insert(store, store_target, 1))[-1])
    async with held_ingest(database_url, store_target) as ([held], transaction):
        for _ in range(5):
            assert await store.safe_watermark() < held
        await transaction.commit()

    assert await _watermark_reaching(store, held) >= held


async def test_rolled_back_seq_does_not_hold_the_watermark_back(
    store: IngestStore, store_target: Target, database_url: str
) -> None:
    async with held_ingest(database_url, store_target) as ([held], transaction):
        after = await _insert(store, store_target)
        await transaction.rollback()

    assert await _watermark_reaching(store, after[-1]) >= after[-1] > held
    assert await store.seqs_in_range(0, after[-1]) == after


async def test_long_read_only_transaction_does_not_hold_the_watermark_back(
    store: IngestStore, store_target: Target, database_url: str
) -> None:
    reader = await asyncpg.connect(database_url)
    try:
        async with reader.transaction(isolation="repeatable_read", readonly=True):
            await reader.fetchval("SELECT count(*) FROM referrals")  # takes its snapshot
            seqs = await _insert(store, store_target, 4)

            assert await _watermark_reaching(store, seqs[-1]) == seqs[-1]
    finally:
        await reader.close()


async def test_watermark_never_moves_backwards_when_writers_appear(
    store: IngestStore, store_target: Target, database_url: str, pool: asyncpg.Pool
) -> None:
    seqs = await _insert(store, store_target, 3)
    reached = await _watermark_reaching(store, seqs[-1])
    busy = await asyncpg.connect(database_url)
    try:
        async with busy.transaction():
            await busy.fetchval("SELECT pg_current_xact_id()")  # a writer, no seq drawn
            await pool.fetchval("SELECT pg_current_xact_id()")  # a newer xid completes

            marks = [await store.safe_watermark() for _ in range(5)]
    finally:
        await busy.close()

    assert min(marks) >= reached


async def test_watermark_refuses_to_run_in_a_transaction_that_already_wrote(
    database_url: str,
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.fetchval("SELECT pg_current_xact_id()")
            with pytest.raises(asyncpg.PostgresError, match="safe_referral_watermark"):
                await conn.fetchval("SELECT safe_referral_watermark()")
    finally:
        await conn.close()


async def test_watermark_checkpoints_stay_few_while_idle_calls_repeat(
    store: IngestStore, store_target: Target, pool: asyncpg.Pool, database_url: str
) -> None:
    await _insert(store, store_target, 2)
    busy = await asyncpg.connect(database_url)
    try:
        async with busy.transaction():
            await busy.fetchval("SELECT pg_current_xact_id()")  # keeps every call "busy"
            for _ in range(50):
                await store.safe_watermark()
    finally:
        await busy.close()

    assert await pool.fetchval("SELECT count(*) FROM referral_watermark_checkpoints") <= 3


# --- many writers, out-of-order commits, readers following the watermark -------------------


@dataclass
class WriterTransaction:
    """One ingest transaction of the stress test and when it ended (monotonic clock)."""

    seqs: list[int]
    commit: bool
    end_requested_at: float = 0.0
    ended_at: float = 0.0


@dataclass
class Reader:
    """A cursor following the watermark; what it read and every watermark it saw."""

    cursor: int = 0
    read: list[int] = field(default_factory=list)
    # (called_at, returned_at, watermark)
    observations: list[tuple[float, float, int]] = field(default_factory=list)

    async def step(self, store: IngestStore) -> None:
        called = time.monotonic()
        mark = await store.safe_watermark()
        self.observations.append((called, time.monotonic(), mark))
        if mark > self.cursor:
            self.read.extend(await store.seqs_in_range(self.cursor, mark))
        self.cursor = mark


async def _writer(
    database_url: str,
    target: Target,
    rng: random.Random,
    transactions: int,
    log: list[WriterTransaction],
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        store = IngestStore(conn)
        for _ in range(transactions):
            transaction = conn.transaction()
            await transaction.start()
            # Small batches take the one-statement path, large ones the COPY path.
            size = rng.randint(1, 3) if rng.random() < 0.7 else rng.randint(SMALL_BATCH + 1, 100)
            seqs = await _insert(store, target, size)
            entry = WriterTransaction(seqs, commit=rng.random() > 0.2)
            log.append(entry)
            # A third are held open long enough for many later seqs to commit first.
            hold = rng.uniform(0.15, 0.4) if rng.random() < 0.3 else rng.uniform(0, 0.02)
            await asyncio.sleep(hold)
            entry.end_requested_at = time.monotonic()
            if entry.commit:
                await transaction.commit()
            else:
                await transaction.rollback()
            entry.ended_at = time.monotonic()
    finally:
        await conn.close()


async def _follow(
    reader: Reader, store: IngestStore, writers_done: Callable[[], bool], last: Callable[[], int]
) -> None:
    deadline = time.monotonic() + 60
    while not writers_done() or reader.cursor < last():
        assert time.monotonic() < deadline, "reader never caught up"
        await reader.step(store)
        await asyncio.sleep(0.003)


async def test_readers_following_the_watermark_read_every_committed_referral_exactly_once(
    store: IngestStore, store_target: Target, database_url: str
) -> None:
    rng = random.Random(20260601)
    log: list[WriterTransaction] = []
    writers: list[Awaitable[None]] = [
        _writer(database_url, store_target, random.Random(rng.random()), 12, log) for _ in range(6)
    ]
    writer_tasks = [asyncio.ensure_future(w) for w in writers]
    readers = [Reader(), Reader()]

    def writers_done() -> bool:
        return all(t.done() for t in writer_tasks)

    def last_committed() -> int:
        return max((max(e.seqs) for e in log if e.commit), default=0)

    await asyncio.gather(
        *writer_tasks, *(_follow(r, store, writers_done, last_committed) for r in readers)
    )

    committed = sorted(s for e in log if e.commit for s in e.seqs)
    rolled_back = {s for e in log if not e.commit for s in e.seqs}
    assert rolled_back, "the test should roll some transactions back"
    # The scenario really happened: a later seq committed while an earlier one was open.
    assert any(
        max(a.seqs) < min(b.seqs) and b.ended_at < a.end_requested_at
        for a in log
        for b in log
        if a.commit and b.commit
    )
    for reader in readers:
        assert sorted(reader.read) == committed  # nothing skipped, nothing invented
        assert len(reader.read) == len(set(reader.read))  # each read once
        marks = [mark for _, _, mark in reader.observations]
        assert marks == sorted(marks), "the watermark moved backwards"
        for _, returned_at, mark in reader.observations:
            for entry in log:
                if min(entry.seqs) <= mark:
                    # The watermark passed this seq: its transaction had ended by then.
                    assert entry.end_requested_at < returned_at, (mark, entry)
        # It held back at least once: committed seqs above it waited for an earlier one.
        assert any(
            e.commit and e.ended_at < called and max(e.seqs) > mark
            for called, _, mark in reader.observations
            for e in log
        )


async def test_many_concurrent_callers_neither_fail_nor_see_it_move_backwards(
    store: IngestStore, store_target: Target
) -> None:
    stop = asyncio.Event()

    async def keep_ingesting() -> None:
        while not stop.is_set():
            await _insert(store, store_target, 2)

    async def call_repeatedly() -> list[int]:
        # At least 40 calls, then on until the watermark has moved (bounded): on a loaded
        # machine 40 calls can all finish before the first insert commits.
        marks = [await store.safe_watermark() for _ in range(40)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while marks[-1] == 0 and loop.time() < deadline:
            marks.append(await store.safe_watermark())
            await asyncio.sleep(0.01)
        return marks

    ingesting = asyncio.ensure_future(keep_ingesting())
    try:
        seen = await asyncio.gather(*(call_repeatedly() for _ in range(8)))
    finally:
        stop.set()
        await ingesting

    for marks in seen:
        assert marks == sorted(marks)
    assert max(max(marks) for marks in seen) > 0

"""Audience targeting benchmark: what an exclude audience adds to a scheduled delivery.

200,000 referrals delivered by the delivery engine (in process) to an asyncssh SFTP
server, with the default layout, by a task naming no audience and by tasks naming an
exclude audience of 100,000 and of 1,000,000 people (every tenth referral among them),
five rounds, each in another order; the median of each. The audience's work is in the
first render itself (targets.holds_back: each referral's stored key tested against the
audience's Bloom filter, and only the few it may hold probed exactly; the rows held back
come out marked, and the reader leaves them out) and the recording of their seqs, one row,
at its end. Target: at most 10 % more time (issue 15).
`python -m tests.bench targeting`.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from services.common.audiences.lines import Member, member_of
from services.common.audiences.staging import StagedRow
from services.common.audiences.store import AudienceStorePg
from services.common.db import create_pool
from services.common.secrets import connection_secret_context
from tests.bench import render
from tests.bench.scratch import scratch_database
from tests.bench.table import BenchRow
from tests.integration.access_support import TEST_BOX, make_engine
from tests.integration.sftp_servers import SFTP_PASSWORD, SFTP_USER, asyncssh_sftp, fingerprint

REFERRALS = 200_000
AUDIENCE_SIZES = (100_000, 1_000_000)
ROUNDS = 5
BATCH = 50_000


async def _members(emails: list[str], people: int) -> AsyncIterator[list[StagedRow]]:
    """The audience: the given referral emails and made-up people, as the upload stages them."""
    line = 0
    batch: list[StagedRow] = []

    def staged(email: str) -> StagedRow:
        found = member_of(email, "email")
        assert isinstance(found, Member)
        return (line, found.sha256, found.md5)

    for email in [*emails, *(f"other.{i}@elsewhere.example" for i in range(people))]:
        line += 1
        if line > people:
            break
        batch.append(staged(email))
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


async def _connection(pool: asyncpg.Pool, account: uuid.UUID, port: int, key: str) -> uuid.UUID:
    connection = uuid.uuid4()
    settings = {
        "host": "127.0.0.1", "port": port, "username": SFTP_USER, "host_key": key,
        "remote_dir": "/", "file_name_template": "", "write_mode": "rename",
        "manifest": False, "max_rows_per_file": 0,
    }  # fmt: skip
    sealed = {
        "password": TEST_BOX.seal(SFTP_PASSWORD, connection_secret_context(connection, "password"))
    }
    await pool.execute(
        "INSERT INTO connections (id, account_id, name, kind, settings, secrets) "
        "VALUES ($1, $2, 'bench', 'sftp', $3, $4)",
        connection, account, settings, sealed,  # the pool's JSON codecs encode them
    )  # fmt: skip
    return connection


async def _task(
    pool: asyncpg.Pool, account: uuid.UUID, connection: uuid.UUID, audiences: list[uuid.UUID]
) -> uuid.UUID:
    task = uuid.uuid4()
    await pool.execute(
        """INSERT INTO tasks (id, account_id, connection_id, name, schedule, time_zone,
                              delivered_seq, next_run_at, enabled, audience_ids)
           VALUES ($1, $2, $3, $4, '{"cron": "0 0 1 1 *"}', 'UTC', 0,
                   now() + interval '1 year', false, $5)""",
        task, account, connection, f"bench {task.hex[:6]}", audiences,
    )  # fmt: skip
    return task


async def _deliver(
    pool: asyncpg.Pool, account: uuid.UUID, task: uuid.UUID
) -> tuple[float, int, int]:
    """One delivery of (0, REFERRALS] by a fresh engine: (seconds, rows, suppressed)."""
    delivery = uuid.uuid4()
    await pool.execute(
        "INSERT INTO deliveries (id, task_id, account_id, purpose, after_seq, through_seq) "
        "VALUES ($1, $2, $3, 'scheduled', 0, $4)",
        delivery, task, account, REFERRALS,
    )  # fmt: skip
    engine = make_engine(pool)
    started = time.perf_counter()
    await engine.start(delivery, 0, REFERRALS)
    await engine.wait_idle()
    seconds = time.perf_counter() - started
    await engine.close()
    row = await pool.fetchrow(
        "SELECT state, rows_sent, suppressed, error FROM deliveries WHERE id = $1", delivery
    )
    assert row["state"] == "succeeded", row["error"]
    return seconds, int(row["rows_sent"]), int(row["suppressed"] or 0)


async def run(dsn: str) -> list[BenchRow]:
    """The bench's rows."""
    async with scratch_database(dsn, "targeting") as db:
        account = uuid.UUID(await render._seed(db, REFERRALS))
        async with create_pool(db, min_size=2, max_size=6) as pool:
            emails = [
                r["email"]
                for r in await pool.fetch("SELECT email FROM referrals WHERE seq % 10 = 0")
            ]
            store = AudienceStorePg(pool)
            audiences: list[uuid.UUID] = []
            load_rates: list[float] = []
            for people in AUDIENCE_SIZES:
                audience = uuid.uuid4()
                assert await store.create(audience, account, f"exclude {people}", "exclude")
                loaded = time.perf_counter()
                imported = await store.import_members(
                    account, audience, _members(emails, people), replace=False
                )
                assert imported is not None
                load_rates.append(people / (time.perf_counter() - loaded))
                audiences.append(audience)
            # As autovacuum leaves a table after a big import (it runs on inserts too): the
            # members' pages all-visible, so that a probe reads the index alone.
            await pool.execute("VACUUM ANALYZE")
            with tempfile.TemporaryDirectory() as root:
                async with asyncssh_sftp(Path(root)) as sftp:
                    key = fingerprint(sftp.host_key)
                    connection = await _connection(pool, account, sftp.port, key)
                    plain = await _task(pool, account, connection, [])
                    targeted = [await _task(pool, account, connection, [a]) for a in audiences]
                    tasks = [plain, *targeted]
                    times: list[list[float]] = [[] for _ in tasks]
                    rows = suppressed = 0
                    for round_ in range(ROUNDS):
                        # Each round in another order: with a fixed one, the delivery
                        # right after the baseline measured slower, whatever its audience.
                        for i in (*range(round_ % 3, 3), *range(round_ % 3)):
                            seconds, got, held = await _deliver(pool, account, tasks[i])
                            times[i].append(seconds)
                            if i:
                                rows, suppressed = got, held
                    without, with_ = times[0], times[1:]
    base = statistics.median(without)
    table = [
        BenchRow(
            f"delivery of {REFERRALS:,} with a {people:,}-person exclude audience",
            statistics.median(times), "s", "the same delivery, no audience", base, "<= 1.10",
        )
        for people, times in zip(AUDIENCE_SIZES, with_, strict=True)
    ]  # fmt: skip
    return [
        *table,
        BenchRow("referrals delivered / held back", rows, "rows", "held back", suppressed),
        BenchRow(
            f"audience import of {AUDIENCE_SIZES[-1]:,} people (store, in process)",
            load_rates[-1], "people/s",
        ),
    ]  # fmt: skip


def main() -> int:
    """Run alone and print the table."""
    from services.common.localdb import resolve_admin_dsn
    from tests.bench.table import format_table

    print(format_table("audience targeting", asyncio.run(run(resolve_admin_dsn()))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

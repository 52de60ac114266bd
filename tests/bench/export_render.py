"""Export render benchmark: 2,000,000 referrals to CSV in the default layout, rendered by
PostgreSQL (layouts/pg_csv.py) and by Python, beside `COPY (SELECT the same columns) TO
STDOUT CSV` measured in the same run, everything into a byte counter.

`make bench` runs it (`python -m tests.bench export_render` alone); it creates, seeds
and drops a scratch database. By hand, `python -m tests.bench.export_render --database
NAME` reuses one seeded earlier (tests/bench/render.py's data) and keeps it. Each figure
is the best of a few alternating runs: the machine is shared.
"""

from __future__ import annotations

import asyncio
import hashlib
import resource
import sys
import time
import uuid
from collections.abc import AsyncIterable, Callable

import asyncpg

from services.common.db import create_pool
from services.common.layouts.compiler import RenderContext, compile_layout
from services.common.layouts.defaults import DEFAULT_LAYOUT
from services.common.layouts.pg_csv import pg_csv_chunks, pg_csv_plan
from services.common.layouts.render import render_columns
from services.common.localdb import resolve_admin_dsn
from services.common.referral_rows import QUERIES, ReferralRowReader
from tests.bench.render import _seed
from tests.bench.scratch import dsn_for, scratch_database
from tests.bench.table import BenchRow, format_table

TOTAL_ROWS = 2_000_000
ROUNDS = 3


def _raw_query() -> str:
    """The default layout's row fields, plainly selected, with the range query's filter."""
    fields = ", ".join(f"r.{name}" for name in compile_layout(DEFAULT_LAYOUT, {}).row_fields)
    return (
        f"SELECT {fields} FROM referrals r"  # catalog names only
        " WHERE r.account_id = $1 AND r.seq > $2 AND r.seq <= $3 ORDER BY r.seq"
    )


async def _raw_copy(pool: asyncpg.Pool, account: uuid.UUID) -> tuple[float, int]:
    """Seconds and bytes of the plain COPY."""
    size = 0

    async def count(data: bytes) -> None:
        nonlocal size
        size += len(data)

    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(QUERIES["render_session"])
        started = time.perf_counter()
        await conn.copy_from_query(_raw_query(), account, 0, TOTAL_ROWS, output=count, format="csv")
        return time.perf_counter() - started, size


async def _counted(
    chunks: AsyncIterable[bytes], digest: Callable[[bytes], object] | None = None
) -> int:
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if digest:
            digest(chunk)
    return size


def _cpu_seconds() -> float:
    """CPU time this process (the client) has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _pg_chunks(
    pool: asyncpg.Pool, account: uuid.UUID, context: RenderContext
) -> AsyncIterable[bytes]:
    plan = pg_csv_plan(DEFAULT_LAYOUT, None, {})
    assert plan is not None
    return pg_csv_chunks(pool, plan, context, account, 0, TOTAL_ROWS, None, None)


def _python_chunks(
    reader: ReferralRowReader, account: uuid.UUID, context: RenderContext
) -> AsyncIterable[bytes]:
    layout = compile_layout(DEFAULT_LAYOUT, {}, context)
    rows = reader.rows_in_range(account, 0, TOTAL_ROWS, fields=layout.row_fields)
    return render_columns(layout, rows)


async def _measure(dsn: str) -> list[BenchRow]:
    async with create_pool(dsn, min_size=1, max_size=2) as pool:
        account = await pool.fetchval("SELECT id FROM accounts ORDER BY id LIMIT 1")
        reader = ReferralRowReader(pool)
        context = await reader.render_context(account)
        assert context is not None
        raw: list[float] = []
        pg: list[float] = []
        python: list[float] = []
        sizes: dict[str, int] = {}
        cpu: dict[str, float] = {}
        for _ in range(ROUNDS):
            seconds, sizes["raw"] = await _raw_copy(pool, account)
            raw.append(seconds)
            started, used = time.perf_counter(), _cpu_seconds()
            sizes["pg"] = await _counted(_pg_chunks(pool, account, context))
            pg.append(time.perf_counter() - started)
            cpu["pg"] = _cpu_seconds() - used
            started, used = time.perf_counter(), _cpu_seconds()
            sizes["python"] = await _counted(_python_chunks(reader, account, context))
            python.append(time.perf_counter() - started)
            cpu["python"] = _cpu_seconds() - used
        digests = [hashlib.sha256(), hashlib.sha256()]
        await _counted(_pg_chunks(pool, account, context), digests[0].update)
        await _counted(_python_chunks(reader, account, context), digests[1].update)
    raw_rate = TOTAL_ROWS / min(raw)
    baseline = "COPY (SELECT the same columns) TO STDOUT CSV"
    return [
        BenchRow("raw COPY, default layout's columns", raw_rate, "rows/s"),
        BenchRow(
            "PostgreSQL renderer, default layout -> CSV",
            TOTAL_ROWS / min(pg),
            "rows/s",
            baseline,
            raw_rate,
            ">= 0.5x",
        ),
        BenchRow(
            "Python renderer, default layout -> CSV",
            TOTAL_ROWS / min(python),
            "rows/s",
            baseline,
            raw_rate,
        ),
        BenchRow(
            "client CPU, PostgreSQL renderer (2M rows)",
            cpu["pg"],
            "s",
            "client CPU, Python renderer",
            cpu["python"],
        ),
        BenchRow(
            "output size, PostgreSQL renderer",
            sizes["pg"] / 1e6,
            "MB",
            "raw COPY CSV",
            sizes["raw"] / 1e6,
        ),
        BenchRow(
            "PostgreSQL and Python outputs differ",
            float(digests[0].digest() != digests[1].digest()),
            "(0 = same bytes)",
        ),
    ]


async def run(dsn: str, database: str | None = None) -> list[BenchRow]:
    """Measure on `database` (seeded earlier, kept) or on a scratch database seeded with
    TOTAL_ROWS referrals and dropped; the table rows."""
    if database:
        return await _measure(dsn_for(dsn, database))
    async with scratch_database(dsn, "export") as scratch:
        await _seed(scratch, TOTAL_ROWS)
        return await _measure(scratch)


def main() -> int:
    """Entry point: print the table."""
    database = sys.argv[2] if len(sys.argv) == 3 and sys.argv[1] == "--database" else None
    dsn = resolve_admin_dsn()
    rows = asyncio.run(run(dsn, database))
    print(format_table("export render (PostgreSQL -> CSV, 2M rows)", rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

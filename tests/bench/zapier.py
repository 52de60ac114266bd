"""Zapier's polling endpoint on a big account: GET /v1/zapier/referrals (the newest 50,
rendered as the hook sends them) over HTTP, beside the raw query for the same 50 rows.
Zapier allows a performList 30 s; this shows how far from that it is."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime

import aiohttp
import asyncpg

from services.common.auth.store import CredentialStore
from services.common.db import create_pool
from services.ingest.credentials import create_account_token
from tests.bench import render
from tests.bench.scratch import scratch_database
from tests.bench.table import BenchRow
from tests.integration.export_support import export_app, served_export

TOTAL_ROWS = 2_000_000
CALLS = 20
RAW = "SELECT * FROM referrals WHERE account_id = $1 ORDER BY seq DESC LIMIT 50"


async def _raw(dsn: str, account: str) -> float:
    """Median seconds of the bare query for the newest 50 rows."""
    conn = await asyncpg.connect(dsn)
    try:
        times = []
        for _ in range(CALLS):
            started = time.perf_counter()
            await conn.fetch(RAW, uuid.UUID(account))
            times.append(time.perf_counter() - started)
    finally:
        await conn.close()
    return statistics.median(times)


async def _polls(url: str, token: str, query: str) -> float:
    """Median seconds of a poll, answer read and parsed."""
    times = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        for _ in range(CALLS):
            started = time.perf_counter()
            async with session.get(f"{url}/v1/zapier/referrals{query}") as answer:
                assert answer.status == 200, await answer.text()
                assert len(await answer.json()) == 50
            times.append(time.perf_counter() - started)
    return statistics.median(times)


async def run(dsn: str) -> list[BenchRow]:
    """Seed a scratch database, measure, drop it; the table rows."""
    async with scratch_database(dsn, "zapier") as scratch:
        account = await render._seed(scratch, TOTAL_ROWS)
        raw = await _raw(scratch, account)
        async with create_pool(scratch, min_size=1, max_size=4) as pool:
            _, token = await create_account_token(
                CredentialStore(pool), account, "bench", ("referrals:read",), None,
                datetime.now(UTC),
            )  # fmt: skip
            campaign = await pool.fetchval(
                "SELECT id FROM campaigns WHERE account_id = $1 LIMIT 1", uuid.UUID(account)
            )
            async with served_export(export_app(pool)) as url:
                every = await _polls(url, token, "")
                scoped = await _polls(url, token, f"?campaign_id={campaign}")
    return [
        BenchRow(f"poll the newest 50 of {TOTAL_ROWS:,} referrals (HTTP, rendered)",
                 every * 1000, "ms", "raw SELECT of the 50 rows", raw * 1000, "≪ 30 s"),
        BenchRow("the same, one campaign's", scoped * 1000, "ms", "raw SELECT of the 50 rows",
                 raw * 1000, "≪ 30 s"),
    ]  # fmt: skip


if __name__ == "__main__":
    from services.common.localdb import resolve_admin_dsn
    from tests.bench.table import format_table

    print(format_table("zapier polling", asyncio.run(run(resolve_admin_dsn()))))

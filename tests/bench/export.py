"""Export API benchmarks: the export service (its own process) streaming referrals over
HTTP as CSV with the default layout, beside raw `COPY (SELECT the same columns) TO STDOUT
CSV` of the same rows in the same run (what PostgreSQL alone can send; its CSV has LF
line ends and no formula guard, so it is a little smaller).

- 2,000,000 referrals: rows/s beside the raw COPY, time to first byte, the process's
  peak RSS; the same process measured again on 200,000 rows (a fresh process each, so
  each peak is its own);
- ten concurrent exports of 200,000 rows each: total rows/s and peak RSS.
`python -m tests.bench export`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime

import aiohttp
import asyncpg

from services.common.auth.store import CredentialStore
from services.common.db import create_pool
from services.ingest.credentials import create_account_token
from tests.bench import render
from tests.bench.delivery import _free_port, _peak_rss_mib
from tests.bench.scratch import scratch_database
from tests.bench.table import BenchRow

TOTAL_ROWS = 2_000_000
SMALL_ROWS = 200_000
CONCURRENT = 10

# The default layout's columns as plain PostgreSQL text, in its order (campaign_name and
# partner_name as the layout derives them), for the raw baseline.
RAW_SELECT = """
SELECT r.email, r.title, r.first_name, r.last_name, r.gender, r.date_of_birth, r.mobile,
       r.phone, r.address_line1, r.address_line2, r.city, r.state, r.postcode, r.country,
       r.language, c.name, r.partner_id, r.opted_in_at, host(r.ip_address),
       r.partner_referral_id, r.received_at, r.seq
  FROM referrals r LEFT JOIN campaigns c ON c.id = r.campaign_id
 WHERE r.account_id = '{account}' AND r.seq > 0 AND r.seq <= {through}
 ORDER BY r.seq"""


async def _raw_copy(dsn: str, account: str, through: int) -> float:
    """Seconds for COPY of the same columns to CSV into a byte counter."""
    conn = await asyncpg.connect(dsn)
    size = 0

    async def count(data: bytes) -> None:
        nonlocal size
        size += len(data)

    try:
        started = time.perf_counter()
        await conn.copy_from_query(
            RAW_SELECT.format(account=uuid.UUID(account), through=int(through)),
            output=count, format="csv",
        )  # fmt: skip
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _export(url: str, token: str, through: int) -> tuple[float, float, int]:
    """(seconds, seconds to the first body byte, bytes) of one export over HTTP."""
    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
    size = 0
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        started = time.perf_counter()
        first = 0.0
        async with session.get(
            f"{url}/v1/referrals/export", params={"through_seq": str(through)}, headers=headers
        ) as response:
            assert response.status == 200, await response.text()
            async for chunk in response.content.iter_any():
                if not size:
                    first = time.perf_counter() - started
                size += len(chunk)
        return time.perf_counter() - started, first, size


async def _serving(url: str) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(30):
        while True:
            try:
                async with session.get(f"{url}/healthz") as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


async def _process(scratch: str) -> tuple[asyncio.subprocess.Process, str]:
    http, grpc = _free_port(), _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")},
        "DATABASE_URL": scratch, "HANDOFF_EXPORT_HTTP_PORT": str(http),
        "HANDOFF_EXPORT_PORT": str(grpc), "HANDOFF_LOG_LEVEL": "WARNING",
    }  # fmt: skip
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.export", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{http}"
    await _serving(url)
    return child, url


async def _stop(child: asyncio.subprocess.Process) -> None:
    if child.returncode is None:
        child.terminate()
        await child.wait()


async def _settled(scratch: str, through: int) -> None:
    """Wait until the safe watermark covers the seeded rows (a long transaction elsewhere
    on the cluster holds it back)."""
    conn = await asyncpg.connect(scratch)
    try:
        while True:
            if await conn.fetchval("SELECT safe_referral_watermark()") >= through:
                return
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def run(dsn: str) -> list[BenchRow]:
    """Seed a scratch database, measure, drop it; the table rows."""
    async with scratch_database(dsn, "export") as scratch:
        account = await render._seed(scratch, TOTAL_ROWS)
        await _settled(scratch, TOTAL_ROWS)
        async with create_pool(scratch, min_size=1, max_size=1) as pool:
            _, token = await create_account_token(
                CredentialStore(pool), account, "bench", ("referrals:read",), None,
                datetime.now(UTC),
            )  # fmt: skip
        raw = [await _raw_copy(scratch, account, TOTAL_ROWS)]
        child, url = await _process(scratch)
        try:
            seconds, first, size = await _export(url, token, TOTAL_ROWS)
            rss_big = _peak_rss_mib(child.pid or 0)
        finally:
            await _stop(child)
        raw.append(await _raw_copy(scratch, account, TOTAL_ROWS))
        child, url = await _process(scratch)
        try:
            small_seconds, small_first, _ = await _export(url, token, SMALL_ROWS)
            rss_small = _peak_rss_mib(child.pid or 0)
        finally:
            await _stop(child)
        raw_small = await _raw_copy(scratch, account, SMALL_ROWS)
        child, url = await _process(scratch)
        try:
            started = time.perf_counter()
            await asyncio.gather(*(_export(url, token, SMALL_ROWS) for _ in range(CONCURRENT)))
            together = time.perf_counter() - started
            rss_together = _peak_rss_mib(child.pid or 0)
        finally:
            await _stop(child)
    raw_rate = TOTAL_ROWS / min(raw)
    return [
        BenchRow(f"export {TOTAL_ROWS:,} rows, default layout CSV over HTTP",
                 TOTAL_ROWS / seconds, "rows/s", "raw COPY ... TO STDOUT CSV", raw_rate, "≥ 0.5×"),
        BenchRow(f"export {SMALL_ROWS:,} rows", SMALL_ROWS / small_seconds, "rows/s",
                 "raw COPY ... TO STDOUT CSV", SMALL_ROWS / raw_small, "≥ 0.5×"),
        BenchRow(f"time to first byte ({TOTAL_ROWS:,} rows)", first * 1000, "ms",
                 target="≤ 200 ms"),
        BenchRow(f"time to first byte ({SMALL_ROWS:,} rows)", small_first * 1000, "ms",
                 target="≤ 200 ms"),
        BenchRow(f"export process peak RSS, {TOTAL_ROWS:,} rows", rss_big, "MiB",
                 f"{SMALL_ROWS:,} rows", rss_small, "< 150 MB, the same"),
        BenchRow(f"{size / 2**20:,.0f} MiB sent for {TOTAL_ROWS:,} rows", size / 2**20, "MiB"),
        BenchRow(f"{CONCURRENT} concurrent exports of {SMALL_ROWS:,} rows: total",
                 CONCURRENT * SMALL_ROWS / together, "rows/s", "raw COPY (one)",
                 SMALL_ROWS / raw_small),
        BenchRow(f"{CONCURRENT} concurrent exports: peak RSS", rss_together, "MiB",
                 target="< 150 MB"),
    ]  # fmt: skip


if __name__ == "__main__":
    from services.common.localdb import resolve_admin_dsn
    from tests.bench.table import format_table

    print(format_table("export (PostgreSQL -> HTTP)", asyncio.run(run(resolve_admin_dsn()))))

"""Audience upload benchmark: the export service (its own process) taking a file of
1,000,000 plain emails through PUT /v1/audiences/{id}/members (read in chunks, hashed
twice in Python, COPied into staging, merged in one transaction), beside raw
`copy_records_to_table` of the same number of precomputed hash pairs into a table of the
staging table's shape, in the same run (what PostgreSQL alone takes).

- lines/s of the upload, beside the raw COPY;
- the process's peak RSS for 1,000,000 lines beside a fresh process's for 100,000 (the
  same, when memory is constant).
`python -m tests.bench audiences`.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import asyncpg

from services.common.auth.store import CredentialStore
from services.common.db import create_pool
from services.common.migrate import migrate
from services.ingest.credentials import create_account_token
from tests.bench.delivery import _peak_rss_mib
from tests.bench.export import _process, _stop
from tests.bench.scratch import scratch_database
from tests.bench.table import BenchRow

TOTAL_LINES = 1_000_000
SMALL_LINES = 100_000
LINES_PER_CHUNK = 10_000


async def _body(total: int) -> AsyncIterator[bytes]:
    """The file, generated in chunks (never whole in the client's memory either)."""
    for start in range(0, total, LINES_PER_CHUNK):
        stop = min(total, start + LINES_PER_CHUNK)
        yield "".join(f"Person.{i}@Example.com\n" for i in range(start, stop)).encode()


async def _upload(url: str, token: str, name: str, total: int) -> float:
    """Seconds for one upload of `total` lines into a new audience."""
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(
            f"{url}/v1/audiences", json={"name": name, "kind": "include"}, headers=headers
        ) as made:
            assert made.status == 201, await made.text()
            audience = (await made.json())["id"]
        started = time.perf_counter()
        async with session.put(
            f"{url}/v1/audiences/{audience}/members",
            data=_body(total),
            headers={**headers, "Content-Type": "text/plain"},
        ) as answer:
            assert answer.status == 200, await answer.text()
            result = await answer.json()
        seconds = time.perf_counter() - started
    assert result["accepted"] == total, result
    assert result["members"] == {"sha256": total, "md5": total}, result
    return seconds


async def _raw_copy(dsn: str, total: int) -> float:
    """Seconds for COPY of `total` precomputed (line, sha256, md5) rows into a table."""
    records = [
        (i, hashlib.sha256(b"%d" % i).digest(), hashlib.md5(b"%d" % i).digest())
        for i in range(total)
    ]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE raw_hashes (line integer, sha256 bytea, md5 bytea)")
        started = time.perf_counter()
        await conn.copy_records_to_table("raw_hashes", records=records)
        return time.perf_counter() - started
    finally:
        await conn.execute("DROP TABLE IF EXISTS raw_hashes")
        await conn.close()


async def run(dsn: str) -> list[BenchRow]:
    """Create a scratch database, measure, drop it; the table rows."""
    async with scratch_database(dsn, "audiences") as scratch:
        await migrate(scratch)
        account = uuid.uuid4()
        async with create_pool(scratch, min_size=1, max_size=1) as pool:
            await pool.execute("INSERT INTO accounts (id, name) VALUES ($1, 'Bench')", account)
            _, token = await create_account_token(
                CredentialStore(pool), str(account), "bench", ("config:read", "config:write"),
                None, datetime.now(UTC),
            )  # fmt: skip
        child, url = await _process(scratch)
        try:
            small = await _upload(url, token, "small", SMALL_LINES)
            rss_small = _peak_rss_mib(child.pid or 0)
        finally:
            await _stop(child)
        child, url = await _process(scratch)
        try:
            big = await _upload(url, token, "big", TOTAL_LINES)
            rss_big = _peak_rss_mib(child.pid or 0)
        finally:
            await _stop(child)
        raw = await _raw_copy(scratch, TOTAL_LINES)
    return [
        BenchRow(f"upload {TOTAL_LINES:,} plain emails (hash, stage, merge)",
                 TOTAL_LINES / big, "lines/s", "raw COPY of precomputed hashes",
                 TOTAL_LINES / raw),
        BenchRow(f"upload {SMALL_LINES:,} plain emails", SMALL_LINES / small, "lines/s",
                 "raw COPY of precomputed hashes", TOTAL_LINES / raw),
        BenchRow(f"export process peak RSS, {TOTAL_LINES:,} lines", rss_big, "MiB",
                 f"{SMALL_LINES:,} lines (fresh process)", rss_small, "the same"),
    ]  # fmt: skip

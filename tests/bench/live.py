"""Real-time API delivery benchmarks: the delivery service (its own process) sending to a
fast local endpoint (its own process), beside a raw aiohttp client loop against the same
endpoint with the same concurrency, in the same run.

- sustained deliveries/s: a backlog of 100,000 referrals (an endpoint outage: the
  connection disabled while they arrive) drained after re-enabling, beside the raw loop
  sending as many requests of the same size;
- latency from commit (what ingest acknowledges: the insert and its NOTIFY, committed) to
  arrival at the endpoint, at a steady 500 referrals/s for 10 s: p50, p99;
- the attempt log's size after it all, and the delivery process's peak RSS.
`python -m tests.bench live`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid

import aiohttp
import asyncpg

from services.common.secrets import new_key_entry
from services.delivery.transports.http.settings import ApiSettings
from tests.bench import render
from tests.bench.delivery import _free_port, _peak_rss_mib
from tests.bench.scratch import scratch_database
from tests.bench.table import BenchRow

BACKLOG = 100_000
CONCURRENCY = 32
STEADY_RATE = 500
STEADY_S = 10.0
TEMPLATE = json.dumps(
    {
        "email": "{{email}}",
        "first_name": "{{first_name}}",
        "last_name": "{{last_name}}",
        "city": "{{city}}",
        "country": "{{country}}",
        "opted_in_at": "{{opted_in_at}}",
        "campaign": "{{campaign_name}}",
    }
)
_INSERT_CONNECTION = """
    INSERT INTO connections (id, account_id, name, kind, settings, secrets)
    VALUES ($1, $2, 'bench', 'api', $3::jsonb, '{}')"""


async def _child(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _stats(session: aiohttp.ClientSession, url: str) -> dict[str, int]:
    async with session.get(f"{url}/stats") as answer:
        result: dict[str, int] = await answer.json()
        return result


async def _wait_serving(session: aiohttp.ClientSession, url: str) -> None:
    async with asyncio.timeout(20):
        while True:
            try:
                await _stats(session, url)
                return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)


async def _raw_loop(url: str, total: int, body: bytes) -> float:
    """Requests/s of a bare aiohttp loop with the same concurrency and body size."""
    queue = iter(range(total))
    connector = aiohttp.TCPConnector(limit=CONCURRENCY + 2)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for i in queue:
                headers = {"Idempotency-Key": f"raw-{i}", "Content-Type": "application/json"}
                async with session.post(f"{url}/leads", data=body, headers=headers) as answer:
                    await answer.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return total / (time.perf_counter() - started)


async def _until(session: aiohttp.ClientSession, url: str, live: int, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while (await _stats(session, url))["live"] < live:  # noqa: ASYNC110  # another process
            await asyncio.sleep(0.05)


async def _steady(conn: asyncpg.Connection, account: str, campaign: str) -> dict[int, float]:
    """Insert STEADY_RATE referrals a second, five per commit; each seq's commit time."""
    committed: dict[int, float] = {}
    interval = 5 / STEADY_RATE
    started = time.perf_counter()
    n = 0
    while time.perf_counter() - started < STEADY_S:
        async with conn.transaction():
            seqs = await conn.fetch(
                """INSERT INTO referrals (account_id, campaign_id, partner_referral_id, email,
                                          first_name, city, country, opted_in_at, extra)
                   SELECT $1, $2, 'steady-' || ($3 + g), 'steady' || ($3 + g) || '@example.com',
                          'Ada', 'London', 'GB', now(), '{}'
                     FROM generate_series(1, 5) g
                   RETURNING seq""",
                uuid.UUID(account), uuid.UUID(campaign), n,
            )  # fmt: skip
            await conn.execute("SELECT pg_notify('referrals_ingested', '0')")
        at = time.time()
        committed.update({r["seq"]: at for r in seqs})
        n += 5
        next_at = started + (n / 5) * interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    return committed


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run(dsn: str) -> list[BenchRow]:
    """Seed a scratch database, measure, drop it; the table rows."""
    async with scratch_database(dsn, "live") as scratch:
        children: list[asyncio.subprocess.Process] = []
        try:
            account = await render._seed(scratch, BACKLOG)
            conn = await asyncpg.connect(scratch)
            campaign = str(
                await conn.fetchval("SELECT id FROM campaigns WHERE account_id = $1 LIMIT 1",
                                    uuid.UUID(account))
            )  # fmt: skip
            sink_port, delivery_port = _free_port(), _free_port()
            url = f"http://127.0.0.1:{sink_port}"
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")},
                "DATABASE_URL": scratch,
                "HANDOFF_SECRET_KEYS": new_key_entry("bench"),
                "HANDOFF_EGRESS_ALLOW": "127.0.0.0/8",
                "HANDOFF_DELIVERY_PORT": str(delivery_port),
                "HANDOFF_LOG_LEVEL": "WARNING",
            }
            children.append(await _child("-m", "tests.bench.sink", str(sink_port), env=env))
            async with aiohttp.ClientSession() as session:
                await _wait_serving(session, url)
                connection = uuid.uuid4()
                api = ApiSettings(
                    url=f"{url}/leads", body_template=TEMPLATE, concurrency=CONCURRENCY
                )
                await conn.execute(
                    _INSERT_CONNECTION, connection, uuid.UUID(account), json.dumps(api.to_json())
                )
                # The outage: the connection disabled while the backlog is there, behind it.
                await conn.execute(
                    "UPDATE live_cursors SET delivered_seq = 0, starts_at = '-infinity', "
                    "disabled_at = now(), "
                    "disabled_reason = 'bench outage' WHERE connection_id = $1",
                    connection,
                )
                delivery = await _child("-m", "services.delivery", env=env)
                children.append(delivery)
                body = json.dumps(
                    {"email": "r12345@example.com", "first_name": "Ada", "last_name": "Lovelace",
                     "city": "London", "country": "GB", "opted_in_at": "2026-12-01T12:00:00Z",
                     "campaign": "Campaign 0"}
                ).encode()  # fmt: skip
                raw_before = await _raw_loop(url, BACKLOG // 4, body)
                await asyncio.sleep(2.0)  # the delivery service is up and idle
                started = time.perf_counter()
                await conn.execute(
                    "UPDATE live_cursors SET disabled_at = NULL, disabled_reason = NULL "
                    "WHERE connection_id = $1",
                    connection,
                )
                await conn.execute("SELECT pg_notify('live_wakeup', $1)", str(connection))
                await _until(session, url, BACKLOG, 300)
                drained = BACKLOG / (time.perf_counter() - started)
                raw_after = await _raw_loop(url, BACKLOG // 4, body)
                committed = await _steady(conn, account, campaign)
                await _until(session, url, BACKLOG + len(committed), 60)
                async with session.get(f"{url}/arrivals") as answer:
                    arrivals: dict[str, float] = await answer.json()
                duplicates = (await _stats(session, url))["duplicates"]
            prefix = f"msg_{connection.hex}_"
            latencies = [(arrivals[f"{prefix}{seq}"] - at) * 1000 for seq, at in committed.items()]
            await asyncio.sleep(0.5)  # the last flush
            sizes = await conn.fetchrow(
                """SELECT (SELECT sum(pg_total_relation_size(c.oid)) FROM pg_inherits i
                             JOIN pg_class c ON c.oid = i.inhrelid
                            WHERE i.inhparent = 'live_attempts'::regclass) AS attempts_bytes,
                          (SELECT count(*) FROM live_attempts) AS attempts,
                          pg_total_relation_size('live_messages') AS messages_bytes"""
            )
            rss = _peak_rss_mib(delivery.pid)
            await conn.close()
        finally:
            for child in children:
                if child.returncode is None:
                    child.terminate()
                    await child.wait()
    raw = max(raw_before, raw_after)
    return [
        BenchRow(f"backlog of {BACKLOG:,} drained (concurrency {CONCURRENCY})", drained,
                 "deliveries/s", "raw aiohttp loop", raw, "≥ 0.5×, ≥ 2,000/s"),
        BenchRow(f"latency p50 at {STEADY_RATE}/s, commit -> endpoint",
                 _percentile(latencies, 0.5), "ms", target="≤ 50 ms"),
        BenchRow(f"latency p99 at {STEADY_RATE}/s, commit -> endpoint",
                 _percentile(latencies, 0.99), "ms", target="≤ 250 ms"),
        BenchRow("duplicates the endpoint saw", duplicates, "requests"),
        BenchRow(f"attempt log after {sizes['attempts']:,} attempts",
                 (sizes["attempts_bytes"] or 0) / 2**20, "MiB"),
        BenchRow("waiting-referral table", sizes["messages_bytes"] / 2**20, "MiB"),
        BenchRow("delivery process peak RSS", rss, "MiB"),
    ]  # fmt: skip


if __name__ == "__main__":
    from services.common.localdb import resolve_admin_dsn
    from tests.bench.table import format_table

    print(format_table("live (PostgreSQL -> API)", asyncio.run(run(resolve_admin_dsn()))))

"""Real-time delivery with processes: two delivery replicas share one API connection's
live loop through its lease while referrals arrive; the replica running it is SIGKILLed
mid-stream (twice). The endpoint ends up with every referral, and every duplicate it saw
carries the idempotency key of the first attempt."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import defaultdict
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from services.delivery.live.loop import message_id
from services.delivery.transports.http.settings import ApiSettings
from tests.e2e.conftest import RunningService, Starter, free_port, service_env
from tests.integration.layouts_support import create_account
from tests.integration.live_support import api_connection, crm, eventually

pytestmark = pytest.mark.e2e


async def _owner_pid(pool: asyncpg.Pool, connection: uuid.UUID) -> int | None:
    owner = await pool.fetchval(
        "SELECT owner FROM live_cursors WHERE connection_id = $1 AND lease_until > now()",
        connection,
    )
    return int(owner.split(":")[1]) if owner else None


async def test_killing_the_replica_running_a_live_loop_loses_nothing(
    pool: asyncpg.Pool, database_url: str, start_service: Starter, tmp_path: Path
) -> None:
    account, campaign = await create_account(pool)

    async def slowish(request: web.Request) -> web.Response:
        await asyncio.sleep(0.02)  # so that sends are in flight when the replica dies
        return web.json_response({})

    base = service_env(database_url, HANDOFF_LIVE_LEASE_S="2")
    second = {**base, "HANDOFF_DELIVERY_PORT": str(free_port())}
    async with crm(slowish) as endpoint:
        connection = await api_connection(
            pool, account,
            ApiSettings(url=f"{endpoint.url}/leads", body_template='{"email": "{{email}}"}',
                        concurrency=4, retry_schedule_s=(0.2, 0.2, 0.2)),
        )  # fmt: skip
        replicas: dict[str, RunningService] = {
            "a": await start_service("delivery", base),
            "b": await start_service("delivery", second),
        }
        sent: list[str] = []
        stop = asyncio.Event()

        async def ingest_continuously() -> None:
            n = 0
            while not stop.is_set():
                batch = [f"r{n + i}@example.com" for i in range(20)]
                n += len(batch)
                async with pool.acquire() as conn, conn.transaction():
                    await conn.executemany(
                        """INSERT INTO referrals (account_id, campaign_id, partner_referral_id,
                                                  email, opted_in_at, extra)
                           VALUES ($1, $2, $3, $4, now(), '{}')""",
                        [(account, campaign, f"p-{e}", e) for e in batch],
                    )
                    await conn.execute("SELECT pg_notify('referrals_ingested', '0')")
                sent.extend(batch)
                await asyncio.sleep(0.05)

        worker = asyncio.create_task(ingest_continuously())
        killed = 0
        async with asyncio.timeout(60):
            while killed < 2:
                pid = await _owner_pid(pool, connection)
                if pid is not None and len(endpoint.seen) > 40 * (killed + 1):
                    for name, replica in list(replicas.items()):
                        if replica.child.pid == pid:
                            replica.child.send_signal(signal.SIGKILL)
                            await replica.child.wait()
                            env = base if name == "a" else second
                            replicas[name] = await start_service("delivery", env)
                            killed += 1
                await asyncio.sleep(0.3)
        await asyncio.sleep(1.0)
        stop.set()
        await worker

        def emails() -> set[str]:
            return {s.json()["email"] for s in endpoint.seen}

        await eventually(lambda: emails() == set(sent), timeout=30)
        seqs = dict(
            await pool.fetch("SELECT email, seq FROM referrals WHERE account_id = $1", account)
        )
        keys: dict[str, set[str]] = defaultdict(set)
        for seen in endpoint.seen:
            keys[seen.json()["email"]].add(seen.headers["Idempotency-Key"])
        assert killed == 2
        assert emails() == set(sent)
        assert all(k == {message_id(connection, seqs[e])} for e, k in keys.items())
        duplicates = len(endpoint.seen) - len(sent)
        print(f"{len(sent)} referrals, {duplicates} sent twice after the kills")

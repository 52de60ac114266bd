"""Mailchimp benchmark: a scheduled export of 100,000 referrals by the delivery service
(its own process) to the Mailchimp fake (its own process), beside a raw aiohttp loop
posting the same 500-member batches to the same fake, in the same run:

- members/s, beside the raw loop's;
- API calls used, beside the minimum the 500-member limit allows (200);
- the delivery process's peak RSS.
`python -m tests.bench mailchimp`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid

import aiohttp
import asyncpg

from services.common.secrets import SecretBox, connection_secret_context
from services.delivery.transports.http.client import basic_auth
from services.delivery.transports.mailchimp.settings import MAX_BATCH, MailchimpSettings
from tests.bench import render
from tests.bench.delivery import KEYS, _deliver, _free_port, _setup_token
from tests.bench.scratch import scratch_database
from tests.bench.table import BenchRow

TOTAL = 100_000
KEY = "0123456789abcdef0123456789abcdef-us7"
LIST = "bench12345"
MAPPING = {"email": "EMAIL", "first_name": "FNAME", "last_name": "LNAME"}
_INSERT_CONNECTION = """
    INSERT INTO connections (id, account_id, name, kind, settings, secrets)
    VALUES ($1, $2, 'bench mailchimp', 'mailchimp', $3::jsonb, $4::jsonb)"""


async def _stats(session: aiohttp.ClientSession, url: str) -> dict[str, object]:
    async with session.get(f"{url}/_stats") as answer:
        found: dict[str, object] = await answer.json()
        return found


async def _connection(dsn: str, account: str, base_url: str) -> uuid.UUID:
    box = SecretBox.from_env({"HANDOFF_SECRET_KEYS": KEYS})
    cid = uuid.uuid4()
    settings = MailchimpSettings(list_id=LIST, merge_fields=MAPPING, base_url=base_url)
    sealed = {"api_key": box.seal(KEY, connection_secret_context(cid, "api_key"))}
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            _INSERT_CONNECTION, cid, uuid.UUID(account), json.dumps(settings.to_json()),
            json.dumps(sealed),
        )  # fmt: skip
    finally:
        await conn.close()
    return cid


async def _raw(dsn: str, account: str, url: str) -> float:
    """Members/s of a bare loop: the same rows read, 500-member batches posted in turn."""
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        rows = await conn.fetch(
            "SELECT email, first_name, last_name FROM referrals WHERE account_id = $1 "
            "ORDER BY seq LIMIT $2",
            uuid.UUID(account), TOTAL,
        )  # fmt: skip
        headers = {"Authorization": basic_auth("raw", KEY), "Content-Type": "application/json"}
        async with aiohttp.ClientSession() as session:
            for start in range(0, len(rows), MAX_BATCH):
                members = [
                    {"email_address": r["email"], "status": "subscribed",
                     "merge_fields": {"FNAME": r["first_name"], "LNAME": r["last_name"]}}
                    for r in rows[start : start + MAX_BATCH]
                ]  # fmt: skip
                body = json.dumps({"members": members, "update_existing": True})
                async with session.post(
                    f"{url}/us7/3.0/lists/{LIST}", data=body, headers=headers
                ) as answer:
                    await answer.read()
                    assert answer.status == 200, answer.status
        return len(rows) / (time.perf_counter() - started)
    finally:
        await conn.close()


async def run(dsn: str) -> list[BenchRow]:
    """Seed a scratch database, measure, drop it; the table rows."""
    async with scratch_database(dsn, "mailchimp") as scratch:
        account = await render._seed(scratch, TOTAL)
        token = await _setup_token(scratch)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        fake = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.fakes.mailchimp", str(port), KEY, LIST
        )
        try:
            async with aiohttp.ClientSession() as session:
                async with asyncio.timeout(20):
                    while True:
                        try:
                            await _stats(session, url)
                            break
                        except aiohttp.ClientError:
                            await asyncio.sleep(0.1)
                connection = await _connection(scratch, account, url + "/{dc}/3.0")
                seconds, rss, rows = await _deliver(
                    scratch, account, connection, None, TOTAL, token
                )
                stats = await _stats(session, url)
                raw = await _raw(scratch, account, url)
        finally:
            fake.terminate()
            await fake.wait()
    calls = dict(stats["calls"])  # type: ignore[call-overload]
    batch_calls = float(calls.get("POST /lists/{id}", 0))
    members = dict(stats["members"]).get(LIST, 0)  # type: ignore[call-overload]
    assert members == rows == TOTAL, (members, rows)
    return [
        BenchRow(
            "Mailchimp scheduled export, 100k referrals",
            rows / seconds,
            "members/s",
            "raw aiohttp loop, same batches",
            raw,
            "",
        ),
        BenchRow(
            "Mailchimp API calls used, 100k referrals",
            batch_calls,
            "calls",
            "minimum at 500 members a call",
            TOTAL / MAX_BATCH,
            "1.00x",
        ),
        BenchRow("delivery process peak RSS, Mailchimp 100k", rss, "MiB", "", None, "< 200"),
    ]

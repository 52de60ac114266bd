"""Sailthru in real time: the live loop sends each new referral as one POST /user to the
Sailthru fake; what the fake holds, profile by profile, and what Handoff recorded."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from services.common.layouts.codec import layout_to_json
from services.common.layouts.model import Column, LayoutSpec
from services.common.secrets import connection_secret_context
from services.delivery.transports.sailthru.settings import SailthruSettings
from tests.fakes.sailthru import FakeSailthru, sailthru_fake
from tests.integration.access_support import TEST_BOX
from tests.integration.layouts_support import create_account, insert_referrals
from tests.integration.live_support import eventually, notify, supervisor

pytestmark = pytest.mark.integration
QUICK = (0.05, 0.05, 0.05)


async def _layout(pool: asyncpg.Pool, account: uuid.UUID) -> str:
    """A vars layout: the email (the id), then two vars."""
    spec = LayoutSpec(
        (Column("email", "email"), Column("FirstName", "first_name"), Column("Age", "extra.age"))
    )
    layout_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO layouts (id, account_id, name, definition) VALUES ($1, $2, $3, $4)",
        layout_id, account, f"vars-{layout_id.hex[:6]}", layout_to_json(spec),
    )  # fmt: skip
    return str(layout_id)


async def _connection(
    pool: asyncpg.Pool, account: uuid.UUID, fake: FakeSailthru, secret: str = "", **options: Any
) -> uuid.UUID:
    """Store a real-time Sailthru connection (secrets sealed as the connection API does)."""
    settings = SailthruSettings(list_name="Referrals", base_url=fake.url, **options)
    cid = uuid.uuid4()
    plain = {"api_key": fake.api_key, "api_secret": secret or fake.secret}
    sealed = {n: TEST_BOX.seal(v, connection_secret_context(cid, n)) for n, v in plain.items()}
    await pool.execute(
        "INSERT INTO connections (id, account_id, name, kind, settings, secrets) "
        "VALUES ($1, $2, $3, 'sailthru', $4, $5)",
        cid, account, f"sailthru-{cid.hex[:6]}", settings.to_json(), sealed,
    )  # fmt: skip
    return cid


async def _ingest(
    pool: asyncpg.Pool, account: uuid.UUID, campaign: uuid.UUID, rows: list[dict[str, Any]]
) -> list[int]:
    seqs = await insert_referrals(pool, account, campaign, rows)
    await notify(pool)
    return seqs


async def _attempts(pool: asyncpg.Pool, connection: uuid.UUID) -> list[asyncpg.Record]:
    return await pool.fetch(  # type: ignore[no-any-return]
        "SELECT * FROM live_attempts WHERE connection_id = $1 ORDER BY attempted_at, seq",
        connection,
    )


async def test_each_new_referral_becomes_a_profile_in_the_list(pool: asyncpg.Pool) -> None:
    account, campaign = await create_account(pool)
    async with sailthru_fake() as fake, supervisor(pool) as running:
        layout = await _layout(pool, account)
        connection = await _connection(
            pool, account, fake, layout_id=layout, var_types={"Age": "number"}
        )
        await running.claim_round()
        await eventually(lambda: connection in running.loops)
        seqs = await _ingest(pool, account, campaign, [
            {"email": "ann@example.com", "first_name": "Ann", "extra": {"age": "42"}},
            {"email": "bob@example.com", "first_name": "Bob", "extra": {}},
        ])  # fmt: skip
        await eventually(lambda: len(fake.profiles) >= 2)
        await asyncio.sleep(0.2)
    assert fake.profiles["ann@example.com"].vars == {"FirstName": "Ann", "Age": 42}
    assert fake.profiles["bob@example.com"].vars == {"FirstName": "Bob", "Age": None}
    assert {p.id: p.lists for p in fake.profiles.values()} == {
        "ann@example.com": {"Referrals": 1},
        "bob@example.com": {"Referrals": 1},
    }
    attempts = await _attempts(pool, connection)
    assert [(a["seq"], a["status"], a["outcome"]) for a in attempts] == [
        (seqs[0], 200, "accepted"),
        (seqs[1], 200, "accepted"),
    ]
    for attempt in attempts:
        for secret in (fake.api_key, fake.secret):
            assert secret not in str(dict(attempt))


async def test_a_wrong_secret_disables_the_connection_naming_the_signature(
    pool: asyncpg.Pool,
) -> None:
    account, campaign = await create_account(pool)
    async with sailthru_fake() as fake, supervisor(pool) as running:
        connection = await _connection(pool, account, fake, secret="not-the-secret")
        await running.claim_round()
        await _ingest(pool, account, campaign, [{"email": "ann@example.com"}])

        async def reason() -> str | None:
            found: str | None = await pool.fetchval(
                "SELECT disabled_reason FROM live_cursors WHERE connection_id = $1", connection
            )
            return found

        await eventually(reason, timeout=15)
        said = await reason()
    assert said is not None
    assert "signature" in said
    assert fake.profiles == {}
    attention = await pool.fetchval(
        "SELECT count(*) FROM attention_events WHERE connection_id = $1", connection
    )
    assert attention >= 1


async def test_a_spent_window_holds_sends_until_the_reset_then_every_referral_arrives(
    pool: asyncpg.Pool,
) -> None:
    account, campaign = await create_account(pool)
    limited = FakeSailthru(limits={"POST /user": 2}, window_s=1.0)
    async with sailthru_fake(limited) as fake, supervisor(pool) as running:
        connection = await _connection(pool, account, fake, retry_schedule_s=QUICK, concurrency=1)
        await running.claim_round()
        await eventually(lambda: connection in running.loops)
        emails = [f"p{i}@example.com" for i in range(5)]
        await _ingest(pool, account, campaign, [{"email": e} for e in emails])
        await eventually(lambda: len(fake.profiles) >= 5, timeout=20)
        accepted = [r for r in fake.calls("POST /user") if r.status == 200]
    assert set(fake.profiles) == set(emails)
    assert accepted[-1].at - accepted[0].at >= 1.0  # five sends of two a second: waited
    assert len(accepted) == 5  # each referral once
    # The gate held the sends: none earned a 429.
    assert [r.status for r in fake.calls("POST /user")] == [200] * 5


async def test_a_429_holds_the_connection_until_the_windows_reset(pool: asyncpg.Pool) -> None:
    account, campaign = await create_account(pool)
    limited = FakeSailthru(window_s=2.0)
    limited.scripted["POST /user"] = [(429, {"error": 43, "errormsg": "Too many requests"})]
    async with sailthru_fake(limited) as fake, supervisor(pool) as running:
        connection = await _connection(pool, account, fake, retry_schedule_s=QUICK, concurrency=1)
        await running.claim_round()
        await eventually(lambda: connection in running.loops)
        await _ingest(pool, account, campaign, [{"email": "ann@example.com"}])
        await eventually(lambda: "ann@example.com" in fake.profiles, timeout=20)
        refused, accepted = fake.calls("POST /user")
    assert (refused.status, accepted.status) == (429, 200)
    # Not the schedule's 0.05 s: the window's reset (up to two seconds away).
    assert accepted.at - refused.at >= 0.5
    outcomes = [a["outcome"] for a in await _attempts(pool, connection)]
    assert outcomes == ["retry", "accepted"]


async def test_a_value_its_var_type_cannot_take_is_rejected_without_a_request(
    pool: asyncpg.Pool,
) -> None:
    account, campaign = await create_account(pool)
    async with sailthru_fake() as fake, supervisor(pool) as running:
        layout = await _layout(pool, account)
        connection = await _connection(
            pool, account, fake, layout_id=layout, var_types={"Age": "number"}
        )
        await running.claim_round()
        await eventually(lambda: connection in running.loops)
        seqs = await _ingest(pool, account, campaign, [
            {"email": "ann@example.com", "first_name": "Ann", "extra": {"age": "forty"}},
            {"email": "bob@example.com", "first_name": "Bob", "extra": {"age": "7"}},
        ])  # fmt: skip
        await eventually(lambda: "bob@example.com" in fake.profiles)
        await asyncio.sleep(0.2)
    assert list(fake.profiles) == ["bob@example.com"]
    attempts = {a["seq"]: a for a in await _attempts(pool, connection)}
    assert attempts[seqs[0]]["outcome"] == "rejected"
    assert "not a number" in attempts[seqs[0]]["error"]

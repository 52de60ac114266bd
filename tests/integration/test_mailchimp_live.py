"""Mailchimp in real time against the fake: each referral upserted as a member (checked
member by member), unusable addresses rejected and recorded, throttling backed off, a
revoked key or a disabled account disabling the connection with attention, and the
per-key cap of 10 concurrent requests holding across two replicas."""

from __future__ import annotations

import logging
import uuid

import asyncpg
import pytest

from services.common.db import create_pool
from tests.fakes.mailchimp import mailchimp_fake
from tests.integration.layouts_support import create_account, insert_referrals
from tests.integration.live_support import eventually, notify
from tests.integration.mailchimp_support import (
    KEY,
    LIST,
    mailchimp_connection,
    replica,
    settings,
)

pytestmark = pytest.mark.integration


async def _messages(pool: asyncpg.Pool, cid: uuid.UUID) -> dict[int, tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT seq, state, last_error FROM live_messages WHERE connection_id = $1", cid
    )
    return {r["seq"]: (r["state"], r["last_error"]) for r in rows}


async def test_each_referral_becomes_a_member_and_unusable_addresses_are_rejected(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with mailchimp_fake() as fake:
        fake.add_key(KEY)
        fake.add_list(LIST)
        account, campaign = await create_account(pool)
        cid = await mailchimp_connection(pool, account, settings(fake, mode="realtime"))
        async with replica(pool):
            good = [f"Person.{i}@Example.com" for i in range(5)]
            seqs = await insert_referrals(
                pool, account, campaign,
                [{"email": e, "first_name": f"P{i}", "last_name": "Doe"}
                 for i, e in enumerate(good)]
                + [{"email": "not an address"}, {"email": "someone@fake.invalid"}],
            )  # fmt: skip
            await notify(pool)
            await eventually(lambda: len(fake.lists[LIST].members) == 5)
            await eventually(lambda: _rejected(pool, cid, 2))
        for i, email in enumerate(good):
            member = fake.member(LIST, email)
            assert member is not None, email
            assert member["email_address"] == email
            assert member["merge_fields"] == {"FNAME": f"P{i}", "LNAME": "Doe"}
            assert (member["status"], member["tags"]) == ("subscribed", ["handoff"])
        messages = await _messages(pool, cid)
        assert messages[seqs[5]] == ("rejected", "no usable email address")
        assert messages[seqs[6]][0] == "rejected"
        assert "looks fake or invalid" in messages[seqs[6]][1]
        assert set(messages) == {seqs[5], seqs[6]}
        # The key is in every request's Authorization, never in a log or an attempt.
        assert fake.auth_seen
        assert KEY not in caplog.text
        logged = await pool.fetch(
            "SELECT response_head, error FROM live_attempts WHERE connection_id = $1", cid
        )
        assert len(logged) == 7  # one attempt each
        assert not any(KEY in str(dict(r)) for r in logged)


async def _rejected(pool: asyncpg.Pool, cid: uuid.UUID, count: int) -> bool:
    n = await pool.fetchval(
        "SELECT count(*) FROM live_messages WHERE connection_id = $1 AND state = 'rejected'", cid
    )
    return bool(n == count)


async def test_429_and_a_bare_403_back_off_then_every_referral_arrives(pool: asyncpg.Pool) -> None:
    async with mailchimp_fake() as fake:
        fake.add_key(KEY)
        fake.add_list(LIST)
        fake.answers = ["429", "403", "429"]
        account, campaign = await create_account(pool)
        cid = await mailchimp_connection(
            pool, account, settings(fake, mode="realtime", concurrency=1)
        )
        async with replica(pool):
            emails = [f"t{i}@example.com" for i in range(4)]
            await insert_referrals(pool, account, campaign, [{"email": e} for e in emails])
            await notify(pool)
            await eventually(lambda: len(fake.lists[LIST].members) == 4)
        statuses = [
            r["status"]
            for r in await pool.fetch(
                "SELECT status FROM live_attempts WHERE connection_id = $1 ORDER BY attempted_at",
                cid,
            )
        ]
        assert statuses.count(429) == 2
        assert statuses.count(403) == 1
        assert statuses.count(200) == 4
        disabled = await pool.fetchval(
            "SELECT disabled_at FROM live_cursors WHERE connection_id = $1", cid
        )
        assert disabled is None  # throttling is not a reason to disable


@pytest.mark.parametrize("problem", ["revoked", "disabled"])
async def test_a_revoked_key_or_a_disabled_account_disables_the_connection_with_attention(
    pool: asyncpg.Pool, problem: str
) -> None:
    async with mailchimp_fake() as fake:
        fake.add_key(KEY)
        fake.add_list(LIST)
        (fake.revoked if problem == "revoked" else fake.disabled).add(KEY)
        account, campaign = await create_account(pool)
        cid = await mailchimp_connection(pool, account, settings(fake, mode="realtime"))
        async with replica(pool):
            (seq,) = await insert_referrals(pool, account, campaign, [{"email": "a@example.com"}])
            await notify(pool)

            async def disabled() -> bool:
                at = await pool.fetchval(
                    "SELECT disabled_at FROM live_cursors WHERE connection_id = $1", cid
                )
                return at is not None

            await eventually(disabled)
        reason = await pool.fetchval(
            "SELECT disabled_reason FROM live_cursors WHERE connection_id = $1", cid
        )
        assert ("API Key Invalid" if problem == "revoked" else "User Disabled") in reason
        events = await pool.fetch(
            "SELECT message FROM attention_events WHERE connection_id = $1", cid
        )
        assert len(events) == 1
        # The referral waits for the re-enable (a replay), it is not lost.
        state = await pool.fetchval(
            "SELECT state FROM live_messages WHERE connection_id = $1 AND seq = $2", cid, seq
        )
        assert state == "retrying"
        assert not fake.lists[LIST].members


async def test_ten_concurrent_requests_per_key_at_most_across_two_replicas(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with (
        mailchimp_fake() as fake,
        create_pool(database_url, min_size=1, max_size=6) as other_pool,
    ):
        fake.add_key(KEY)
        fake.add_list(LIST)
        fake.latency_s = 0.03
        account, campaign = await create_account(pool)
        # Two connections sharing one key, each allowed 10 requests at once: 20 without a
        # shared cap.
        first = await mailchimp_connection(
            pool, account, settings(fake, mode="realtime", concurrency=10)
        )
        second = await mailchimp_connection(
            pool, account, settings(fake, mode="realtime", concurrency=10)
        )
        async with (
            replica(pool, max_loops=1) as (one, _),
            replica(other_pool, max_loops=1) as (two, _),
        ):
            await eventually(lambda: len(one.loops) == 1 and len(two.loops) == 1)
            assert {*one.loops, *two.loops} == {first, second}  # one loop on each replica
            emails = [f"c{i}@example.com" for i in range(150)]
            await insert_referrals(pool, account, campaign, [{"email": e} for e in emails])
            await notify(pool)
            await eventually(
                lambda: (
                    sum(m.get("updates", 0) + 1 for m in fake.lists[LIST].members.values()) == 300
                ),
                timeout=60,
            )
        assert fake.over_limit == 0
        assert fake.peak[KEY] <= 10
        assert fake.peak[KEY] >= 5  # it did run requests side by side
        assert len(fake.lists[LIST].members) == 150

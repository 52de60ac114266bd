"""Audiences pulled from a Mailchimp audience by the scheduler's refresher, against the
Mailchimp fake (basic auth, the data centre, pages of members) and real PostgreSQL: the
members of the counted statuses hashed on arrival, a member removed at Mailchimp leaving
at the next pull, and a revoked key recorded with the members left as they were."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import asyncpg
import pytest

from services.common.audiences.sources import MailchimpSourceSettings, SourceSpec
from services.common.audiences.store import AudienceStorePg
from tests.fakes.mailchimp import FakeList, Mailchimp, mailchimp_fake, md5
from tests.integration.audience_source_support import Clock, members, refresher, sha256s
from tests.integration.layouts_support import create_account
from tests.integration.mailchimp_support import KEY, LIST, mailchimp_connection, settings

pytestmark = pytest.mark.integration


def _member(found: FakeList, email: str, status: str) -> None:
    found.members[md5(email)] = {"email_address": email, "status": status, "merge_fields": {}}


async def _source(
    pool: asyncpg.Pool, fake: Mailchimp, **values: Any
) -> tuple[uuid.UUID, uuid.UUID]:
    account, _ = await create_account(pool)
    connection = await mailchimp_connection(pool, account, settings(fake))
    spec = SourceSpec("mailchimp", connection, MailchimpSourceSettings(**values), 3600)
    made = await AudienceStorePg(pool).create(
        uuid.uuid4(), account, "from mailchimp", "exclude", pulled=spec
    )
    assert made is not None
    return connection, made.id


async def test_a_mailchimp_audience_is_pulled_its_removals_reflected(pool: asyncpg.Pool) -> None:
    async with mailchimp_fake() as fake:
        fake.add_key(KEY)
        found = fake.add_list(LIST)
        for i in range(1203):  # more than one page of 1,000
            _member(found, f"Person.{i}@Example.com", "subscribed")
        _member(found, "left@example.com", "unsubscribed")
        _member(found, "old@example.com", "archived")  # not counted by default
        _, audience = await _source(pool, fake, list_id="")
        clock = Clock()
        pulls = refresher(pool, clock)

        [outcome] = await pulls.tick()

        assert outcome.ok, outcome
        expected = [f"person.{i}@example.com" for i in range(1203)] + ["left@example.com"]
        assert await members(pool, audience) == sha256s(expected)
        assert outcome.report.read == 1205
        assert outcome.report.rejected == 1
        assert fake.calls["GET /lists/{id}/members"] == 2

        del found.members[md5("Person.7@Example.com")]
        _member(found, "left@example.com", "archived")
        clock.advance(hours=1, seconds=1)
        [again] = await pulls.tick()
        assert again.ok
        assert again.member_count == 1202
        gone = {
            hashlib.sha256(e.encode()).digest()
            for e in ("person.7@example.com", "left@example.com")
        }
        assert await members(pool, audience) == sha256s(expected) - gone


async def test_only_the_statuses_asked_for_count(pool: asyncpg.Pool) -> None:
    async with mailchimp_fake() as fake:
        fake.add_key(KEY)
        found = fake.add_list(LIST)
        _member(found, "sub@example.com", "subscribed")
        _member(found, "unsub@example.com", "unsubscribed")
        _member(found, "clean@example.com", "cleaned")
        _, audience = await _source(pool, fake, list_id=LIST, statuses=("unsubscribed", "cleaned"))
        [outcome] = await refresher(pool, Clock()).tick()
        assert outcome.ok
        assert await members(pool, audience) == sha256s(["unsub@example.com", "clean@example.com"])


async def test_a_revoked_key_records_the_error_and_leaves_the_members(pool: asyncpg.Pool) -> None:
    async with mailchimp_fake() as fake:
        fake.add_key(KEY)
        found = fake.add_list(LIST)
        _member(found, "ann@example.com", "subscribed")
        _, audience = await _source(pool, fake, list_id="")
        clock = Clock()
        [first] = await refresher(pool, clock).tick()
        assert first.ok
        fake.revoked.add(KEY)
        _member(found, "bob@example.com", "subscribed")
        clock.advance(hours=1, seconds=1)
        [outcome] = await refresher(pool, clock).tick()

        assert not outcome.ok, outcome
        assert not outcome.retryable, outcome
        assert outcome.diagnosis == "auth", outcome
        assert KEY not in outcome.error
        assert await members(pool, audience) == sha256s(["ann@example.com"])

"""Zapier against real parts: the export API on loopback over real PostgreSQL, the live
supervisor sending through the real-time path, and a fake Zapier that subscribes with
the user's token, receives hooks and answers 410 once a Zap is off. Each test asserts
what the fake received, referral by referral."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from services.common.errors import FailedPreconditionError
from services.export.zapier import HOOK_FIELDS
from services.scheduler.connections.model import ConnectionDraft, Secrets
from services.scheduler.connections.rules import delete_connection, update_connection
from services.scheduler.connections.store import ConnectionStorePg
from tests.fakes.zapier import fake_zapier
from tests.integration.access_support import LOOPBACK, TEST_BOX
from tests.integration.credentials_support import account_token
from tests.integration.export_support import export_app, served_export
from tests.integration.layouts_support import create_account, insert_referrals
from tests.integration.live_support import eventually, notify, supervisor

pytestmark = pytest.mark.integration
EVERY_SCOPE = ("config:read", "config:write", "referrals:read")
# Waiting for hooks: the safe watermark is cluster-wide, so another test's open
# transaction can hold every delivery back for a while on a busy machine.
DELIVERED_S = 120.0


class Api:
    """One account's client of the export API (the user's token, as Zapier holds it)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.session, self.url, self.token = session, url, token
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, *, status: int = 200, body: Any = None) -> Any:
        async with self.session.request(
            method, f"{self.url}{path}", json=body, headers=self.headers
        ) as answer:
            text = await answer.text()
            assert answer.status == status, text
            return json.loads(text) if text else None


@pytest.fixture
async def served(pool: asyncpg.Pool) -> AsyncIterator[str]:
    async with served_export(export_app(pool)) as url:
        yield url


async def _user(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, url: str
) -> tuple[Api, uuid.UUID, uuid.UUID]:
    account, campaign = await create_account(pool, campaign="Spring offer")
    token = await account_token(pool, str(account), *EVERY_SCOPE)
    return Api(session, url, token), account, campaign


async def _campaign(pool: asyncpg.Pool, account: uuid.UUID, name: str) -> uuid.UUID:
    campaign = uuid.uuid4()
    await pool.execute(
        "INSERT INTO campaigns (id, account_id, name) VALUES ($1, $2, $3)", campaign, account, name
    )
    return campaign


async def _ingest(
    pool: asyncpg.Pool, account: uuid.UUID, campaign: uuid.UUID, emails: list[str]
) -> list[int]:
    seqs = await insert_referrals(pool, account, campaign, [{"email": e} for e in emails])
    await notify(pool)
    return seqs


async def _loops_running(running: Any, pool: asyncpg.Pool, account: uuid.UUID) -> None:
    """Wait until the live supervisor runs every connection of the account."""
    ids = {r["id"] for r in await pool.fetch("SELECT id FROM connections WHERE account_id = $1",
                                             account)}  # fmt: skip
    await running.claim_round()
    await eventually(lambda: ids <= set(running.loops))
    await asyncio.sleep(0.1)  # each loop placed its cursor


async def test_each_zap_receives_exactly_the_new_referrals_of_its_scope(
    pool: asyncpg.Pool, served: str
) -> None:
    async with aiohttp.ClientSession() as session, fake_zapier() as zapier:
        api, account, spring = await _user(pool, session, served)
        autumn = await _campaign(pool, account, "Autumn offer")
        await _ingest(pool, account, spring, ["before@example.com"])  # before any Zap
        async with supervisor(pool) as running:
            everything = await zapier.turn_on(served, api.token)
            autumn_only = await zapier.turn_on(served, api.token, campaign_ids=[str(autumn)])
            also_everything = await zapier.turn_on(served, api.token, campaign_ids=[])
            await _loops_running(running, pool, account)
            spring_seqs = await _ingest(pool, account, spring, ["ann@example.com"])
            autumn_seqs = await _ingest(pool, account, autumn, ["bob@example.com", "cy@x.org"])
            await eventually(
                lambda: (
                    len(everything.received) >= 3
                    and len(autumn_only.received) >= 2
                    and len(also_everything.received) >= 3
                ),
                DELIVERED_S,
            )
            await asyncio.sleep(0.3)  # nothing more arrives
        assert [(b["id"], b["email"], b["campaign_name"]) for b in everything.received] == [
            (str(spring_seqs[0]), "ann@example.com", "Spring offer"),
            (str(autumn_seqs[0]), "bob@example.com", "Autumn offer"),
            (str(autumn_seqs[1]), "cy@x.org", "Autumn offer"),
        ]
        assert [b["email"] for b in autumn_only.received] == ["bob@example.com", "cy@x.org"]
        assert also_everything.received == everything.received  # [] is no filter
        assert set(everything.received[0]) == {"id", *HOOK_FIELDS}
        # The polling endpoint answers the very bodies the hooks sent, newest first.
        polled = await api.call("GET", "/v1/zapier/referrals")
        assert polled[:3] == everything.received[::-1]
        listed = await api.call("GET", "/v1/zapier/subscriptions")
        assert {(s["id"], s["state"], s["target_url"]) for s in listed["items"]} == {
            (everything.subscription_id, "active", everything.target_url),
            (autumn_only.subscription_id, "active", autumn_only.target_url),
            (also_everything.subscription_id, "active", also_everything.target_url),
        }
        assert zapier.refused == []


async def test_a_410_from_a_turned_off_zap_removes_its_subscription(
    pool: asyncpg.Pool, served: str
) -> None:
    async with aiohttp.ClientSession() as session, fake_zapier() as zapier:
        api, account, campaign = await _user(pool, session, served)
        async with supervisor(pool) as running:
            zap = await zapier.turn_on(served, api.token)
            kept = await zapier.turn_on(served, api.token)
            await _loops_running(running, pool, account)
            first = await _ingest(pool, account, campaign, ["one@example.com"])
            await eventually(lambda: zap.received and kept.received, DELIVERED_S)
            # The user turns the Zap off, and the unsubscribe call never reaches Handoff.
            await zapier.turn_off(zap, served, api.token, unsubscribe=False)
            second = await _ingest(pool, account, campaign, ["two@example.com"])

            async def removed() -> bool:
                found = await api.call("GET", f"/v1/zapier/subscriptions/{zap.subscription_id}")
                return bool(found["state"] == "removed")

            await eventually(removed, DELIVERED_S)
            third = await _ingest(pool, account, campaign, ["three@example.com"])
            await eventually(lambda: len(kept.received) >= 3, DELIVERED_S)
            await asyncio.sleep(0.3)
        assert [b["id"] for b in zap.received] == [str(first[0])]
        assert zap.gone_answers == 1  # one 410, then nothing more was sent to it
        assert [b["id"] for b in kept.received] == [str(s) for s in (*first, *second, *third)]
        found = await api.call("GET", f"/v1/zapier/subscriptions/{zap.subscription_id}")
        assert found["state"] == "removed"
        assert found["connection_id"] is None
        assert "410" in found["removed_reason"]
        assert found["removed_at"] is not None
        # Not merely disabled: the connection (cursor, waiting referral) is gone.
        assert await pool.fetchval(
            "SELECT count(*) FROM connections WHERE id = $1", uuid.UUID(zap.subscription_id)
        ) == 0  # fmt: skip
        # Zapier unsubscribing later (the Zap deleted) still succeeds.
        assert await zapier.turn_off(zap, served, api.token) == 204


async def test_unsubscribing_removes_the_connection_and_stops_the_hooks(
    pool: asyncpg.Pool, served: str
) -> None:
    async with aiohttp.ClientSession() as session, fake_zapier() as zapier:
        api, account, campaign = await _user(pool, session, served)
        other, _, _ = await _user(pool, session, served)
        async with supervisor(pool) as running:
            zap = await zapier.turn_on(served, api.token)
            kept = await zapier.turn_on(served, api.token)
            await _loops_running(running, pool, account)
            sent = await _ingest(pool, account, campaign, ["one@example.com"])
            await eventually(lambda: zap.received, DELIVERED_S)
            # Another account cannot see or remove it.
            await other.call("DELETE", f"/v1/zapier/subscriptions/{zap.subscription_id}",
                             status=404)  # fmt: skip
            await other.call("GET", f"/v1/zapier/subscriptions/{zap.subscription_id}",
                             status=404)  # fmt: skip
            assert await zapier.turn_off(zap, served, api.token) == 204
            # Removal wakes the supervisor, which stops the loop at once (a referral
            # committed in that instant may still go out once: Zapier answers it 410).
            await eventually(lambda: uuid.UUID(zap.subscription_id) not in running.loops)
            zap.on = True  # were anything still sent, the fake would take it
            later = await _ingest(pool, account, campaign, ["after@example.com"])
            await eventually(lambda: len(kept.received) >= 2, DELIVERED_S)
            await asyncio.sleep(0.3)
        assert [b["id"] for b in kept.received] == [str(sent[0]), str(later[0])]
        assert [b["id"] for b in zap.received] == [str(sent[0])]
        found = await api.call("GET", f"/v1/zapier/subscriptions/{zap.subscription_id}")
        assert (found["state"], found["removed_reason"]) == ("removed", "unsubscribed")
        # While it was active, the connection API refused to delete or change it.
        owned = kept.subscription_id
        assert owned is not None
        store = ConnectionStorePg(pool)
        with pytest.raises(FailedPreconditionError, match=f"Zapier subscription {owned}"):
            await delete_connection(store, str(account), owned)
        with pytest.raises(FailedPreconditionError, match="turn the Zap off"):
            await update_connection(
                store, TEST_BOX, LOOPBACK, str(account), owned,
                ConnectionDraft("renamed", None, Secrets()),
            )  # fmt: skip
        assert await pool.fetchval(
            "SELECT count(*) FROM connections WHERE id = $1", uuid.UUID(zap.subscription_id)
        ) == 0  # fmt: skip
        await api.call("DELETE", f"/v1/zapier/subscriptions/{uuid.uuid4()}", status=404)


async def test_polling_answers_the_newest_fifty_of_the_scope_newest_first(
    pool: asyncpg.Pool, served: str
) -> None:
    async with aiohttp.ClientSession() as session:
        api, account, spring = await _user(pool, session, served)
        autumn = await _campaign(pool, account, "Autumn offer")
        spring_seqs = await _ingest(pool, account, spring, [f"s{i}@example.com" for i in range(60)])
        autumn_seqs = await _ingest(pool, account, autumn, ["a0@example.com", "a1@example.com"])
        _, other_account, other_campaign = await _user(pool, session, served)
        await _ingest(pool, other_account, other_campaign, ["theirs@example.com"])
        everything = await api.call("GET", "/v1/zapier/referrals")
        assert isinstance(everything, list)
        expected = [*autumn_seqs[::-1], *spring_seqs[::-1]][:50]
        assert [item["id"] for item in everything] == [str(s) for s in expected]
        assert everything[0]["email"] == "a1@example.com"
        assert everything[0]["campaign_name"] == "Autumn offer"
        assert set(everything[0]) == {"id", *HOOK_FIELDS}
        scoped = await api.call("GET", f"/v1/zapier/referrals?campaign_id={autumn}")
        assert [item["email"] for item in scoped] == ["a1@example.com", "a0@example.com"]
        both = await api.call("GET", f"/v1/zapier/referrals?campaign_id={autumn},{spring}")
        assert [item["id"] for item in both] == [str(s) for s in expected]
        # Another account's campaign is unknown here; an account with nothing answers [].
        await api.call("GET", f"/v1/zapier/referrals?campaign_id={other_campaign}", status=404)
        empty, _, _ = await _user(pool, session, served)
        assert await empty.call("GET", "/v1/zapier/referrals") == []


async def test_bad_subscriptions_are_refused_field_by_field_and_store_nothing(
    pool: asyncpg.Pool, served: str
) -> None:
    async with aiohttp.ClientSession() as session:
        api, account, _ = await _user(pool, session, served)
        _, _, foreign = await _user(pool, session, served)
        cases: list[tuple[dict[str, Any], str, str]] = [
            ({"event": "new_referral"}, "target_url", "REQUIRED"),
            ({"target_url": "http://hooks.zapier.com/hooks/standard/1/"}, "target_url",
             "INSECURE"),
            ({"target_url": "ftp://hooks.zapier.com/x"}, "target_url", "INVALID_FORMAT"),
            ({"target_url": "https://user:pw@hooks.zapier.com/x"}, "target_url",
             "INVALID_FORMAT"),
            ({"target_url": "https://10.1.2.3/hook"}, "target_url", "EGRESS_REFUSED"),
            ({"target_url": "https://hooks.zapier.com/x", "event": "deleted"}, "event",
             "INVALID_VALUE"),
            ({"target_url": "https://hooks.zapier.com/x", "campaign_ids": ["nope"]},
             "campaign_ids[0]", "INVALID_FORMAT"),
            ({"target_url": "https://hooks.zapier.com/x", "campaign_ids": [str(foreign)]},
             "campaign_ids", "NOT_FOUND"),
            ({"target_url": "https://hooks.zapier.com/x", "url": "x"}, "url", "UNKNOWN"),
        ]  # fmt: skip
        for body, name, code in cases:
            problem = await api.call("POST", "/v1/zapier/subscriptions", body=body, status=400)
            assert {(p["name"], p["code"]) for p in problem["invalid_params"]} >= {(name, code)}, (
                body,
                problem,
            )
        assert await pool.fetchval(
            "SELECT count(*) FROM connections WHERE account_id = $1", account
        ) == 0  # fmt: skip
        listed = await api.call("GET", "/v1/zapier/subscriptions")
        assert listed["items"] == []


async def test_scopes_decide_who_may_subscribe_poll_and_add_members(
    pool: asyncpg.Pool, served: str
) -> None:
    async with aiohttp.ClientSession() as session:
        account, _ = await create_account(pool)
        reader = Api(session, served, await account_token(pool, str(account), "referrals:read"))
        await reader.call("GET", "/v1/zapier/referrals")
        await reader.call("POST", "/v1/zapier/subscriptions", status=403,
                          body={"target_url": "https://hooks.zapier.com/x"})  # fmt: skip
        await reader.call("GET", "/v1/zapier/audiences", status=403)
        anonymous = Api(session, served, "not-a-token")
        await anonymous.call("GET", "/v1/zapier/referrals", status=401)


async def test_a_catch_hook_connection_receives_the_hook_body(
    pool: asyncpg.Pool, served: str
) -> None:
    async with aiohttp.ClientSession() as session, fake_zapier() as zapier:
        api, account, campaign = await _user(pool, session, served)
        hook = zapier.catch_hook()
        made = await api.call("POST", "/v1/zapier/catch-hooks", status=201,
                              body={"url": hook.target_url, "name": "My catch hook"})  # fmt: skip
        assert made["name"] == "My catch hook"
        kind, settings = await pool.fetchrow(
            "SELECT kind, settings FROM connections WHERE id = $1",
            uuid.UUID(made["connection_id"]),
        )
        assert (kind, settings["method"], settings["encoding"]) == ("api", "POST", "json")
        async with supervisor(pool) as running:
            await _loops_running(running, pool, account)
            seqs = await _ingest(pool, account, campaign, ["ann@example.com", "bob@example.com"])
            await eventually(lambda: len(hook.received) >= 2, DELIVERED_S)
            await asyncio.sleep(0.2)
        polled = await api.call("GET", "/v1/zapier/referrals")
        assert hook.received == polled[::-1]
        assert [(b["id"], b["email"]) for b in hook.received] == [
            (str(seqs[0]), "ann@example.com"),
            (str(seqs[1]), "bob@example.com"),
        ]
        # The same name twice, or a URL that is not https, is refused.
        await api.call("POST", "/v1/zapier/catch-hooks", status=409,
                       body={"url": hook.target_url, "name": "My catch hook"})  # fmt: skip
        insecure = {"url": "http://hooks.zapier.com/hooks/catch/1/"}
        problem = await api.call("POST", "/v1/zapier/catch-hooks", status=400, body=insecure)
        assert [(p["name"], p["code"]) for p in problem["invalid_params"]] == [("url", "INSECURE")]


async def test_the_add_to_audience_action_imports_like_the_upload(
    pool: asyncpg.Pool, served: str
) -> None:
    async with aiohttp.ClientSession() as session:
        api, _, _ = await _user(pool, session, served)
        other, _, _ = await _user(pool, session, served)
        made = await api.call("POST", "/v1/audiences", status=201,
                              body={"name": "customers", "kind": "exclude"})  # fmt: skip
        members = f"/v1/zapier/audiences/{made['id']}/members"
        one = await api.call("POST", members, body={"email": "  Ann@Example.COM "})
        assert (one["accepted"], one["member_count"]) == (1, 1)
        md5 = hashlib.md5(b"zed@example.com").hexdigest()
        more = await api.call("POST", members, body={"emails": ["ann@example.com", "b@x.org", md5]})
        assert more["audience"]["members"] == {"sha256": 2, "md5": 3}
        # One bad value refuses the call: nothing of it is added.
        problem = await api.call("POST", members, status=400,
                                 body={"emails": ["c@x.org", "not an email", "email"]})  # fmt: skip
        assert [(p["name"], p["code"]) for p in problem["invalid_params"]] == [
            ("emails[1]", "NOT_AN_EMAIL"),
            ("emails[2]", "NOT_AN_EMAIL"),
        ]
        await api.call("POST", members, status=400, body={})
        await api.call("POST", members, status=400, body={"emails": []})
        await api.call("POST", members, status=400, body={"emails": ["a@x.org"] * 101})
        stored = await api.call("GET", f"/v1/audiences/{made['id']}")
        assert stored["members"] == {"sha256": 2, "md5": 3}
        rows = await pool.fetch(
            "SELECT hash_kind, encode(hash, 'hex') AS h FROM audience_members "
            "WHERE audience_id = $1", uuid.UUID(made["id"]),
        )  # fmt: skip
        assert ("sha256", hashlib.sha256(b"ann@example.com").hexdigest()) in {
            (r["hash_kind"], r["h"]) for r in rows
        }
        assert not any("ann" in r["h"] for r in rows)  # only hashes
        # The dropdown lists the account's audiences; another account sees neither.
        choices = await api.call("GET", "/v1/zapier/audiences")
        assert [(c["id"], c["name"], c["kind"]) for c in choices] == [
            (made["id"], "customers", "exclude")
        ]
        assert await other.call("GET", "/v1/zapier/audiences") == []
        await other.call("POST", members, status=404, body={"email": "x@example.com"})


async def test_the_fake_zapier_refuses_what_zapier_would(pool: asyncpg.Pool, served: str) -> None:
    """The fake is a real peer: a refused subscribe leaves the Zap off, hooks need JSON,
    a Zap that is off answers 410."""
    async with aiohttp.ClientSession() as session, fake_zapier() as zapier:
        account, _ = await create_account(pool)
        reader = await account_token(pool, str(account), "referrals:read")
        with pytest.raises(AssertionError, match="subscribe answered 403"):
            await zapier.turn_on(served, reader)
        assert zapier.zaps == {}
        hook = zapier.catch_hook()
        async with session.post(hook.target_url, data=b"x=1") as answer:
            assert answer.status == 400
        hook.on = False
        async with session.post(hook.target_url, json={}) as answer:
            assert answer.status == 410
        assert (hook.received, hook.gone_answers, zapier.refused) == ([], 1, [(hook.id, 400)])

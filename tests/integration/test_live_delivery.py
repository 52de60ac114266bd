"""Real-time API delivery against aiohttp CRMs on loopback: what each endpoint received,
header by header, and what Handoff recorded about every attempt."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from services.delivery.live.loop import message_id
from services.delivery.live.policy import FieldFilter
from services.delivery.transports.http.responses import Outcome, ResponseRule
from services.delivery.transports.http.settings import ApiSettings
from services.delivery.transports.http.templates import Encoding
from tests.integration.layouts_support import create_account, insert_referrals
from tests.integration.live_support import (
    api_connection,
    crm,
    eventually,
    notify,
    supervisor,
)

pytestmark = pytest.mark.integration
TEMPLATE = json.dumps(
    {
        "email": "{{email}}",
        "name": "{{{first_name}}} {{last_name}}",
        "age": "{{extra.age:number}}",
        "vip": "{{extra.vip:boolean}}",
        "campaign": "{{campaign_name}}",
    }
)
QUICK = (0.05, 0.05, 0.05)  # three quick retries, then dead


async def _account(pool: asyncpg.Pool) -> tuple[uuid.UUID, uuid.UUID]:
    return await create_account(pool, campaign="Spring offer")


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


async def test_each_new_referral_arrives_once_rendered_by_the_template(pool: asyncpg.Pool) -> None:
    account, campaign = await _account(pool)
    async with crm() as endpoint, supervisor(pool) as running:
        connection = await api_connection(
            pool, account,
            ApiSettings(url=f"{endpoint.url}/leads", body_template=TEMPLATE,
                        headers={"X-Source": "handoff"}),
        )  # fmt: skip
        await running.claim_round()
        await eventually(lambda: connection in running.loops)
        await asyncio.sleep(0.1)
        seqs = await _ingest(pool, account, campaign, [
            {"email": 'o"neil@example.com', "first_name": "Ann", "last_name": "O'Neil",
             "extra": {"age": "42", "vip": "yes"}},
            {"email": "b@example.com", "first_name": "</x>", "last_name": "{{email}}",
             "extra": {}},
        ])  # fmt: skip
        await eventually(lambda: len(endpoint.seen) >= 2)
        await asyncio.sleep(0.2)
        bodies = endpoint.bodies()
        assert bodies == [
            {"email": 'o"neil@example.com', "name": "Ann O'Neil", "age": 42, "vip": True,
             "campaign": "Spring offer"},
            {"email": "b@example.com", "name": "</x> {{email}}", "age": None, "vip": None,
             "campaign": "Spring offer"},
        ]  # fmt: skip
        first = endpoint.seen[0]
        assert first.method == "POST"
        assert first.path == "/leads"
        assert first.headers["Content-Type"] == "application/json"
        assert first.headers["X-Source"] == "handoff"
        assert first.headers["Idempotency-Key"] == message_id(connection, seqs[0])
        attempts = await _attempts(pool, connection)
        assert [(a["seq"], a["status"], a["outcome"], a["rule"]) for a in attempts] == [
            (seqs[0], 200, "accepted", "default: 2xx"),
            (seqs[1], 200, "accepted", "default: 2xx"),
        ]
        cursor = await pool.fetchval(
            "SELECT delivered_seq FROM live_cursors WHERE connection_id = $1", connection
        )
        assert cursor >= seqs[1]


async def test_a_referral_received_before_the_connection_is_not_sent(pool: asyncpg.Pool) -> None:
    account, campaign = await _account(pool)
    await insert_referrals(pool, account, campaign, [{"email": "old@example.com"}])
    async with crm() as endpoint, supervisor(pool) as running:
        await asyncio.sleep(0.05)
        await api_connection(pool, account, ApiSettings(url=endpoint.url, body_template=TEMPLATE))
        await running.claim_round()
        await _ingest(pool, account, campaign, [{"email": "new@example.com"}])
        await eventually(lambda: endpoint.seen)
        await asyncio.sleep(0.3)
        assert [b["email"] for b in endpoint.bodies()] == ["new@example.com"]


async def test_failures_retry_on_the_schedule_then_dead_letter_without_holding_others(
    pool: asyncpg.Pool,
) -> None:
    account, campaign = await _account(pool)
    calls: dict[str, int] = {}

    async def flaky(request: web.Request) -> web.Response:
        email = (await request.json())["email"]
        calls[email] = calls.get(email, 0) + 1
        if email.startswith("never"):
            return web.Response(status=503)
        if email.startswith("flaky") and calls[email] <= 3:
            return web.Response(status=500, text="try later")
        return web.json_response({"ok": True})

    async with crm(flaky) as endpoint, supervisor(pool) as running:
        connection = await api_connection(
            pool, account,
            ApiSettings(url=endpoint.url, body_template=TEMPLATE, retry_schedule_s=QUICK),
        )  # fmt: skip
        await running.claim_round()
        never, flaky_seq, _fine = await _ingest(pool, account, campaign, [
            {"email": "never@example.com"}, {"email": "flaky@example.com"},
            {"email": "fine@example.com"},
        ])  # fmt: skip

        async def settled() -> bool:
            states = await pool.fetch(
                "SELECT seq, state FROM live_messages WHERE connection_id = $1", connection
            )
            return {(r["seq"], r["state"]) for r in states} == {(never, "dead")}

        await eventually(settled)
        assert calls == {"never@example.com": 4, "flaky@example.com": 4, "fine@example.com": 1}
        ids = {s.headers["Idempotency-Key"] for s in endpoint.seen if "flaky" in s.body.decode()}
        assert ids == {message_id(connection, flaky_seq)}  # every attempt: the same key
        fine_at = min(s.at for s in endpoint.seen if b"fine@" in s.body)
        last_flaky = max(s.at for s in endpoint.seen if b"flaky@" in s.body)
        assert fine_at < last_flaky  # the others were not held back
        outcomes = [a["outcome"] for a in await _attempts(pool, connection) if a["seq"] == never]
        assert outcomes == ["retry", "retry", "retry", "dead"]


async def test_rules_tell_a_crm_error_in_a_200_and_a_redirect_is_not_followed(
    pool: asyncpg.Pool,
) -> None:
    account, campaign = await _account(pool)

    async def answers(request: web.Request) -> web.Response:
        email = (await request.json())["email"]
        if email.startswith("error"):
            return web.json_response({"status": "error", "message": "duplicate lead"})
        if email.startswith("moved"):
            return web.Response(status=301, headers={"Location": "http://127.0.0.1:1/elsewhere"})
        if email.startswith("bad"):
            return web.Response(status=422, text="email invalid")
        return web.json_response({"status": "ok"})

    rules = (
        ResponseRule(Outcome.REJECTED, status="2xx", json_path="$.status", equals="error",
                     name="crm says error"),
    )  # fmt: skip
    async with crm(answers) as endpoint, supervisor(pool) as running:
        connection = await api_connection(
            pool, account,
            ApiSettings(url=endpoint.url, body_template=TEMPLATE, response_rules=rules,
                        retry_schedule_s=(60,)),
        )  # fmt: skip
        await running.claim_round()
        error, moved, bad, good = await _ingest(pool, account, campaign, [
            {"email": "error@example.com"}, {"email": "moved@example.com"},
            {"email": "bad@example.com"}, {"email": "good@example.com"},
        ])  # fmt: skip
        await eventually(lambda: len(endpoint.seen) >= 4)
        await asyncio.sleep(0.2)
        attempts = {a["seq"]: a for a in await _attempts(pool, connection)}
        assert (attempts[error]["outcome"], attempts[error]["rule"]) == (
            "rejected",
            "crm says error",
        )
        assert "duplicate lead" in attempts[error]["response_head"]
        assert attempts[moved]["outcome"] == "retry"
        assert "not followed" in attempts[moved]["error"]
        assert (attempts[bad]["outcome"], attempts[bad]["status"]) == ("rejected", 422)
        assert attempts[good]["outcome"] == "accepted"
        assert [s.path for s in endpoint.seen].count("/elsewhere") == 0
        states = dict(
            await pool.fetch(
                "SELECT seq, state FROM live_messages WHERE connection_id = $1", connection
            )
        )
        assert states == {error: "rejected", moved: "retrying", bad: "rejected"}


async def test_429_holds_the_connection_for_retry_after(pool: asyncpg.Pool) -> None:
    account, campaign = await _account(pool)
    state = {"limited": True}

    async def limited(request: web.Request) -> web.Response:
        if state["limited"]:
            state["limited"] = False
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.json_response({})

    async with crm(limited) as endpoint, supervisor(pool) as running:
        await api_connection(
            pool, account,
            ApiSettings(url=endpoint.url, body_template=TEMPLATE, retry_schedule_s=(0.05,),
                        concurrency=1),
        )  # fmt: skip
        await running.claim_round()
        await _ingest(pool, account, campaign, [{"email": "a@example.com"}])
        await eventually(lambda: len(endpoint.seen) >= 2, timeout=10)
        gap = endpoint.seen[1].at - endpoint.seen[0].at
        assert gap >= 0.95  # Retry-After: 1, not the schedule's 0.05 s


async def test_standard_webhooks_signatures_verify_with_the_independent_library_during_rotation(
    pool: asyncpg.Pool,
) -> None:
    account, campaign = await _account(pool)
    new = "whsec_" + base64.b64encode(b"n" * 32).decode()
    old = "whsec_" + base64.b64encode(b"o" * 32).decode()
    async with crm() as endpoint, supervisor(pool) as running:
        connection = await api_connection(
            pool, account,
            ApiSettings(url=endpoint.url, body_template=TEMPLATE, standard_webhooks=True,
                        previous_secret_until=datetime.now(UTC) + timedelta(hours=1)),
            {"signing_secret": new, "previous_signing_secret": old},
        )  # fmt: skip
        await running.claim_round()
        (seq,) = await _ingest(pool, account, campaign, [{"email": "a@example.com"}])
        await eventually(lambda: endpoint.seen)
        seen = endpoint.seen[0]
        headers = {k.lower(): v for k, v in seen.headers.items()}
        assert headers["webhook-id"] == message_id(connection, seq)
        assert len(headers["webhook-signature"].split(" ")) == 2  # both during the overlap
        for secret in (new, old):  # a receiver with either secret accepts it
            Webhook(secret).verify(seen.body, headers)
        with pytest.raises(Exception, match="signature"):
            Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(seen.body, headers)
        await eventually(lambda: _attempts(pool, connection))
        attempts = await _attempts(pool, connection)
        assert attempts[0]["outcome"] == "accepted"
        assert "webhook-signature" not in (attempts[0]["error"] or "")


async def test_oauth2_token_cached_and_refreshed_once_after_a_401(pool: asyncpg.Pool) -> None:
    account, campaign = await _account(pool)
    issued: list[str] = []
    valid: set[str] = set()

    async def api(request: web.Request) -> web.Response:
        if request.path == "/token":
            form = await request.post()
            assert form["grant_type"] == "client_credentials"
            assert (
                request.headers["Authorization"]
                == "Basic " + base64.b64encode(b"client-1:s3cret").decode()
            )
            token = f"tok-{len(issued)}"
            issued.append(token)
            valid.clear()
            valid.add(token)
            return web.json_response({"access_token": token, "expires_in": 3600})
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in valid:
            return web.Response(status=401)
        return web.json_response({})

    async with crm(api) as endpoint, supervisor(pool) as running:
        connection = await api_connection(
            pool, account,
            ApiSettings(url=f"{endpoint.url}/leads", body_template=TEMPLATE, auth="oauth2",
                        token_url=f"{endpoint.url}/token", client_id="client-1", concurrency=1),
            {"client_secret": "s3cret"},
        )  # fmt: skip
        await running.claim_round()
        await _ingest(
            pool, account, campaign, [{"email": "a@example.com"}, {"email": "b@example.com"}]
        )
        await eventually(lambda: sum(s.path == "/leads" for s in endpoint.seen) >= 2)
        assert issued == ["tok-0"]  # cached across calls
        valid.clear()  # the API revokes the token
        await _ingest(pool, account, campaign, [{"email": "c@example.com"}])
        await eventually(lambda: len(issued) == 2)
        await asyncio.sleep(0.3)
        attempts = await _attempts(pool, connection)
        assert [a["outcome"] for a in attempts] == ["accepted"] * 3
        assert all("s3cret" not in str(dict(a)) for a in attempts)


async def test_a_self_signed_endpoint_is_refused_unless_its_ca_is_pinned(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    account, campaign = await _account(pool)
    async with crm(tls_dir=tmp_path) as endpoint, supervisor(pool) as running:
        refused = await api_connection(
            pool, account, ApiSettings(url=endpoint.url, body_template=TEMPLATE,
                                       retry_schedule_s=(60,)),
        )  # fmt: skip
        pinned = await api_connection(
            pool, account, ApiSettings(url=endpoint.url, body_template=TEMPLATE,
                                       ca_pem=endpoint.ca_pem),
        )  # fmt: skip
        await running.claim_round()
        await _ingest(pool, account, campaign, [{"email": "a@example.com"}])
        await eventually(lambda: endpoint.seen)

        async def both() -> bool:
            return (
                len(await _attempts(pool, refused)) == 1 and len(await _attempts(pool, pinned)) == 1
            )

        await eventually(both)
        (failed,) = await _attempts(pool, refused)
        assert failed["outcome"] == "retry"
        assert "TLS" in failed["error"]
        (ok,) = await _attempts(pool, pinned)
        assert ok["outcome"] == "accepted"


async def test_scope_campaigns_and_a_filter(pool: asyncpg.Pool) -> None:
    account, campaign = await _account(pool)
    other = uuid.uuid4()
    await pool.execute(
        "INSERT INTO campaigns (id, account_id, name) VALUES ($1, $2, 'Other')", other, account
    )
    async with crm() as endpoint, supervisor(pool) as running:
        await api_connection(
            pool, account,
            ApiSettings(url=endpoint.url, body_template=TEMPLATE, campaign_ids=(str(campaign),),
                        filters=(FieldFilter("country", ("GB", "IE")),)),
        )  # fmt: skip
        await running.claim_round()
        await _ingest(pool, account, other, [{"email": "other@example.com"}])
        await _ingest(pool, account, campaign, [
            {"email": "fr@example.com", "country": "FR"}, {"email": "gb@example.com"},
        ])  # fmt: skip
        await eventually(lambda: endpoint.seen)
        await asyncio.sleep(0.3)
        assert [b["email"] for b in endpoint.bodies()] == ["gb@example.com"]


async def test_egress_policy_refuses_loopback_unless_allowed(pool: asyncpg.Pool) -> None:
    from services.common.egress import EgressPolicy
    from services.delivery.transports.http.client import ApiClient

    async with crm() as endpoint:
        client = ApiClient(ApiSettings(url=endpoint.url), {}, EgressPolicy())
        exchange = await client.call("msg", b"{}", "application/json")
        await client.close()
        assert exchange.diagnosis is not None
        assert exchange.diagnosis.value == "egress"
        assert "loopback" in exchange.error
        named = ApiClient(
            replace(ApiSettings(url=endpoint.url.replace("127.0.0.1", "localhost"))), {},
            EgressPolicy(),
        )  # fmt: skip
        exchange = await named.call("msg", b"{}", "application/json")
        await named.close()
        assert exchange.diagnosis is not None
        assert exchange.diagnosis.value == "egress"
        assert not endpoint.seen


async def test_xml_and_form_bodies_and_get_query_strings(pool: asyncpg.Pool) -> None:
    account, campaign = await _account(pool)
    async with crm() as endpoint, supervisor(pool) as running:
        await api_connection(
            pool, account,
            ApiSettings(url=f"{endpoint.url}/xml", encoding=Encoding.XML,
                        body_template="<lead><email>{{email}}</email>"
                                      "<n a='{{first_name}}'/></lead>"),
        )  # fmt: skip
        await api_connection(
            pool, account,
            ApiSettings(url=f"{endpoint.url}/form", encoding=Encoding.FORM,
                        body_template='[["email", "{{email}}"], ["src", "handoff"]]'),
        )  # fmt: skip
        await api_connection(
            pool, account,
            ApiSettings(url=f"{endpoint.url}/get?list=7", method="GET", auth="api_key",
                        api_key_name="key", api_key_in="query",
                        body_template='{"email": "{{email}}"}'),
            {"api_key": "k-123"},
        )  # fmt: skip
        await running.claim_round()
        await _ingest(
            pool, account, campaign, [{"email": "a&b<c>@example.com", "first_name": "'q\""}]
        )
        await eventually(lambda: len(endpoint.seen) >= 3)
        by_path = {s.path: s for s in endpoint.seen}
        xml = by_path["/xml"].body.decode()
        assert "<email>a&amp;b&lt;c&gt;@example.com</email>" in xml
        assert by_path["/xml"].headers["Content-Type"].startswith("application/xml")
        assert by_path["/form"].body == b"email=a%26b%3Cc%3E%40example.com&src=handoff"
        assert by_path["/get"].query == {"list": "7", "email": "a&b<c>@example.com", "key": "k-123"}
        assert by_path["/get"].body == b""
        recorded = await pool.fetch("SELECT error, response_head FROM live_attempts")
        assert all("k-123" not in str(dict(r)) for r in recorded)


async def test_the_attempt_log_keeps_days_in_partitions_and_counts_what_it_drops(
    pool: asyncpg.Pool,
) -> None:
    from services.delivery.live.store import ATTEMPT_COLUMNS, LiveStorePg

    account, _ = await _account(pool)
    connection = await api_connection(pool, account, ApiSettings(url="https://example.com"))
    now = datetime.now(UTC)
    rows = [
        (now - timedelta(days=age), connection, account, i, 1, 200, 1.0, outcome, "r", None, None)
        for i, (age, outcome) in enumerate(
            [(40, "accepted"), (40, "accepted"), (40, "retry"), (31, "accepted"), (0, "accepted")]
        )
    ]
    async with pool.acquire() as conn:
        await conn.copy_records_to_table("live_attempts", records=rows, columns=ATTEMPT_COLUMNS)
    store = LiveStorePg(pool)
    assert await store.maintain(30) == 0  # all in the default partition so far
    partitions = await pool.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'live_attempts'::regclass ORDER BY 1"
    )
    names = [r["relname"] for r in partitions]
    assert len(names) == 5  # today and 3 days ahead, and the default
    assert names[-1] == "live_attempts_default"
    today = f"live_attempts_{now:%Y%m%d}"
    assert await pool.fetchval(f'SELECT count(*) FROM "{today}"') == 1  # moved in
    assert await pool.fetchval("SELECT count(*) FROM live_attempts") == 1
    days = await pool.fetch(
        "SELECT day, outcome, attempts FROM live_attempt_days ORDER BY day, outcome"
    )
    assert [(r["outcome"], r["attempts"]) for r in days] == [
        ("accepted", 2), ("retry", 1), ("accepted", 1),
    ]  # fmt: skip
    assert await store.maintain(30) == 0  # idempotent
    assert await pool.fetchval("SELECT sum(attempts) FROM live_attempt_days") == 4


async def test_a_slow_endpoint_times_out_and_is_retried_with_the_same_key(
    pool: asyncpg.Pool,
) -> None:
    account, campaign = await _account(pool)
    calls = {"n": 0}

    async def slow_once(request: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            await asyncio.sleep(1.0)  # past the connection's 0.2 s timeout
        return web.json_response({})

    async with crm(slow_once) as endpoint, supervisor(pool) as running:
        connection = await api_connection(
            pool, account,
            ApiSettings(url=endpoint.url, body_template=TEMPLATE, timeout_s=0.2,
                        retry_schedule_s=(0.05,)),
        )  # fmt: skip
        await running.claim_round()
        (seq,) = await _ingest(pool, account, campaign, [{"email": "a@example.com"}])

        async def two() -> bool:
            return len(await _attempts(pool, connection)) == 2

        await eventually(two)
        first, second = await _attempts(pool, connection)
        assert (first["outcome"], first["status"]) == ("retry", None)
        assert "no answer within 0.2 s" in first["error"]
        assert second["outcome"] == "accepted"
        keys = {s.headers["webhook-id"] for s in endpoint.seen}
        assert keys == {message_id(connection, seq)}


async def test_strict_order_holds_later_referrals_behind_a_retry(pool: asyncpg.Pool) -> None:
    account, campaign = await _account(pool)
    calls: dict[str, int] = {}

    async def first_fails_twice(request: web.Request) -> web.Response:
        email = (await request.json())["email"]
        calls[email] = calls.get(email, 0) + 1
        if email.startswith("first") and calls[email] <= 2:
            return web.Response(status=503)
        return web.json_response({})

    async with crm(first_fails_twice) as endpoint, supervisor(pool) as running:
        await api_connection(
            pool, account,
            ApiSettings(url=endpoint.url, body_template=TEMPLATE, strict_order=True,
                        retry_schedule_s=(0.2, 0.2)),
        )  # fmt: skip
        await running.claim_round()
        await _ingest(pool, account, campaign, [{"email": "first@example.com"}])
        await eventually(lambda: endpoint.seen)
        await _ingest(pool, account, campaign, [{"email": "second@example.com"},
                                                {"email": "third@example.com"}])  # fmt: skip
        await eventually(lambda: len(endpoint.seen) >= 5)
        order = [s.json()["email"] for s in endpoint.seen]
        assert order == ["first@example.com"] * 3 + ["second@example.com", "third@example.com"]

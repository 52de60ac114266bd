"""The export API's referral routes over HTTP: the streamed export (filters, formats,
gzip, resume, audit) and browsing, against the real PostgreSQL and a real aiohttp server."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import pytest
from multidict import CIMultiDict

from services.common.db import create_pool
from services.common.layouts.codec import custom_field_to_json, layout_to_json
from services.common.layouts.compiler import compile_layout
from services.common.layouts.defaults import DEFAULT_LAYOUT
from services.common.layouts.model import (
    CaseMode,
    CaseStep,
    Column,
    CustomFieldSpec,
    LayoutSpec,
)
from services.common.layouts.render import render_columns
from services.common.paging import encode_token
from services.common.referral_rows import ReferralRowReader
from services.export.audit import AuditLog
from services.export.audit_routes import AuditRoutes
from services.export.health_routes import Readiness
from services.export.http_app import create_app, serve_http
from services.export.referral_routes import ReferralRoutes
from services.export.referral_store import ReferralReads
from services.export.store import ExportStore
from services.scheduler.layouts.store import LayoutStorePg
from tests.integration.credentials_support import account_token, authenticator
from tests.integration.layouts_support import create_account, insert_referrals

pytestmark = pytest.mark.integration

HEADER = ",".join(c.header for c in DEFAULT_LAYOUT.columns)


@dataclass
class Api:
    url: str
    pool: asyncpg.Pool
    account: UUID
    campaign: UUID
    token: str

    async def get(
        self, path: str, params: Any = None, headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> tuple[int, CIMultiDict[str], bytes]:  # fmt: skip
        sent = {
            "Authorization": f"Bearer {token or self.token}",
            "Accept-Encoding": "identity",
            **(headers or {}),
        }
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.get(self.url + path, params=params, headers=sent) as response,
        ):
            return response.status, response.headers.copy(), await response.read()

    async def insert(self, rows: list[dict[str, Any]], campaign: UUID | None = None) -> list[int]:
        """Store referrals and wait until the safe watermark covers them (another
        database's long transaction on a shared cluster holds it back for a while)."""
        seqs = await insert_referrals(self.pool, self.account, campaign or self.campaign, rows)
        await settled(self.pool)
        return seqs

    async def insert_many(self, count: int, *, ad_chars: int) -> None:
        """`count` referrals with long ad texts (enough to outlast socket buffers)."""
        await self.pool.execute(
            """INSERT INTO referrals (account_id, campaign_id, partner_referral_id, email,
                                      opted_in_at, ad_text)
               SELECT $1, $2, 'r' || g, 'u' || g || '@example.com', now(), repeat('x', $4)
                 FROM generate_series(1, $3) g""",
            self.account, self.campaign, count, ad_chars,
        )  # fmt: skip
        await settled(self.pool)

    async def export(self, params: Any = None, **kw: Any) -> tuple[int, CIMultiDict[str], bytes]:
        return await self.get("/v1/referrals/export", params, **kw)


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[Api]:
    async with create_pool(database_url, min_size=1, max_size=3) as pool:
        app = create_app(
            ExportStore(pool), Readiness(), authenticator(pool),
            expected_schema_version=1, health_timeout_s=2,
            referrals=ReferralRoutes(ReferralReads(pool), LayoutStorePg(pool), AuditLog(pool)),
            audit=AuditRoutes(AuditLog(pool)),
            rate_limit=None,  # the tests call faster than a token may
        )  # fmt: skip
        account, campaign = await create_account(pool, time_zone="Europe/London")
        token = await account_token(pool, str(account), "referrals:read", "config:read")
        async with serve_http(app, "127.0.0.1", 0, grace_s=0.5) as port:
            yield Api(f"http://127.0.0.1:{port}", pool, account, campaign, token)


async def settled(pool: asyncpg.Pool) -> None:
    """Wait until every referral stored so far is below the safe watermark."""
    newest = await pool.fetchval("SELECT coalesce(max(seq), 0) FROM referrals")
    for _ in range(1200):
        if await pool.fetchval("SELECT safe_referral_watermark()") >= newest:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the safe watermark did not reach the stored referrals")


def _rows(body: bytes) -> list[list[str]]:
    text = body.decode("utf-8")
    assert text.endswith("\r\n")
    return list(csv.reader(io.StringIO(text, newline="")))


def _problem(body: bytes) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(body)
    return found


async def test_an_export_streams_the_accounts_referrals_and_nothing_of_anothers(api: Api) -> None:
    seqs = await api.insert([{"first_name": f"n{i}", "email": f"u{i}@x.example"} for i in range(5)])
    other, other_campaign = await create_account(api.pool)
    await insert_referrals(api.pool, other, other_campaign, [{"first_name": "theirs"}])
    status, headers, body = await api.export()
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/csv")
    assert headers["Content-Disposition"] == 'attachment; filename="referrals-start-now.csv"'
    assert int(headers["Handoff-Through-Seq"]) >= seqs[-1]
    rows = _rows(body)
    assert ",".join(rows[0]) == HEADER
    assert [r[2] for r in rows[1:]] == [f"n{i}" for i in range(5)]
    assert [r[-1] for r in rows[1:]] == [str(s) for s in seqs]
    assert rows[1][15] == "Spring offer"  # campaign_name
    entry = (await AuditLog(api.pool).page(api.account, None, None, None, None, 10))[0]
    assert (entry.action, entry.outcome, entry.rows, entry.bytes) == (
        "export", "completed", 5, len(body),
    )  # fmt: skip
    assert entry.filters["through_seq"] == int(headers["Handoff-Through-Seq"])


async def test_filters_by_time_frame_campaign_and_seq(api: Api) -> None:
    second = uuid.uuid4()
    await api.pool.execute(
        "INSERT INTO campaigns (id, account_id, name) VALUES ($1, $2, 'Autumn')",
        second,
        api.account,
    )
    base = datetime(2026, 6, 1, 12, tzinfo=UTC)
    seqs = []
    for i in range(6):
        seqs += await insert_referrals(
            api.pool, api.account, api.campaign if i % 2 else second,
            [{"first_name": f"n{i}", "opted_in_at": base + timedelta(days=i)}],
        )  # fmt: skip
    await settled(api.pool)

    async def names(params: dict[str, str]) -> list[str]:
        status, _, body = await api.export(params)
        assert status == 200, body
        return [r[2] for r in _rows(body)[1:]]

    # 2026-06-02 00:00 in London is 2026-06-01 23:00 UTC: n1 (06-02 12:00) on, not n0.
    frame = {
        "by": "opted_in_at",
        "from": "2026-06-02",
        "to": "2026-06-04",
        "time_zone": "Europe/London",
    }
    assert await names(frame) == ["n1", "n2"]
    utc = {"by": "opted_in_at", "from": "2026-06-01T12:00:00Z", "to": "2026-06-01T12:00:01Z"}
    assert await names(utc) == ["n0"]
    assert await names({"campaign_id": str(second)}) == ["n0", "n2", "n4"]
    both = {"campaign_id": f"{second},{api.campaign}"}
    assert await names(both) == [f"n{i}" for i in range(6)]
    seq_range = {"after_seq": str(seqs[1]), "through_seq": str(seqs[3])}
    assert await names(seq_range) == ["n2", "n3"]
    now = datetime.now(UTC)
    received = {
        "from": (now - timedelta(hours=1)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
    }
    assert len(await names(received)) == 6


async def test_json_lines_and_gzip(api: Api) -> None:
    await api.insert([{"first_name": 'a "b", c'}])
    status, headers, body = await api.export({"format": "jsonl"})
    assert (status, headers["Content-Type"]) == (200, "application/x-ndjson")
    assert headers["Content-Disposition"].endswith('.jsonl"')
    (line,) = body.decode().splitlines()
    assert json.loads(line)["first_name"] == 'a "b", c'
    status, headers, body = await api.export({"format": "json"})
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert [r["first_name"] for r in json.loads(body)] == ['a "b", c']
    _, plain_headers, plain = await api.export()
    status, headers, packed = await api.export(headers={"Accept-Encoding": "gzip"})
    assert (status, headers["Content-Encoding"]) == (200, "gzip")
    assert gzip.decompress(packed) == plain
    assert "Content-Encoding" not in plain_headers


async def test_a_broken_download_resumes_at_its_offset(api: Api) -> None:
    await api.insert([{"first_name": f"n{i}"} for i in range(50)])
    status, headers, whole = await api.export()
    through = headers["Handoff-Through-Seq"]
    # More referrals arrive; the pinned export stays the same.
    await api.insert([{"first_name": "later"}])
    cut = len(whole) // 3
    status, resumed_headers, rest = await api.export(
        {"through_seq": through, "offset": str(cut)}, headers={"If-Match": headers["ETag"]}
    )
    assert status == 200, rest
    assert resumed_headers["Handoff-Offset"] == str(cut)
    assert whole[:cut] + rest == whole
    status, _, body = await api.export({"offset": "10"})
    assert status == 400
    assert [p["name"] for p in _problem(body)["invalid_params"]] == ["offset"]
    status, _, body = await api.export({"through_seq": through}, headers={"If-Match": '"other"'})
    assert status == 412, body


async def test_a_custom_field_layout_renders_through_python(api: Api) -> None:
    layout = layout_to_json(LayoutSpec(columns=(Column("Name", "shout"), Column("Seq", "seq"))))
    shout = custom_field_to_json(
        CustomFieldSpec("shout", "first_name", (CaseStep(CaseMode.UPPER),))
    )
    field_id, layout_id = uuid.uuid4(), uuid.uuid4()
    await api.pool.execute(
        "INSERT INTO custom_fields (id, account_id, name, definition) VALUES ($1, $2, 'shout', $3)",
        field_id, api.account, shout,
    )  # fmt: skip
    await api.pool.execute(
        "INSERT INTO layouts (id, account_id, name, definition) VALUES ($1, $2, 'mine', $3)",
        layout_id, api.account, layout,
    )  # fmt: skip
    (seq,) = await api.insert([{"first_name": "ada"}])
    status, _, body = await api.export({"layout_id": str(layout_id)})
    assert status == 200, body
    assert body.decode() == f"Name,Seq\r\nADA,{seq}\r\n"


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"from": "2026-02-01", "to": "2026-01-01"}, ["from"]),
        ({"time_zone": "Mars/Olympus"}, ["time_zone"]),
        ({"time_zone": "../../etc/passwd"}, ["time_zone"]),
        ({"from": "yesterday"}, ["from"]),
        ({"by": "created_at"}, ["by"]),
        ({"format": "xlsx"}, ["format"]),
        ({"campaign_id": "1' OR '1'='1"}, ["campaign_id"]),
        ({"after_seq": "-1"}, ["after_seq"]),
        ({"after_seq": "9" * 30}, ["after_seq"]),
        ({"after_seq": "5", "through_seq": "4"}, ["through_seq"]),
        ({"layout_id": "x; DROP TABLE referrals"}, ["layout_id"]),
        ({"form": "2026-01-01"}, ["form"]),
        ({"from": "2026-01-01", "to": "2025-01-01", "format": "?"}, ["from", "format"]),
    ],
)
async def test_bad_parameters_are_named(api: Api, params: dict[str, str], names: list[str]) -> None:
    status, headers, body = await api.export(params)
    assert status == 400, body
    assert headers["Content-Type"].startswith("application/problem+json")
    assert [p["name"] for p in _problem(body)["invalid_params"]] == names


async def test_another_accounts_ids_are_not_found(api: Api) -> None:
    other, other_campaign = await create_account(api.pool)
    status, _, body = await api.export({"campaign_id": str(other_campaign)})
    assert status == 404, body
    assert "campaign_id" in _problem(body)["detail"]
    status, _, body = await api.export({"layout_id": str(uuid.uuid4())})
    assert status == 404, body
    assert "layout_id" in _problem(body)["detail"]
    (seq,) = await insert_referrals(api.pool, other, other_campaign, [{}])
    status, _, _ = await api.get(f"/v1/referrals/{seq}")
    assert status == 404


async def test_scopes_are_enforced(api: Api) -> None:
    token = await account_token(api.pool, str(api.account), "deliveries:read")
    for path in ("/v1/referrals/export", "/v1/referrals", "/v1/referrals/1"):
        status, _, _ = await api.get(path, token=token)
        assert status == 403, path


async def test_browsing_pages_newest_first_and_stays_stable_while_referrals_arrive(
    api: Api,
) -> None:
    seqs = await api.insert([{"first_name": f"n{i}"} for i in range(7)])
    status, _, body = await api.get("/v1/referrals", {"page_size": "3"})
    assert status == 200, body
    page = json.loads(body)
    assert [r["seq"] for r in page["items"]] == seqs[::-1][:3]
    first = page["items"][0]
    assert (first["first_name"], first["campaign_name"]) == ("n6", "Spring offer")
    assert first["opted_in_at"] == "2024-07-01T12:30:00+00:00"
    assert first["ip_address"] == "203.0.113.7"
    assert first["account_id"] == str(api.account)
    seen = [r["seq"] for r in page["items"]]
    await api.insert([{"first_name": "new"}])
    while page["next_page_token"]:
        status, _, body = await api.get(
            "/v1/referrals", {"page_size": "3", "page_token": page["next_page_token"]}
        )
        page = json.loads(body)
        seen += [r["seq"] for r in page["items"]]
    assert seen == seqs[::-1]  # no new referral, no gap, no repeat
    status, _, body = await api.get(f"/v1/referrals/{seqs[2]}")
    assert (status, json.loads(body)["first_name"]) == (200, "n2")


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"page_size": "100000"}, "page_size"),
        ({"page_size": "0"}, "page_size"),
        ({"page_token": "not a token!"}, "page_token"),
        ({"page_token": "bm9wZQ=="}, "page_token"),
        ({"page_token": encode_token(f"1:{10**30}")}, "page_token"),
        ({"page_token": encode_token("-5:3")}, "page_token"),
    ],
)
async def test_browsing_refuses_bad_paging(api: Api, params: dict[str, str], name: str) -> None:
    status, _, body = await api.get("/v1/referrals", params)
    assert status == 400, body
    problem = _problem(body)
    assert name in [p["name"] for p in problem.get("invalid_params", [])], problem


async def test_a_client_that_hangs_up_frees_the_connection(api: Api) -> None:
    await api.insert_many(20000, ad_chars=500)
    layout = layout_to_json(LayoutSpec(columns=(Column("ad", "ad_text"),)))
    layout_id = uuid.uuid4()
    await api.pool.execute(
        "INSERT INTO layouts (id, account_id, name, definition) VALUES ($1, $2, 'ads', $3)",
        layout_id, api.account, layout,
    )  # fmt: skip
    async with aiohttp.ClientSession() as session:
        response = await session.get(
            api.url + "/v1/referrals/export", params={"layout_id": str(layout_id)},
            headers={"Authorization": f"Bearer {api.token}"},
        )  # fmt: skip
        await response.content.readexactly(64 * 1024)
        response.close()  # hang up mid-stream
    for _ in range(100):
        entries = await AuditLog(api.pool).page(api.account, None, None, None, None, 1)
        if entries and entries[0].outcome != "streaming":
            break
        await asyncio.sleep(0.05)
    assert entries[0].outcome == "aborted"
    assert 0 < (entries[0].bytes or 0) < 20000 * 500
    # Every pooled connection is back and idle: the COPY was cancelled, not left running.
    status, _, _ = await api.get("/v1/referrals", {"page_size": "1"})
    assert status == 200
    active = await api.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND state = 'active' AND query LIKE 'COPY%'"
    )
    assert active == 0


async def test_the_audit_log_says_who_exported_what(api: Api) -> None:
    await api.insert([{"first_name": "a"}, {"first_name": "b"}])
    await api.export({"format": "jsonl"})
    _, _, body = await api.export({"from": "2020-01-01", "time_zone": "Europe/Paris"})
    status, _, listing = await api.get("/v1/audit", {"page_size": "1"})
    assert status == 200, listing
    page = json.loads(listing)
    (newest,) = page["items"]
    me = json.loads((await api.get("/v1/me"))[2])
    assert newest["credential_id"] == me["credential_id"]
    assert (newest["action"], newest["outcome"], newest["rows"]) == ("export", "completed", 2)
    assert newest["bytes"] == len(body)
    assert newest["filters"]["from"] == "2019-12-31T23:00:00+00:00"
    status, _, listing = await api.get(
        "/v1/audit", {"page_size": "1", "page_token": page["next_page_token"]}
    )
    (older,) = json.loads(listing)["items"]
    assert older["filters"]["format"] == "jsonl"
    other, _ = await create_account(api.pool)
    theirs = await account_token(api.pool, str(other), "config:read")
    status, _, listing = await api.get("/v1/audit", token=theirs)
    assert (status, json.loads(listing)["items"]) == (200, [])
    status, _, body = await api.get("/v1/audit", {"action": "steal"})
    assert status == 400
    assert [p["name"] for p in _problem(body)["invalid_params"]] == ["action"]


INJECTIONS = (
    "' OR '1'='1",
    "1; DROP TABLE referrals; --",
    "<script>alert(1)</script>",
    "../../../../etc/passwd",
    "%00",
    "\u202e\u0000",
    "${jndi:ldap://x/a}",
    "9" * 300,
)
ROUTE_PARAMS = {
    "/v1/referrals/export": (
        "from", "to", "time_zone", "by", "campaign_id", "after_seq", "through_seq",
        "offset", "layout_id", "format",
    ),
    "/v1/referrals": (
        "from", "to", "time_zone", "by", "campaign_id", "partner_referral_id",
        "page_size", "page_token",
    ),
    "/v1/audit": ("action", "from", "to", "time_zone", "page_size", "page_token"),
}  # fmt: skip


async def test_injection_attempts_in_every_parameter_are_refused_or_harmless(api: Api) -> None:
    (mine,) = await api.insert([{"first_name": "mine"}])
    other, other_campaign = await create_account(api.pool)
    await insert_referrals(api.pool, other, other_campaign, [{"first_name": "theirs"}])
    await settled(api.pool)
    for path, names in ROUTE_PARAMS.items():
        for name in names:
            for attempt in INJECTIONS:
                status, headers, body = await api.get(path, {name: attempt})
                assert status in (200, 400), (path, name, attempt, status, body[:300])
                assert b"theirs" not in body, (path, name, attempt)
                if status == 400:
                    assert headers["Content-Type"].startswith("application/problem+json")
                    named = [p["name"] for p in _problem(body)["invalid_params"]]
                    assert name in named, (path, name, attempt, named)
    assert await api.pool.fetchval("SELECT count(*) FROM referrals") == 2
    assert mine


async def test_a_database_failure_mid_stream_cuts_the_transfer_short(api: Api) -> None:
    await api.insert_many(20000, ad_chars=500)
    async with aiohttp.ClientSession() as session:
        response = await session.get(
            api.url + "/v1/referrals/export",
            headers={"Authorization": f"Bearer {api.token}", "Accept-Encoding": "identity"},
        )
        assert response.status == 200
        await response.content.readexactly(64 * 1024)
        # The COPY's backend dies while the client still reads.
        await api.pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'COPY%'"
        )
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    for _ in range(100):
        entries = await AuditLog(api.pool).page(api.account, None, None, None, None, 1)
        if entries[0].outcome != "streaming":
            break
        await asyncio.sleep(0.05)
    assert entries[0].outcome == "failed"


async def test_the_default_layout_export_is_the_python_renderers_bytes(api: Api) -> None:
    tricky = ["=SUM(A1)", "+1", "-1", "@x", "a,b", 'say "hi"', "two\nlines", "cr\r", "\\N", ""]
    await api.insert([{"first_name": v, "city": v[::-1]} for v in tricky])
    status, headers, body = await api.export()
    assert status == 200, body
    # Rendered here by the Python renderer over the same pinned range.
    reader = ReferralRowReader(api.pool)
    context = await reader.render_context(api.account)
    assert context is not None
    layout = compile_layout(DEFAULT_LAYOUT, {}, context)
    rows = reader.rows_in_range(
        api.account, 0, int(headers["Handoff-Through-Seq"]), fields=layout.row_fields
    )
    expected = b"".join([c async for c in render_columns(layout, rows, DEFAULT_LAYOUT.format)])
    assert body == expected
    entry = (await AuditLog(api.pool).page(api.account, None, None, None, None, 1))[0]
    assert (entry.rows, entry.bytes) == (len(tricky), len(body))

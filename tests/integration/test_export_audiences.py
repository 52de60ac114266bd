"""Custom audiences over the export API, against real PostgreSQL and a real server:
emails stored only as hashes, hashed input kept as given, per-line errors, the streamed
upload (gzip, BOM, line ends, header row), duplicates, replace and append, all or nothing,
the 1,000-people rule for include audiences, accounts kept apart, scopes and limits."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import aiohttp
import asyncpg
import pytest

from services.common.audiences.model import Audience, require_usable
from services.common.errors import FailedPreconditionError
from tests.integration.credentials_support import account_token
from tests.integration.export_support import export_app, served_export
from tests.integration.layouts_support import create_account

pytestmark = pytest.mark.integration

ANN_SHA256 = hashlib.sha256(b"ann@example.com").digest()
ANN_MD5 = hashlib.md5(b"ann@example.com").digest()


class Api:
    """One account's client of the export API."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.session, self.url = session, url
        self.headers = {"Authorization": f"Bearer {token}"}

    async def create(self, name: str = "customers", kind: str = "exclude") -> str:
        async with self.session.post(
            f"{self.url}/v1/audiences", json={"name": name, "kind": kind}, headers=self.headers
        ) as answer:
            assert answer.status == 201, await answer.text()
            body = await answer.json()
            assert answer.headers["Location"] == f"/v1/audiences/{body['id']}"
            return str(body["id"])

    async def upload(
        self,
        audience: str,
        body: bytes,
        *,
        mode: str = "append",
        content_type: str = "text/csv",
        headers: dict[str, str] | None = None,
        status: int = 200,
    ) -> dict[str, Any]:
        async with self.session.put(
            f"{self.url}/v1/audiences/{audience}/members",
            params={"mode": mode},
            data=body,
            headers={**self.headers, "Content-Type": content_type, **(headers or {})},
        ) as answer:
            assert answer.status == status, await answer.text()
            found: dict[str, Any] = await answer.json(content_type=None)
            return found

    async def get(self, path: str, status: int = 200) -> dict[str, Any]:
        async with self.session.get(f"{self.url}{path}", headers=self.headers) as answer:
            assert answer.status == status, await answer.text()
            found: dict[str, Any] = await answer.json(content_type=None)
            return found


@pytest.fixture
async def served(pool: asyncpg.Pool) -> AsyncIterator[str]:
    async with served_export(export_app(pool, audience_max_bytes=4 * 2**20)) as url:
        yield url


async def _api(pool: asyncpg.Pool, url: str, *scopes: str) -> tuple[Api, UUID]:
    account, _ = await create_account(pool)
    token = await account_token(pool, str(account), *(scopes or ("config:read", "config:write")))
    return Api(aiohttp.ClientSession(), url, token), account


@pytest.fixture
async def api(pool: asyncpg.Pool, served: str) -> AsyncIterator[Api]:
    client, _ = await _api(pool, served)
    try:
        yield client
    finally:
        await client.session.close()


async def _members(pool: asyncpg.Pool, audience: str) -> set[tuple[str, bytes]]:
    rows = await pool.fetch(
        "SELECT hash_kind, hash FROM audience_members WHERE audience_id = $1", UUID(audience)
    )
    return {(r["hash_kind"], bytes(r["hash"])) for r in rows}


def _emails(count: int, start: int = 0) -> bytes:
    return "".join(f"person{i}@example.com\n" for i in range(start, start + count)).encode()


async def test_plain_emails_are_stored_only_as_their_sha256_and_md5(
    pool: asyncpg.Pool, api: Api
) -> None:
    audience = await api.create()

    result = await api.upload(audience, b"  Ann@Example.COM \n", content_type="text/plain")

    assert await _members(pool, audience) == {("sha256", ANN_SHA256), ("md5", ANN_MD5)}
    assert result["members"] == {"sha256": 1, "md5": 1}
    assert (result["lines"], result["accepted"], result["rejected"]) == (1, 1, 0)
    columns = await pool.fetch(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_name = 'audience_members'"
    )
    assert {c["column_name"]: c["data_type"] for c in columns} == {
        "audience_id": "uuid", "hash_kind": "text", "hash": "bytea",
    }  # fmt: skip
    # hash_kind, the only text column, holds only the two kind names.
    kinds = await pool.fetch("SELECT DISTINCT hash_kind FROM audience_members")
    assert {k["hash_kind"] for k in kinds} == {"sha256", "md5"}
    # Nowhere in the database, in any row of any table, is the email.
    tables = await pool.fetch(
        "SELECT quote_ident(table_name) AS t FROM information_schema.tables"
        " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    for table in tables:
        found = await pool.fetchval(
            f"SELECT count(*) FROM {table['t']} x WHERE lower(x::text) LIKE '%ann@example%'"
        )
        assert found == 0, table["t"]


async def test_hashed_input_keeps_its_kind_in_any_case(pool: asyncpg.Pool, api: Api) -> None:
    audience = await api.create()
    body = f"{ANN_SHA256.hex().upper()}\n{hashlib.md5(b'bob@example.com').hexdigest()}\n"

    result = await api.upload(audience, body.encode())

    assert await _members(pool, audience) == {
        ("sha256", ANN_SHA256), ("md5", hashlib.md5(b"bob@example.com").digest()),
    }  # fmt: skip
    assert result["members"] == {"sha256": 1, "md5": 1}
    # People are counted in the primary kind (sha256 when there is any).
    assert result["member_count"] == 1


async def test_each_bad_line_is_reported_with_its_number_and_the_rest_is_stored(
    pool: asyncpg.Pool, api: Api
) -> None:
    audience = await api.create()
    lines = [
        "ann@example.com", "", "not an email", "a" * 63, "g" * 64, "x" * 5000,
        "y" * 250 + "@example.com", b"\xff\xfe@example.com".decode("latin-1"), "bob@example.com",
    ]  # fmt: skip
    body = "\n".join(lines).encode("latin-1")

    result = await api.upload(audience, body, content_type="text/plain")

    assert [(e["line"], e["code"]) for e in result["errors"]] == [
        (2, "EMPTY"), (3, "NOT_AN_EMAIL"), (4, "BAD_HASH"), (5, "NOT_AN_EMAIL"),
        (6, "TOO_LONG"), (7, "TOO_LONG"), (8, "NOT_UTF8"),
    ]  # fmt: skip
    assert all(e["reason"] for e in result["errors"])
    assert (result["lines"], result["accepted"], result["rejected"]) == (9, 2, 7)
    assert result["members"] == {"sha256": 2, "md5": 2}


async def test_a_header_row_picks_its_column_and_is_not_counted(
    pool: asyncpg.Pool, api: Api
) -> None:
    audience = await api.create()
    body = f"name,SHA256\nann,{ANN_SHA256.hex()}\nbob,{'0' * 32}\n".encode()

    result = await api.upload(audience, body)

    assert result["header"] is True
    assert result["lines"] == 2
    assert [(e["line"], e["code"]) for e in result["errors"]] == [(3, "BAD_HASH")]
    assert await _members(pool, audience) == {("sha256", ANN_SHA256)}


@pytest.mark.parametrize("announced", [True, False], ids=["content-encoding", "magic-bytes"])
async def test_a_gzip_body_is_read_whether_announced_or_not(
    pool: asyncpg.Pool, api: Api, announced: bool
) -> None:
    audience = await api.create()
    headers = {"Content-Encoding": "gzip"} if announced else {}

    result = await api.upload(audience, gzip.compress(_emails(500)), headers=headers)

    assert (result["lines"], result["accepted"]) == (500, 500)
    assert result["members"] == {"sha256": 500, "md5": 500}


async def test_a_bom_and_crlf_or_cr_line_ends_are_read(pool: asyncpg.Pool, api: Api) -> None:
    audience = await api.create()
    body = b"\xef\xbb\xbfemail\r\nann@example.com\r\nbob@example.com\rcat@example.com\r\n"

    result = await api.upload(audience, body)

    assert result["header"] is True
    assert (result["lines"], result["accepted"], result["rejected"]) == (3, 3, 0)
    assert ("sha256", ANN_SHA256) in await _members(pool, audience)


async def test_duplicates_are_counted_once(pool: asyncpg.Pool, api: Api) -> None:
    audience = await api.create()
    body = f"ann@example.com\n ANN@example.com\n{ANN_SHA256.hex()}\nbob@example.com\n".encode()

    result = await api.upload(audience, body)

    assert (result["lines"], result["accepted"], result["duplicates"]) == (4, 2, 2)
    assert result["members"] == {"sha256": 2, "md5": 2}


async def test_replace_removes_members_not_in_the_file_and_append_keeps_them(
    pool: asyncpg.Pool, api: Api
) -> None:
    audience = await api.create()
    await api.upload(audience, _emails(10))

    appended = await api.upload(audience, _emails(5, start=8), mode="append")
    assert appended["members"] == {"sha256": 13, "md5": 13}

    replaced = await api.upload(audience, _emails(3, start=100), mode="replace")
    assert replaced["members"] == {"sha256": 3, "md5": 3}
    wanted = {hashlib.sha256(f"person{i}@example.com".encode()).digest() for i in (100, 101, 102)}
    assert {h for kind, h in await _members(pool, audience) if kind == "sha256"} == wanted
    shown = await api.get(f"/v1/audiences/{audience}")
    assert shown["members"] == {"sha256": 3, "md5": 3}
    assert shown["last_import_at"] is not None


async def test_a_body_cut_off_mid_stream_changes_nothing(
    pool: asyncpg.Pool, api: Api, served: str
) -> None:
    audience = await api.create()
    await api.upload(audience, _emails(10))
    before = await _members(pool, audience)
    body = _emails(20_000, start=1000)
    where = urlsplit(served)
    _, writer = await asyncio.open_connection(where.hostname, where.port)
    path = f"/v1/audiences/{audience}/members?mode=replace"
    writer.write(
        f"PUT {path} HTTP/1.1\r\nHost: x\r\n{'Authorization'}: {api.headers['Authorization']}"
        f"\r\nContent-Type: text/csv\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[: len(body) // 2]
    )
    await writer.drain()
    await asyncio.sleep(0.3)  # the server has staged part of it
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.5)

    assert await _members(pool, audience) == before
    shown = await api.get(f"/v1/audiences/{audience}")
    assert shown["members"] == {"sha256": 10, "md5": 10}
    # The connection's staging table was emptied: the next upload counts only its own.
    again = await api.upload(audience, _emails(2, start=50))
    assert (again["lines"], again["accepted"]) == (2, 2)


async def test_a_broken_chunked_body_is_refused_and_changes_nothing(
    pool: asyncpg.Pool, api: Api, served: str
) -> None:
    audience = await api.create()
    await api.upload(audience, _emails(10))
    before = await _members(pool, audience)
    part = _emails(1000, start=1000)
    where = urlsplit(served)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    writer.write(
        f"PUT /v1/audiences/{audience}/members?mode=replace HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: {api.headers['Authorization']}\r\nContent-Type: text/csv\r\n"
        f"Transfer-Encoding: chunked\r\n\r\n{len(part):x}\r\n".encode()
        + part
        + b"\r\nnot a chunk size\r\n"
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()

    # aiohttp's parser answers a malformed message itself (plain text, not a problem).
    assert answer.split(b" ", 2)[1] == b"400", answer[:200]
    assert await _members(pool, audience) == before


@pytest.mark.parametrize(("people", "state"), [(999, "too_small"), (1000, "ready")])
async def test_an_include_audience_below_1000_people_is_stored_but_refused(
    pool: asyncpg.Pool, api: Api, people: int, state: str
) -> None:
    audience = await api.create("buyers", "include")
    assert (await api.get(f"/v1/audiences/{audience}"))["state"] == "too_small"

    result = await api.upload(audience, _emails(people))

    assert result["state"] == state
    assert result["member_count"] == people
    shown = await api.get(f"/v1/audiences/{audience}")
    assert shown["state"] == state
    row = await pool.fetchrow("SELECT * FROM audiences WHERE id = $1", UUID(audience))
    stored = Audience(**{k: row[k] for k in row.keys() if k != "bloom"})  # noqa: SIM118 - a Record
    if state == "too_small":
        assert shown["state_reason"] == (
            "an include audience needs at least 1,000 people; this one has 999"
        )
        with pytest.raises(
            FailedPreconditionError, match="at least 1,000 people; this one has 999"
        ):
            require_usable(stored)
    else:
        assert shown["state_reason"] is None
        require_usable(stored)


async def test_an_exclude_audience_has_no_minimum(api: Api) -> None:
    audience = await api.create("opted out", "exclude")

    result = await api.upload(audience, _emails(3))

    assert (result["state"], result["state_reason"]) == ("ready", None)


async def test_create_list_delete_and_a_taken_name(pool: asyncpg.Pool, api: Api) -> None:
    first = await api.create("a")
    second = await api.create("b", "include")
    async with api.session.post(
        f"{api.url}/v1/audiences", json={"name": "a", "kind": "include"}, headers=api.headers
    ) as answer:
        assert answer.status == 409
        assert answer.content_type == "application/problem+json"

    page = await api.get("/v1/audiences?page_size=1")
    assert [a["id"] for a in page["items"]] == [second]
    rest = await api.get(f"/v1/audiences?page_size=1&page_token={page['next_page_token']}")
    assert [a["id"] for a in rest["items"]] == [first]
    assert rest["next_page_token"] == ""

    await api.upload(first, _emails(3))
    async with api.session.delete(f"{api.url}/v1/audiences/{first}", headers=api.headers) as gone:
        assert gone.status == 204
    await api.get(f"/v1/audiences/{first}", status=404)
    assert await _members(pool, first) == set()


async def test_bad_fields_and_unknown_parameters_are_named(api: Api) -> None:
    async with api.session.post(
        f"{api.url}/v1/audiences", json={"name": "", "kind": "both", "x": 1}, headers=api.headers
    ) as answer:
        assert answer.status == 400
        names = {p["name"] for p in (await answer.json(content_type=None))["invalid_params"]}
    assert names == {"name", "kind", "x"}
    audience = await api.create()
    refused = await api.upload(audience, b"ann@example.com\n", mode="overwrite", status=400)
    assert [p["name"] for p in refused["invalid_params"]] == ["mode"]


async def test_another_accounts_audience_is_not_found(
    pool: asyncpg.Pool, api: Api, served: str
) -> None:
    audience = await api.create()
    other, _ = await _api(pool, served)
    try:
        await other.get(f"/v1/audiences/{audience}", status=404)
        await other.upload(audience, b"ann@example.com\n", status=404)
        async with other.session.delete(
            f"{served}/v1/audiences/{audience}", headers=other.headers
        ) as answer:
            assert answer.status == 404
        assert (await other.get("/v1/audiences"))["items"] == []
    finally:
        await other.session.close()
    assert await _members(pool, audience) == set()


async def test_scopes_are_enforced(pool: asyncpg.Pool, api: Api, served: str) -> None:
    audience = await api.create()
    reader, _ = await _api(pool, served, "config:read")
    try:
        await reader.get("/v1/audiences")
        await reader.upload(audience, b"ann@example.com\n", status=403)
        async with reader.session.post(
            f"{served}/v1/audiences", json={"name": "x", "kind": "include"},
            headers=reader.headers,
        ) as answer:  # fmt: skip
            assert answer.status == 403
    finally:
        await reader.session.close()
    writer, _ = await _api(pool, served, "referrals:read")
    try:
        await writer.get("/v1/audiences", status=403)
    finally:
        await writer.session.close()
    async with aiohttp.ClientSession() as anonymous, anonymous.get(f"{served}/v1/audiences") as r:
        assert r.status == 401


async def test_a_body_over_the_limit_is_413_and_changes_nothing(
    pool: asyncpg.Pool, api: Api
) -> None:
    audience = await api.create()
    big = _emails(300_000)  # about 6.6 MB, over the test app's 4 MiB
    assert len(big) > 4 * 2**20

    told = await api.upload(audience, big, status=413)
    # A gzip bomb: small on the wire, over the limit once inflated.
    bomb = gzip.compress(b"ann@example.com\n" * (5 * 2**20 // 16))
    assert len(bomb) < 100_000
    inflated = await api.upload(audience, bomb, status=413)
    announced = await api.upload(audience, bomb, headers={"Content-Encoding": "gzip"}, status=413)

    assert told["status"] == inflated["status"] == announced["status"] == 413
    assert await _members(pool, audience) == set()


async def test_a_body_that_is_not_csv_or_text_is_415(api: Api) -> None:
    audience = await api.create()

    refused = await api.upload(audience, b"{}", content_type="application/json", status=415)
    latin = await api.upload(
        audience, b"x", content_type="text/csv; charset=iso-8859-1", status=415
    )

    assert refused["status"] == latin["status"] == 415

"""Pulled audiences over the export API, against real PostgreSQL, a real server and a
real SFTP server: created with a source on one of the account's connections (another
account's is not found, another kind or a too short interval is refused), shown with
their schedule and last pull, refreshed on request, and not uploaded to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import jsonschema
import pytest

from services.delivery.transports.http.settings import ApiSettings
from services.export.openapi import openapi_document
from tests.integration.audience_source_support import (
    Clock,
    asyncssh_connection,
    members,
    refresher,
    sftp_connection,
    sha256s,
)
from tests.integration.credentials_support import account_token
from tests.integration.export_support import export_app, served_export
from tests.integration.layouts_support import create_account
from tests.integration.live_support import api_connection
from tests.integration.sftp_servers import (
    AsyncsshSftp,
    asyncssh_sftp,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[AsyncsshSftp]:
    (tmp_path / "out").mkdir()
    async with asyncssh_sftp(tmp_path) as running:
        yield running


class Api:
    """One account's client of the export API."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.session, self.url = session, url
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(
        self, method: str, path: str, status: int, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        async with self.session.request(
            method, f"{self.url}{path}", json=body, headers=self.headers
        ) as answer:
            assert answer.status == status, await answer.text()
            found: dict[str, Any] = await answer.json(content_type=None)
            return found


async def _account(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, url: str
) -> tuple[UUID, Api]:
    account, _ = await create_account(pool)
    token = await account_token(pool, str(account), "config:read", "config:write")
    return account, Api(session, url, token)


def _documented(audience: dict[str, Any]) -> None:
    """The audience matches the OpenAPI document's Audience schema."""
    schema = {"$ref": "#/components/schemas/Audience", **openapi_document()}
    jsonschema.Draft202012Validator(schema).validate(audience)


def _folder_source(connection: UUID, **settings: Any) -> dict[str, Any]:
    return {
        "name": "suppress",
        "kind": "exclude",
        "source": "sftp_folder",
        "source_settings": {"connection_id": str(connection), "folder": "/out", **settings},
    }


async def test_a_pulled_audience_is_created_pulled_by_the_scheduler_and_shown(
    pool: asyncpg.Pool, server: AsyncsshSftp
) -> None:
    (server.root / "out" / "list.csv").write_text("email\nann@example.com\nbob@example.com\nnope\n")
    async with served_export(export_app(pool)) as url, aiohttp.ClientSession() as session:
        account, api = await _account(pool, session, url)
        connection = await asyncssh_connection(pool, account, server)
        made = await api.call(
            "POST", "/v1/audiences", 201,
            {**_folder_source(connection, pattern="*.csv"), "refresh_interval_s": 900},
        )  # fmt: skip
        assert made["source"] == "sftp_folder"
        assert made["source_settings"] == {
            "connection_id": str(connection), "folder": "/out", "pattern": "*.csv",
            "column": "auto", "format": "auto",
        }  # fmt: skip
        refresh = made["refresh"]
        assert refresh["interval_s"] == 900
        assert refresh["last_outcome"] is None
        assert refresh["last_refresh_at"] is None
        assert not refresh["running"]

        await refresher(pool, Clock()).tick()

        shown = await api.call("GET", f"/v1/audiences/{made['id']}", 200)
        assert shown["member_count"] == 2
        assert shown["members"] == {"sha256": 2, "md5": 2}
        outcome = shown["refresh"]["last_outcome"]
        assert outcome["ok"]
        assert outcome["accepted"] == 2
        assert outcome["rejected"] == 1
        assert [(f["name"], f["valid"], f["rejected"]) for f in outcome["files"]] == [
            ("list.csv", 2, 1)
        ]
        assert outcome["files"][0]["errors"] == [
            {"line": 4, "code": "NOT_AN_EMAIL", "reason": "not an email address"}
        ]
        assert shown["refresh"]["last_refresh_at"] is not None
        for document in (made, shown):
            _documented(document)
        listed = await api.call("GET", "/v1/audiences", 200)
        assert listed["items"][0]["refresh"]["last_outcome"]["ok"]
        assert await members(pool, UUID(made["id"])) == sha256s(
            ["ann@example.com", "bob@example.com"]
        )


async def test_refresh_makes_the_source_due_now_and_is_refused_for_an_upload_audience(
    pool: asyncpg.Pool, server: AsyncsshSftp
) -> None:
    (server.root / "out" / "a.txt").write_text("ann@example.com\n")
    async with served_export(export_app(pool)) as url, aiohttp.ClientSession() as session:
        account, api = await _account(pool, session, url)
        connection = await asyncssh_connection(pool, account, server)
        made = await api.call("POST", "/v1/audiences", 201, _folder_source(connection))
        clock = Clock()
        pulls = refresher(pool, clock)
        await pulls.tick()
        (server.root / "out" / "a.txt").write_text("ann@example.com\ncid@example.com\n")
        clock.advance(minutes=1)
        assert await pulls.tick() == []  # not due for an hour

        asked = await api.call("POST", f"/v1/audiences/{made['id']}/refresh", 202)
        assert datetime.fromisoformat(asked["refresh"]["next_refresh_at"]) <= clock.at
        [outcome] = await pulls.tick()
        assert outcome.ok
        assert outcome.member_count == 2

        upload = await api.call("POST", "/v1/audiences", 201, {"name": "up", "kind": "exclude"})
        assert upload["source"] == "upload"
        assert upload["refresh"] is None
        refused = await api.call("POST", f"/v1/audiences/{upload['id']}/refresh", 409)
        assert "only an audience pulled from a source" in refused["detail"]
        async with session.put(
            f"{url}/v1/audiences/{made['id']}/members", data=b"x@example.com\n",
            headers={**api.headers, "Content-Type": "text/plain"},
        ) as answer:  # fmt: skip
            assert answer.status == 409
            assert (
                "pulled from its sftp_folder source"
                in (await answer.json(content_type=None))["detail"]
            )
        await api.call("POST", "/v1/audiences/00000000-0000-4000-8000-000000000000/refresh", 404)


async def test_a_source_on_another_accounts_connection_another_kind_or_too_often_is_refused(
    pool: asyncpg.Pool,
) -> None:
    async with served_export(export_app(pool)) as url, aiohttp.ClientSession() as session:
        account, api = await _account(pool, session, url)
        other, _ = await _account(pool, session, url)
        theirs = await sftp_connection(
            pool, other, port=22, username="u", host_key="SHA256:" + "A" * 43
        )
        missing = await api.call("POST", "/v1/audiences", 404, _folder_source(theirs))
        assert str(theirs) in missing["detail"]

        crm = await api_connection(pool, account, ApiSettings(url="https://crm.example.com/leads"))
        wrong = await api.call("POST", "/v1/audiences", 400, _folder_source(crm))
        assert [(p["name"], p["reason"]) for p in wrong["invalid_params"]] == [
            ("source_settings.connection_id",
             f"connection {crm} is a api connection; a sftp_folder source reads through a sftp "
             "connection"),
        ]  # fmt: skip

        ours = await sftp_connection(
            pool, account, port=22, username="u", host_key="SHA256:" + "A" * 43
        )
        often = await api.call(
            "POST", "/v1/audiences", 400, {**_folder_source(ours), "refresh_interval_s": 60}
        )
        assert [(p["name"], p["code"]) for p in often["invalid_params"]] == [
            ("refresh_interval_s", "OUT_OF_RANGE")
        ]
        bad = await api.call(
            "POST", "/v1/audiences", 400,
            {**_folder_source(ours, pattern="in/*.csv", column="phone", mode="append")},
        )  # fmt: skip
        assert {p["name"] for p in bad["invalid_params"]} == {
            "source_settings.mode", "source_settings.pattern", "source_settings.column",
        }  # fmt: skip
        no_settings = await api.call(
            "POST", "/v1/audiences", 400, {"name": "n", "kind": "exclude", "source": "mailchimp"}
        )
        assert [p["name"] for p in no_settings["invalid_params"]] == ["source_settings"]
        upload_interval = await api.call(
            "POST", "/v1/audiences", 400,
            {"name": "n", "kind": "exclude", "refresh_interval_s": 3600},
        )  # fmt: skip
        assert [p["name"] for p in upload_interval["invalid_params"]] == ["refresh_interval_s"]
        # Nothing was made by the refusals.
        assert (await api.call("GET", "/v1/audiences", 200))["items"] == []

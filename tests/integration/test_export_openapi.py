"""The export API's OpenAPI document against the implementation: valid OpenAPI 3.1, every
mounted route documented and every documented route mounted, served at /openapi.json,
and schemathesis fuzzing every operation from it finds no server error and no response
that breaks the document."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from openapi_spec_validator import validate

from services.common.auth.http_access import OPEN_PATHS
from services.export.openapi import openapi_document
from tests.integration.credentials_support import account_token
from tests.integration.export_support import export_app, served_export
from tests.integration.layouts_support import create_account, insert_referrals

pytestmark = pytest.mark.integration

METHODS = ("get", "put", "post", "delete", "patch")


def _template(path: str) -> str:
    """aiohttp's `{seq:\\d+}` as OpenAPI writes it: `{seq}`."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    assert document["openapi"].startswith("3.1")
    validate(document)


async def test_every_mounted_route_is_documented_and_nothing_else(pool: asyncpg.Pool) -> None:
    app = export_app(pool)
    mounted = set()
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        info = route.resource.get_info()
        mounted.add((route.method.lower(), _template(str(info.get("path") or info["formatter"]))))
    documented = {
        (method, path)
        for path, item in openapi_document()["paths"].items()
        for method in METHODS
        if method in item
    }
    assert mounted == documented
    # Routes open without a credential say so in the document, and only they do.
    open_documented = {
        path
        for path, item in openapi_document()["paths"].items()
        for method in METHODS
        if method in item and item[method].get("security") == []
    }
    opened: frozenset[str] = app[OPEN_PATHS]
    assert open_documented == opened


async def test_every_route_behind_a_credential_documents_the_refusals(pool: asyncpg.Pool) -> None:
    for path, item in openapi_document()["paths"].items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None or operation.get("security") == []:
                continue
            assert {"401", "429", "503"} <= set(operation["responses"]), (method, path)


async def test_the_document_is_served(pool: asyncpg.Pool) -> None:
    async with (
        served_export(export_app(pool)) as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/openapi.json") as response,
    ):
        assert response.status == 200
        assert await response.json() == openapi_document()


async def test_schemathesis_finds_no_server_error_and_nothing_off_the_document(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    account, campaign = await create_account(pool, time_zone="Europe/London")
    await insert_referrals(pool, account, campaign, [{"first_name": f"n{i}"} for i in range(20)])
    token = await account_token(
        pool, str(account), "referrals:read", "config:read", "config:write", "deliveries:read"
    )
    async with served_export(export_app(pool)) as url:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
            "--checks", "all",
            # Valid-looking values the data makes wrong (a `from` after `to`, an id of
            # nothing) are refused by design; ids of nothing answer 404 by design.
            "--exclude-checks",
            "positive_data_acceptance,use_after_free,ensure_resource_availability",
            "--max-examples", os.environ.get("HANDOFF_SCHEMATHESIS_EXAMPLES", "40"),
            "--seed", "1", "--no-color", "--generation-database", "none",
            "--header", f"Authorization: Bearer {token}",
            "--report", "ndjson", "--report-dir", str(tmp_path),
            "--suppress-health-check", "all", "--workers", "1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-8000:]
    assert "operations" in text.lower(), text[-2000:]

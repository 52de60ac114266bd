"""The access rules as an independent gRPC client (grpc-js, protos loaded from protos/)
sees them: no credential, wrong scope, another account, the right caller."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.common.auth.model import Role
from tests.integration.access_support import serve_everything
from tests.integration.credentials_support import account_token, authenticator, service_token
from tests.integration.layouts_support import create_account

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
# CI sets HANDOFF_REQUIRE_INTEROP=1, so a failed `npm ci` fails the test instead of
# skipping it.
pytestmark = pytest.mark.skipif(
    not os.environ.get("HANDOFF_REQUIRE_INTEROP")
    and (shutil.which("node") is None or not (HERE / "node_modules").is_dir()),
    reason="needs node and `npm ci` in tests/interop (.ci/run does both)",
)
OK, NOT_FOUND, PERMISSION_DENIED, UNAUTHENTICATED = 0, 5, 7, 16


async def _run_client(plan: dict[str, Any]) -> list[dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        "node", str(HERE / "access_check.mjs"), cwd=HERE,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(json.dumps(plan).encode()), 60)
    assert proc.returncode == 0, err.decode()
    results: list[dict[str, Any]] = json.loads(out)
    return results


async def test_an_independent_client_sees_every_refusal_and_its_own_account(
    pool: asyncpg.Pool,
) -> None:
    mine = str((await create_account(pool))[0])
    other = str((await create_account(pool))[0])
    operator = await service_token(pool, Role.OPERATOR)
    config = await account_token(pool, mine, "config:read")
    accounts = "handoff.ingest.v1.AccountService"
    layouts = "handoff.scheduler.v1.LayoutService"
    calls = [
        (accounts, "ListAccounts", {}, None),
        (accounts, "ListAccounts", {}, config),
        (accounts, "ListAccounts", {}, operator),
        (accounts, "GetAccount", {"id": other}, config),
        (accounts, "GetAccount", {"id": str(uuid.uuid4())}, config),
        (accounts, "GetAccount", {"id": mine}, config),
        (layouts, "PreviewLayout", {"account_id": mine}, config),
        (layouts, "ListLayouts", {"account_id": mine}, config),
    ]
    async with serve_everything(pool, authenticator(pool)) as server:
        results = await _run_client(
            {
                "target": f"127.0.0.1:{server.port}",
                "include": str(ROOT / "protos"),
                "protos": [
                    "handoff/ingest/v1/accounts.proto",
                    "handoff/scheduler/v1/layouts.proto",
                ],
                "calls": [
                    {"service": s, "method": m, "request": r, "token": t} for s, m, r, t in calls
                ],
            }
        )
    codes = [r["code"] for r in results]
    assert codes == [
        UNAUTHENTICATED, PERMISSION_DENIED, OK, NOT_FOUND, NOT_FOUND, OK, PERMISSION_DENIED, OK
    ]  # fmt: skip
    listed = [a["id"] for a in results[2]["reply"]["accounts"]]
    assert sorted(listed) == sorted([mine, other])
    assert results[5]["reply"]["id"] == mine
    assert results[3]["details"] == f"account {other} does not exist"
    assert "referrals:read" in results[6]["details"]

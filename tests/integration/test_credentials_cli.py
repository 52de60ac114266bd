"""python -m services.credentials makes a working first operator credential and revokes it."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
import pytest

from services.common.auth import tokens
from services.common.auth.store import CredentialStore

pytestmark = pytest.mark.integration


async def _cli(database_url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.credentials", *args,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_cli_prints_only_the_token_and_can_revoke_it(
    database_url: str, pool: asyncpg.Pool
) -> None:
    code, out, err = await _cli(database_url, "create", "--name", "ops", "--role", "operator")
    assert code == 0, err
    token = out.strip()
    parsed = tokens.parse(token)
    stored = await CredentialStore(pool).lookup(parsed.credential_id)
    assert stored is not None
    assert [r.value for r in stored.roles] == ["operator"]
    assert token not in err

    code, out, _ = await _cli(database_url, "revoke", str(parsed.credential_id))
    assert code == 0
    again = await CredentialStore(pool).lookup(parsed.credential_id)
    assert again is not None
    assert again.revoked_at is not None

    code, _, err = await _cli(
        database_url, "create", "--name", "x", "--role", "operator", "--ingest-account", "nope"
    )
    assert code == 1
    assert "INGEST" in err

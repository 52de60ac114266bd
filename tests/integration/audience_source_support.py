"""Audience-source test support: SFTP connections stored as the connection API stores
them (secrets sealed), pulled audiences, a refresher on a clock the test moves, and the
members an audience holds, read back from the database."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.common.audiences.sources import SftpFolderSettings, SourceReader, SourceSpec
from services.common.audiences.store import AudienceStorePg, PullStorePg
from services.common.secrets import connection_secret_context
from services.scheduler.audiences.readers import source_readers
from services.scheduler.audiences.refresher import AudienceRefresher
from services.scheduler.connections.model import SftpConfig
from tests.integration.access_support import LOOPBACK, TEST_BOX
from tests.integration.sftp_servers import SFTP_PASSWORD, SFTP_USER, AsyncsshSftp, fingerprint


async def sftp_connection(
    pool: asyncpg.Pool,
    account: uuid.UUID,
    *,
    port: int,
    username: str,
    host_key: str,
    password: str = "",
    private_key: str = "",
) -> uuid.UUID:
    """Store an SFTP connection (secrets sealed as the connection API seals them)."""
    cid = uuid.uuid4()
    secrets = {"password": password, "private_key": private_key}
    sealed = {
        n: TEST_BOX.seal(v, connection_secret_context(cid, n)) for n, v in secrets.items() if v
    }
    config = SftpConfig(host="127.0.0.1", port=port, username=username, host_key=host_key)
    await pool.execute(
        "INSERT INTO connections (id, account_id, name, kind, settings, secrets) "
        "VALUES ($1, $2, $3, 'sftp', $4, $5)",
        cid, account, f"sftp-{cid.hex[:6]}", config.to_json(), sealed,
    )  # fmt: skip
    return cid


async def asyncssh_connection(
    pool: asyncpg.Pool, account: uuid.UUID, server: AsyncsshSftp
) -> uuid.UUID:
    """An SFTP connection of the account to the test's asyncssh server (password login)."""
    return await sftp_connection(
        pool, account, port=server.port, username=SFTP_USER,
        host_key=fingerprint(server.host_key), password=SFTP_PASSWORD,
    )  # fmt: skip


async def pulled_audience(
    pool: asyncpg.Pool,
    account: uuid.UUID,
    connection: uuid.UUID,
    folder: str,
    *,
    pattern: str = "*",
    column: str = "auto",
    kind: str = "exclude",
    interval_s: int = 3600,
) -> uuid.UUID:
    """A new exclude audience pulled from `folder` of the connection (due at once)."""
    spec = SourceSpec(
        "sftp_folder", connection, SftpFolderSettings(folder, pattern, column), interval_s
    )
    made = await AudienceStorePg(pool).create(
        uuid.uuid4(), account, f"pulled-{uuid.uuid4().hex[:6]}", kind, pulled=spec
    )
    assert made is not None
    return made.id


@dataclass
class Clock:
    """Now, as the test says (starting a moment after the database's now)."""

    at: datetime = field(default_factory=lambda: datetime.now(UTC) + timedelta(seconds=1))

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        """Move on by a timedelta's worth."""
        self.at += timedelta(**delta)


def refresher(
    pool: asyncpg.Pool,
    clock: Clock,
    readers: Mapping[str, SourceReader] | None = None,
    **options: Any,
) -> AudienceRefresher:
    """A refresher as the scheduler runs one, on the test's clock and loopback egress."""
    return AudienceRefresher(
        PullStorePg(pool), AudienceStorePg(pool), TEST_BOX, LOOPBACK,
        readers if readers is not None else source_readers(), now=clock, **options,
    )  # fmt: skip


def sha256s(emails: Iterable[str]) -> set[bytes]:
    """The SHA-256 hashes of normalised emails."""
    return {hashlib.sha256(e.strip().lower().encode()).digest() for e in emails}


async def members(pool: asyncpg.Pool, audience: uuid.UUID, kind: str = "sha256") -> set[bytes]:
    """The audience's hashes of one kind, as stored."""
    rows = await pool.fetch(
        "SELECT hash FROM audience_members WHERE audience_id = $1 AND hash_kind = $2",
        audience, kind,
    )  # fmt: skip
    return {bytes(r["hash"]) for r in rows}


async def source_row(pool: asyncpg.Pool, audience: uuid.UUID) -> asyncpg.Record:
    """The audience's source row."""
    row = await pool.fetchrow("SELECT * FROM audience_sources WHERE audience_id = $1", audience)
    assert row is not None
    return row

"""The only code that runs SQL about credentials."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from services.common.auth.model import CredentialKind, Role
from services.common.db import driver_errors, load_queries

QUERIES = load_queries(Path(__file__).parent.parent / "sql" / "credentials.sql")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class StoredCredential:
    """A credential row: everything but the secret itself."""

    id: UUID
    kind: CredentialKind
    name: str
    secret_sha256: bytes
    account_id: UUID | None
    scopes: tuple[str, ...]
    roles: tuple[Role, ...]
    ingest_account_ids: tuple[UUID, ...] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    account_archived: bool = False


@dataclass(frozen=True, slots=True)
class NewCredential:
    """What creating a credential writes."""

    id: UUID
    kind: CredentialKind
    name: str
    secret_sha256: bytes
    account_id: UUID | None = None
    scopes: tuple[str, ...] = ()
    roles: tuple[Role, ...] = ()
    ingest_account_ids: tuple[UUID, ...] | None = None
    expires_at: datetime | None = None


def _credential(record: asyncpg.Record) -> StoredCredential:
    ingest = record["ingest_account_ids"]
    return StoredCredential(
        id=record["id"],
        kind=CredentialKind(record["kind"]),
        name=record["name"],
        secret_sha256=bytes(record["secret_sha256"]),
        account_id=record["account_id"],
        scopes=tuple(record["scopes"]),
        roles=tuple(Role(r) for r in record["roles"]),
        ingest_account_ids=None if ingest is None else tuple(ingest),
        created_at=record["created_at"],
        expires_at=record["expires_at"],
        revoked_at=record["revoked_at"],
        account_archived=bool(record["account_archived"]),
    )


class CredentialStore:
    """Credentials in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool | asyncpg.Connection) -> None:
        self._pool = pool

    async def _run(self, name: str, call: Callable[[], Awaitable[_T]]) -> _T:
        with driver_errors(name):
            return await call()

    async def _rows(self, name: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._run(
            name, lambda: self._pool.fetch(QUERIES[name], *args)
        )
        return rows

    async def lookup(self, credential_id: UUID) -> StoredCredential | None:
        """The credential with this id, with its account's state, or None."""
        rows = await self._rows("lookup", credential_id)
        return _credential(rows[0]) if rows else None

    async def insert(self, new: NewCredential) -> StoredCredential:
        """Store a new credential."""
        rows = await self._rows(
            "insert",
            new.id,
            new.kind.value,
            new.name,
            new.secret_sha256,
            new.account_id,
            list(new.scopes),
            [r.value for r in new.roles],
            None if new.ingest_account_ids is None else list(new.ingest_account_ids),
            new.expires_at,
        )
        return _credential(rows[0])

    async def list(
        self,
        account_id: UUID | None,
        include_revoked: bool,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[StoredCredential]:
        """Credentials in (created_at, id) order after `after`."""
        created, last = after if after is not None else (None, None)
        rows = await self._rows("list", account_id, include_revoked, limit, created, last)
        return [_credential(r) for r in rows]

    async def revoke(self, credential_id: UUID) -> StoredCredential | None:
        """Mark the credential revoked (once); None when it does not exist."""
        rows = await self._rows("revoke", credential_id)
        return _credential(rows[0]) if rows else None

    async def account_archived(self, account_id: UUID) -> bool | None:
        """Whether the account is archived; None when it does not exist."""
        rows = await self._rows("account_exists", account_id)
        return bool(rows[0]["archived"]) if rows else None

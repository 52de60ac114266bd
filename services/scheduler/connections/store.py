"""The only code that runs SQL about connections."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from services.common.audiences.targets import Targeting, look_up
from services.common.db import DatabaseError, driver_errors, load_queries
from services.common.layouts.model import CustomFieldSpec
from services.scheduler.connections.model import ConnectionConfig, SavedConnection, config_from_json
from services.scheduler.layouts.store import LayoutStorePg

QUERIES = load_queries(Path(__file__).parent / "sql" / "connections.sql")
_T = TypeVar("_T")


def _connection(record: asyncpg.Record) -> SavedConnection:
    return SavedConnection(
        id=record["id"],
        account_id=record["account_id"],
        name=record["name"],
        config=config_from_json(record["kind"], record["settings"]),
        sealed=dict(record["secrets"]),
        version=record["version"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        audience_ids=tuple(record["audience_ids"]),
    )


class ConnectionStorePg:
    """Connections in PostgreSQL."""

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

    async def custom_fields(self, account_id: UUID) -> dict[str, CustomFieldSpec]:
        """The account's custom fields by name (an API body template may name them)."""
        saved = await LayoutStorePg(self._pool).custom_fields(account_id)
        return {f.spec.name: f.spec for f in saved}

    async def account_exists(self, account_id: UUID) -> bool | None:
        """Whether the account is archived; None when it does not exist."""
        rows = await self._rows("account_state", account_id)
        return bool(rows[0]["archived"]) if rows else None

    async def insert(
        self,
        connection_id: UUID,
        account_id: UUID,
        name: str,
        config: ConnectionConfig,
        sealed: dict[str, str],
        audience_ids: Sequence[UUID] = (),
    ) -> SavedConnection | None:
        """Store a new connection; None when its id or name is taken."""
        rows = await self._rows(
            "insert",
            connection_id,
            account_id,
            name,
            config.to_json(),
            sealed,
            config.kind,
            list(audience_ids),
        )
        return _connection(rows[0]) if rows else None

    async def get(self, account_id: UUID, connection_id: UUID) -> SavedConnection | None:
        """The account's connection, or None."""
        rows = await self._rows("get", account_id, connection_id)
        return _connection(rows[0]) if rows else None

    async def page(self, account_id: UUID, after: str, limit: int) -> list[SavedConnection]:
        """Connections by name after `after`."""
        return [_connection(r) for r in await self._rows("page", account_id, after, limit)]

    async def update(
        self,
        account_id: UUID,
        connection_id: UUID,
        name: str,
        config: ConnectionConfig,
        sealed: dict[str, str],
        audience_ids: Sequence[UUID] = (),
    ) -> SavedConnection | None:
        """Replace the settings and secrets; None when the new name is taken."""
        try:
            with driver_errors("update"):
                rows = await self._pool.fetch(
                    QUERIES["update"], account_id, connection_id, name, config.to_json(),
                    sealed, config.kind, list(audience_ids),
                )  # fmt: skip
        except DatabaseError as exc:
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                return None
            raise
        return _connection(rows[0]) if rows else None

    async def owning_subscription(self, connection_id: UUID) -> UUID | None:
        """The active Zapier subscription that owns the connection, if any."""
        rows = await self._rows("owning_subscription", connection_id)
        return rows[0]["id"] if rows else None

    async def audience_targeting(self, account_id: UUID, ids: list[UUID]) -> Targeting:
        """The named audiences of the account, checked (services/common/audiences/targets.py)."""
        return await look_up(self._pool, account_id, ids, "connection.audience_ids")

    async def delete(self, account_id: UUID, connection_id: UUID) -> bool:
        """Delete; whether it existed."""
        status: str = await self._run(
            "delete", lambda: self._pool.execute(QUERIES["delete"], account_id, connection_id)
        )
        return status.endswith(" 1")

    async def tasks_using(self, connection_id: UUID) -> list[tuple[UUID, str]]:
        """(id, name) of the tasks that deliver over this connection."""
        return [(r["id"], r["name"]) for r in await self._rows("tasks_using", connection_id)]

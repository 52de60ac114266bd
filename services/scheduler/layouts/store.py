"""The only code of the layout service that runs SQL: custom fields, layouts, accounts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from services.common.db import DatabaseError, driver_errors, load_queries
from services.common.errors import AlreadyExistsError
from services.common.layouts.codec import (
    CodecError,
    custom_field_from_json,
    custom_field_to_json,
    layout_from_json,
    layout_to_json,
)
from services.common.layouts.model import CustomFieldSpec, LayoutSpec
from services.scheduler.layouts.model import (
    AccountInfo,
    FieldUsers,
    SavedCustomField,
    SavedLayout,
)

QUERIES = load_queries(Path(__file__).parents[1] / "sql" / "layouts.sql")


def _custom_field(record: asyncpg.Record) -> SavedCustomField:
    try:
        spec = custom_field_from_json(record["name"], record["description"], record["definition"])
    except CodecError as exc:
        raise DatabaseError(f"custom field {record['id']} is stored unreadably: {exc}") from exc
    return SavedCustomField(
        id=record["id"],
        account_id=record["account_id"],
        spec=spec,
        version=record["version"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
    )


def _layout(record: asyncpg.Record) -> SavedLayout:
    try:
        spec = layout_from_json(record["definition"])
    except (CodecError, KeyError, TypeError, ValueError) as exc:
        raise DatabaseError(f"layout {record['id']} is stored unreadably: {exc}") from exc
    return SavedLayout(
        id=record["id"],
        account_id=record["account_id"],
        name=record["name"],
        spec=spec,
        is_default=record["is_default"],
        version=record["version"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
    )


async def _fetch(
    runner: asyncpg.Pool | asyncpg.Connection, name: str, *args: Any
) -> list[asyncpg.Record]:
    with driver_errors(name):
        try:
            return list(await runner.fetch(QUERIES[name], *args))
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExistsError(f"already exists: {exc.detail or exc}") from exc


class DefinitionTransaction:
    """Definition reads and writes of one account inside one locked transaction."""

    def __init__(self, conn: asyncpg.Connection, account_id: UUID) -> None:
        self._conn = conn
        self._account = account_id

    async def custom_fields(self) -> list[SavedCustomField]:
        """Every custom field of the account, by name."""
        return [
            _custom_field(r) for r in await _fetch(self._conn, "all_custom_fields", self._account)
        ]

    async def insert_custom_field(
        self, field_id: UUID, spec: CustomFieldSpec, depends_on: Sequence[str]
    ) -> SavedCustomField | None:
        """Store a new field; None when the id is taken."""
        records = await _fetch(
            self._conn,
            "insert_custom_field",
            field_id,
            self._account,
            spec.name,
            spec.description,
            custom_field_to_json(spec),
            list(depends_on),
        )
        return _custom_field(records[0]) if records else None

    async def update_custom_field(
        self, field_id: UUID, spec: CustomFieldSpec, depends_on: Sequence[str]
    ) -> SavedCustomField | None:
        """Replace a field's definition; None when it does not exist."""
        records = await _fetch(
            self._conn,
            "update_custom_field",
            self._account,
            field_id,
            spec.description,
            custom_field_to_json(spec),
            list(depends_on),
        )
        return _custom_field(records[0]) if records else None

    async def delete_custom_field(self, field_id: UUID) -> bool:
        """Delete a field; False when it did not exist."""
        return bool(await _fetch(self._conn, "delete_custom_field", self._account, field_id))

    async def field_users(self, name: str) -> FieldUsers:
        """Layouts and custom fields that read the named field."""
        (record,) = await _fetch(self._conn, "custom_field_users", self._account, name)
        return FieldUsers(tuple(record["layouts"]), tuple(record["custom_fields"]))

    async def layout_tasks(self, layout_id: UUID) -> tuple[str, ...]:
        """Names of the tasks that deliver with the layout."""
        records = await _fetch(self._conn, "layout_tasks", self._account, layout_id)
        return tuple(r["name"] for r in records)

    async def get_layout(self, layout_id: UUID) -> SavedLayout | None:
        """The account's layout, or None."""
        records = await _fetch(self._conn, "get_layout", self._account, layout_id)
        return _layout(records[0]) if records else None

    async def layout_name_taken(self, name: str, other_than: UUID | None) -> bool:
        """True when another layout of the account has this name."""
        (record,) = await _fetch(self._conn, "layout_name_taken", self._account, name, other_than)
        return bool(record[0])

    async def _write_layout(
        self,
        query: str,
        layout_id: UUID,
        name: str,
        spec: LayoutSpec,
        is_default: bool,
        custom: Sequence[str],
    ) -> SavedLayout | None:
        if is_default:
            await _fetch(self._conn, "clear_default_layout", self._account, layout_id)
        args: tuple[Any, ...] = (layout_to_json(spec), list(custom), is_default)
        if query == "insert_layout":
            records = await _fetch(self._conn, query, layout_id, self._account, name, *args)
        else:
            records = await _fetch(self._conn, query, self._account, layout_id, name, *args)
        return _layout(records[0]) if records else None

    async def insert_layout(
        self, layout_id: UUID, name: str, spec: LayoutSpec, is_default: bool, custom: Sequence[str]
    ) -> SavedLayout | None:
        """Store a new layout (taking over the default when asked); None when the id is taken."""
        return await self._write_layout("insert_layout", layout_id, name, spec, is_default, custom)

    async def update_layout(
        self, layout_id: UUID, name: str, spec: LayoutSpec, is_default: bool, custom: Sequence[str]
    ) -> SavedLayout | None:
        """Replace a layout; None when it does not exist."""
        return await self._write_layout("update_layout", layout_id, name, spec, is_default, custom)

    async def delete_layout(self, layout_id: UUID) -> bool:
        """Delete a layout; False when it did not exist."""
        return bool(await _fetch(self._conn, "delete_layout", self._account, layout_id))


class LayoutStorePg:
    """Custom fields and layouts in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def definitions(self, account_id: UUID) -> AsyncIterator[DefinitionTransaction]:
        """A transaction holding the account's definitions lock (commits on success)."""
        with driver_errors("definitions"):
            async with self._pool.acquire() as conn, conn.transaction():
                await _fetch(conn, "lock_definitions", account_id)
                yield DefinitionTransaction(conn, account_id)

    async def account(self, account_id: UUID) -> AccountInfo | None:
        """The account's zone and status, or None."""
        records = await _fetch(self._pool, "get_account", account_id)
        if not records:
            return None
        record = records[0]
        return AccountInfo(record["id"], record["time_zone"], record["active"])

    async def custom_fields(self, account_id: UUID) -> list[SavedCustomField]:
        """Every custom field of the account, by name."""
        return [_custom_field(r) for r in await _fetch(self._pool, "all_custom_fields", account_id)]

    async def get_custom_field(self, account_id: UUID, field_id: UUID) -> SavedCustomField | None:
        """The account's custom field, or None."""
        records = await _fetch(self._pool, "get_custom_field", account_id, field_id)
        return _custom_field(records[0]) if records else None

    async def list_custom_fields(
        self, account_id: UUID, after_name: str, limit: int
    ) -> list[SavedCustomField]:
        """A page of the account's custom fields by name."""
        records = await _fetch(self._pool, "list_custom_fields", account_id, after_name, limit)
        return [_custom_field(r) for r in records]

    async def get_layout(self, account_id: UUID, layout_id: UUID) -> SavedLayout | None:
        """The account's layout, or None."""
        records = await _fetch(self._pool, "get_layout", account_id, layout_id)
        return _layout(records[0]) if records else None

    async def default_layout(self, account_id: UUID) -> SavedLayout | None:
        """The account's saved default layout, or None."""
        records = await _fetch(self._pool, "default_layout", account_id)
        return _layout(records[0]) if records else None

    async def list_layouts(
        self, account_id: UUID, after_name: str, limit: int
    ) -> list[SavedLayout]:
        """A page of the account's layouts by name."""
        records = await _fetch(self._pool, "list_layouts", account_id, after_name, limit)
        return [_layout(r) for r in records]

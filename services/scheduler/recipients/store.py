"""The only code that runs SQL about recipients."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from uuid import UUID

import asyncpg

from services.common.db import driver_errors, load_queries

QUERIES = load_queries(Path(__file__).parent / "sql" / "recipients.sql")


@dataclass(frozen=True)
class RecipientEvent:
    """One change of a recipient's state: to what, how, by whom, when."""

    state: str
    how: str  # link, operator, account
    actor: str
    at: datetime


@dataclass(frozen=True)
class Recipient:
    """A stored recipient with its history (oldest first)."""

    id: UUID
    connection_id: UUID
    account_id: UUID
    address: str
    state: str
    created_at: datetime
    changed_at: datetime
    history: tuple[RecipientEvent, ...] = ()


@dataclass(frozen=True)
class EmailConnectionRef:
    """What a confirmation names about the connection."""

    id: UUID
    kind: str
    name: str
    account_name: str


def _recipient(r: asyncpg.Record, history: tuple[RecipientEvent, ...] = ()) -> Recipient:
    return Recipient(
        r["id"], r["connection_id"], r["account_id"], r["address"], r["state"],
        r["created_at"], r["changed_at"], history,
    )  # fmt: skip


class RecipientStorePg:
    """Recipients and their events in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def connection(self, account_id: UUID, connection_id: UUID) -> EmailConnectionRef | None:
        """The account's connection (any kind), or None."""
        with driver_errors("email_connection"):
            r = await self._pool.fetchrow(QUERIES["email_connection"], account_id, connection_id)
        return (
            None
            if r is None
            else EmailConnectionRef(r["id"], r["kind"], r["name"], r["account_name"])
        )

    async def find(self, connection_id: UUID, address: str) -> Recipient | None:
        """The recipient of that address, or None."""
        with driver_errors("find"):
            r = await self._pool.fetchrow(QUERIES["find"], connection_id, address)
        return None if r is None else await self._with_history(r)

    async def get(self, connection_id: UUID, recipient_id: UUID) -> Recipient | None:
        """The connection's recipient, or None."""
        with driver_errors("get"):
            r = await self._pool.fetchrow(QUERIES["get"], connection_id, recipient_id)
        return None if r is None else await self._with_history(r)

    async def insert(
        self, recipient_id: UUID, connection_id: UUID, account_id: UUID, address: str,
        how: str, actor: str,
    ) -> Recipient | None:  # fmt: skip
        """A new pending recipient (its first event recorded); None when the address exists."""
        async with self._pool.acquire() as conn, conn.transaction():
            with driver_errors("insert"):
                r = await conn.fetchrow(
                    QUERIES["insert"], recipient_id, connection_id, account_id, address
                )
                if r is None:
                    return None
                await conn.execute(QUERIES["record_event"], recipient_id, "pending", how, actor)
        return await self._with_history(r)

    async def set_state(self, recipient_id: UUID, state: str, how: str, actor: str) -> Recipient:
        """Change the state and record who did it, how, when — in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            with driver_errors("set_state"):
                r = await conn.fetchrow(QUERIES["set_state"], recipient_id, state)
                await conn.execute(QUERIES["record_event"], recipient_id, state, how, actor)
        return await self._with_history(r)

    async def all(self, connection_id: UUID) -> list[Recipient]:
        """The connection's recipients by address, each with its history."""
        with driver_errors("list"):
            rows = await self._pool.fetch(QUERIES["list"], connection_id)
        events = await self._history([r["id"] for r in rows])
        return [_recipient(r, tuple(events.get(r["id"], ()))) for r in rows]

    async def _with_history(self, r: asyncpg.Record) -> Recipient:
        events = await self._history([r["id"]])
        return _recipient(r, tuple(events.get(r["id"], ())))

    async def _history(self, ids: list[UUID]) -> dict[UUID, list[RecipientEvent]]:
        with driver_errors("history"):
            rows = await self._pool.fetch(QUERIES["history"], ids)
        found: dict[UUID, list[RecipientEvent]] = {}
        for e in rows:
            found.setdefault(e["recipient_id"], []).append(
                RecipientEvent(e["state"], e["how"], e["actor"], e["at"])
            )
        return found

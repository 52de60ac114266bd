"""The only code of email delivery that runs SQL: who may receive a delivery, and what
each recipient answered."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import asyncpg

from services.common.db import driver_errors, load_queries

QUERIES = load_queries(Path(__file__).parent / "sql" / "email.sql")


@dataclass(frozen=True)
class ApprovedRecipient:
    """An approved recipient of a delivery's connection; `done` once its outcome for the
    delivery is recorded."""

    id: UUID
    address: str
    done: bool


class EmailRecipientsPg:
    """Recipients and per-recipient outcomes in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def recipients(self, delivery_id: UUID) -> list[ApprovedRecipient]:
        """The approved recipients, now, each marked done or not for this delivery."""
        with driver_errors("recipients"):
            rows = await self._pool.fetch(QUERIES["recipients"], delivery_id)
        return [ApprovedRecipient(r["id"], r["address"], r["done"]) for r in rows]

    async def record(
        self, delivery_id: UUID, recipient: ApprovedRecipient, outcome: str, message_id: str,
        detail: str,
    ) -> None:  # fmt: skip
        """Record one recipient's outcome (accepted or failed); a failure tells the account."""
        async with self._pool.acquire() as conn, conn.transaction():
            with driver_errors("record"):
                await conn.execute(
                    QUERIES["record"], delivery_id, recipient.id, recipient.address, outcome,
                    message_id, detail,
                )  # fmt: skip
                if outcome == "failed":
                    await conn.execute(
                        QUERIES["attention"], delivery_id, uuid.uuid4(),
                        f"{recipient.address} refused the delivery for good: {detail}",
                    )  # fmt: skip

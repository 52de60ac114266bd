"""The SQL of Zapier: subscriptions (each with the API connection that delivers it, made
and removed in one transaction) and the polling endpoint's newest referrals."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from uuid import UUID

import asyncpg

from services.common.db import driver_errors, load_queries
from services.common.layouts.compiler import RenderContext
from services.delivery.live.store import LiveStorePg
from services.export.zapier import Subscription
from services.scheduler.connections.model import ApiConfig
from services.scheduler.connections.store import ConnectionStorePg

QUERIES = load_queries(Path(__file__).parent / "sql" / "zapier.sql")


def _subscription(r: asyncpg.Record) -> Subscription:
    return Subscription(
        id=r["id"], account_id=r["account_id"], connection_id=r["connection_id"],
        target_url=r["target_url"], event=r["event"],
        campaign_ids=None if r["campaign_ids"] is None else tuple(r["campaign_ids"]),
        state=r["state"], created_at=r["created_at"], removed_at=r["removed_at"],
        removed_reason=r["removed_reason"],
    )  # fmt: skip


class ZapierStorePg:
    """Subscriptions and the polling reads in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add_connection(
        self, connection_id: UUID, account_id: UUID, name: str, config: ApiConfig
    ) -> bool:
        """Store an API connection without secrets (a Catch Hook's); False when the name
        or id is taken."""
        saved = await ConnectionStorePg(self._pool).insert(
            connection_id, account_id, name, config, {}
        )
        return saved is not None

    async def subscribe(
        self,
        subscription_id: UUID,
        account_id: UUID,
        config: ApiConfig,
        event: str,
        campaign_ids: Sequence[UUID] | None,
        credential_id: UUID | None,
    ) -> Subscription | None:
        """The subscription and the API connection that delivers it, in one transaction
        (the connection shares the subscription's id); None when the id is taken."""
        with driver_errors("subscribe"):
            async with self._pool.acquire() as conn, conn.transaction():
                made = await ConnectionStorePg(conn).insert(
                    subscription_id, account_id, f"Zapier hook {subscription_id}", config, {}
                )
                if made is None:
                    return None
                row = await conn.fetchrow(
                    QUERIES["insert_subscription"], subscription_id, account_id, made.id,
                    config.settings.url, event,
                    None if campaign_ids is None else list(campaign_ids), credential_id,
                )  # fmt: skip
        return _subscription(row)

    async def unsubscribe(self, account_id: UUID, subscription_id: UUID, reason: str) -> bool:
        """Remove the account's active subscription and its connection; False when it
        has no such active one."""
        with driver_errors("remove_subscription"):
            removed = await self._pool.fetchval(
                QUERIES["remove_subscription"], account_id, subscription_id, reason
            )
        return removed is not None

    async def get(self, account_id: UUID, subscription_id: UUID) -> Subscription | None:
        """The account's subscription (active or removed), or None."""
        with driver_errors("get_subscription"):
            row = await self._pool.fetchrow(
                QUERIES["get_subscription"], account_id, subscription_id
            )
        return None if row is None else _subscription(row)

    async def page(
        self, account_id: UUID, before: tuple[datetime, UUID] | None, limit: int
    ) -> list[Subscription]:
        """The account's subscriptions, newest first, after the position `before`."""
        at, last = before if before is not None else (None, None)
        with driver_errors("page_subscriptions"):
            rows = await self._pool.fetch(
                QUERIES["page_subscriptions"], account_id, at, last, limit
            )
        return [_subscription(r) for r in rows]

    async def render_context(self, account_id: UUID) -> RenderContext:
        """The account's zone and campaign names (the hook body's context fields)."""
        return await LiveStorePg(self._pool).render_context(account_id)

    async def latest_rows(
        self, account_id: UUID, campaign_ids: Sequence[UUID] | None, limit: int
    ) -> list[asyncpg.Record]:
        """The newest `limit` referrals of the scope, newest first, as the live path's
        text rows (the same rows a hook renders)."""
        with driver_errors("latest_seqs"):
            if campaign_ids is None:
                rows = await self._pool.fetch(QUERIES["latest_seqs"], account_id, limit)
            else:
                rows = await self._pool.fetch(
                    QUERIES["latest_seqs_in_campaigns"], account_id, list(campaign_ids), limit
                )
        found = await LiveStorePg(self._pool).rows_by_seq(account_id, [r["seq"] for r in rows])
        return found[::-1]

"""The shared connection pool's session settings."""

from __future__ import annotations

import asyncpg


async def test_pool_connections_end_transactions_left_idle(pool: asyncpg.Pool) -> None:
    # A forgotten open transaction would hold the safe watermark back for every account.
    setting = await pool.fetchval("SHOW idle_in_transaction_session_timeout")

    assert setting == "1min"

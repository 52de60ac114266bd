"""The watermark monitor: a writer in another database of the cluster holds the watermark
back; the monitor measures the lag and names the writer."""

from __future__ import annotations

import asyncio
import logging
import uuid
from urllib.parse import urlsplit

import asyncpg
import pytest

from services.common.db import create_pool
from services.common.watermark_monitor import WatermarkMonitor
from tests.integration.layouts_support import create_account, insert_referrals
from tests.integration.private_cluster import PrivateCluster

pytestmark = pytest.mark.integration


async def test_a_writer_in_another_database_is_named_while_it_holds_the_watermark(
    pool: asyncpg.Pool, admin_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    await _writer_in_another_database_is_named(pool, admin_dsn, caplog)


async def test_a_writer_in_another_database_of_a_private_cluster_is_named(
    private_database: str, private_cluster: PrivateCluster, caplog: pytest.LogCaptureFixture
) -> None:
    # The same on a cluster of the tests' own, where no other test's writers run.
    async with create_pool(private_database, min_size=1, max_size=2) as pool:
        await _writer_in_another_database_is_named(pool, private_cluster.admin_dsn, caplog)


async def _writer_in_another_database_is_named(
    pool: asyncpg.Pool, admin_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    account, campaign = await create_account(pool)
    await insert_referrals(pool, account, campaign, [{"email": "before@example.com"}])
    monitor = WatermarkMonitor(pool, warn_after_s=0.0)
    other = await asyncpg.connect(admin_dsn, server_settings={"application_name": "stuck-job"})
    try:
        holding = other.transaction()
        await holding.start()
        await other.execute("SELECT pg_current_xact_id()")  # a writer: it holds an xid
        await insert_referrals(
            pool, account, campaign, [{"email": f"held-{uuid.uuid4().hex[:4]}@example.com"}]
        )
        await asyncio.sleep(0.05)
        with caplog.at_level(logging.WARNING, logger="services.common.watermark_monitor"):
            status = await monitor.check()
        pid = str(other.get_server_pid())
        assert status.lag_seqs >= 1
        assert status.waited_s > 0
        named = [b for b in status.blockers if b.name == pid]
        assert named, status.blockers
        assert named[0].database == urlsplit(admin_dsn).path.lstrip("/")
        assert "stuck-job" in named[0].who
        assert pid in caplog.text
        await holding.rollback()
    finally:
        await other.close()
    for _ in range(100):  # released: the watermark catches up
        status = await monitor.check()
        if status.lag_seqs == 0:
            break
        await asyncio.sleep(0.05)
    assert status.lag_seqs == 0

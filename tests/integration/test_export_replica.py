"""Exports and pages read from a real hot standby (pg_basebackup of a private cluster,
streaming its WAL) once it has replayed the primary's position at the pin; a standby that
lags past the bound is answered 503, never with fewer rows than the primary has."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from uuid import UUID

import aiohttp
import asyncpg
import pytest

from services.common.db import create_pool
from services.export import referral_store
from services.export.audit import AuditLog
from services.export.health_routes import Readiness
from services.export.http_app import create_app
from services.export.referral_routes import ReferralRoutes
from services.export.referral_store import ReferralReads
from services.export.store import ExportStore
from services.scheduler.layouts.store import LayoutStorePg
from tests.integration.credentials_support import account_token, authenticator
from tests.integration.export_support import served_export
from tests.integration.layouts_support import create_account, insert_referrals
from tests.integration.private_cluster import PrivateCluster, StandbyCluster, private_cluster_bin

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[PrivateCluster, StandbyCluster]]:
    bin_dir = private_cluster_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl, pg_basebackup)")
    primary = PrivateCluster(bin_dir)
    standby = StandbyCluster(primary)
    try:
        primary.create()
        standby.create()
        yield primary, standby
    finally:
        standby.remove()
        primary.remove()


@dataclass
class Served:
    url: str
    token: str
    primary: asyncpg.Pool
    replica: asyncpg.Pool
    account: UUID
    campaign: UUID

    async def insert(self, names: list[str]) -> None:
        rows = [{"first_name": n} for n in names]
        await insert_referrals(self.primary, self.account, self.campaign, rows)


@pytest.fixture
async def api(
    clusters: tuple[PrivateCluster, StandbyCluster], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Served]:
    primary, standby = clusters
    monkeypatch.setattr(referral_store, "REPLAY_WAIT_S", 1.0)
    async with (
        create_pool(primary.dsn, min_size=1, max_size=3) as pool,
        create_pool(standby.dsn, min_size=1, max_size=3) as replica,
    ):
        app = create_app(
            ExportStore(pool), Readiness(), authenticator(pool),
            expected_schema_version=1, health_timeout_s=2, rate_limit=None,
            referrals=ReferralRoutes(
                ReferralReads(pool, replica), LayoutStorePg(pool), AuditLog(pool)
            ),
        )  # fmt: skip
        account, campaign = await create_account(pool)
        token = await account_token(pool, str(account), "referrals:read")
        async with served_export(app) as url:
            yield Served(url, token, pool, replica, account, campaign)


async def _export(url: str, token: str) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/v1/referrals/export", headers=headers) as response,
    ):
        return response.status, await response.text()


def _names(body: str) -> list[str]:
    return [row[2] for row in list(csv.reader(io.StringIO(body, newline="")))[1:]]


async def test_an_export_from_the_standby_holds_what_the_primary_committed(
    api: Served,
) -> None:
    await api.insert([f"n{i}" for i in range(5)])
    # Right after the commit on the primary: the export waits for the standby to replay it.
    status, body = await _export(api.url, api.token)
    assert status == 200, body
    assert _names(body) == [f"n{i}" for i in range(5)]
    assert await api.replica.fetchval("SELECT pg_is_in_recovery()")


async def test_a_standby_lagging_past_the_bound_is_answered_503(api: Served) -> None:
    await api.replica.execute("SELECT pg_wal_replay_pause()")
    try:
        await api.insert(["late"])
        status, body = await _export(api.url, api.token)
        assert status == 503, body
        assert "retry" in body
    finally:
        await api.replica.execute("SELECT pg_wal_replay_resume()")
    status, body = await _export(api.url, api.token)
    assert (status, _names(body)[-1:]) == (200, ["late"])

"""Failures of the database reach clients as UNAVAILABLE with RetryInfo, never INTERNAL.

Each fault is produced for real on a PostgreSQL cluster of the tests' own: backends
terminated mid-call, the server restarting, shutting down and crashing, its connections
used up, transactions rolled back by the server. Every test also checks that health
answers during the fault and that no row a client saw acknowledged is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.integration.fault_support import (
    Served,
    assert_retryable,
    backends_waiting_on_a_lock,
    served,
    table_locked,
    wait_for,
)
from tests.integration.private_cluster import PrivateCluster

pytestmark = pytest.mark.integration
SERVING = health_pb2.HealthCheckResponse.SERVING


def _database(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


async def _take_every_slot(dsn: str, hogs: list[asyncpg.Connection]) -> None:
    """Connect until the server refuses three times in a row, 0.1 s apart: the slots that
    sessions closing elsewhere free meanwhile are taken too."""
    refusals = 0
    while refusals < 3:
        try:
            hogs.append(await asyncpg.connect(dsn))
            refusals = 0
        except asyncpg.exceptions.TooManyConnectionsError:
            refusals += 1
            await asyncio.sleep(0.1)


def _call(served_: Served, kind: str, prefix: str) -> Awaitable[None]:
    """One call of `kind`, writing new rows named `prefix-<i>`."""
    if kind == "unary":
        return served_.unary(served_.referrals(prefix, 1)[0], timeout=30)
    if kind == "small batch":  # one statement (JSON)
        return served_.batch(served_.referrals(prefix, 20), timeout=30)
    if kind == "batch":  # COPY, through the compiled scanner
        return served_.batch(served_.referrals(prefix, 2000), timeout=30)
    return served_.stream(served_.referrals(prefix, 300), timeout=30)


KINDS = ["unary", "small batch", "batch", "stream"]


async def _load(
    client: Served,
    kind: str,
    name: str,
    stop: asyncio.Event,
    failures: list[grpc.aio.AioRpcError],
) -> None:
    """Calls of `kind`, one after another, until `stop`; failures are collected."""
    n = 0
    while not stop.is_set():
        n += 1
        try:
            await _call(client, kind, f"load-{name}-{n}")
        except grpc.aio.AioRpcError as error:
            failures.append(error)
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_backend_terminated_mid_call_answers_unavailable_with_retry_info(
    private_database: str, kind: str
) -> None:
    async with served(private_database) as client:
        await client.batch(client.referrals("before", 100))
        admin = await asyncpg.connect(private_database)
        try:
            async with table_locked(private_database) as locker:
                call = asyncio.ensure_future(_call(client, kind, "cut"))
                # The call's backend now waits for the lock, mid-transaction: end it there.
                database = _database(private_database)
                waiting = await wait_for(lambda: backends_waiting_on_a_lock(admin, database))
                assert locker.get_server_pid() not in waiting
                await admin.fetch(
                    "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", waiting
                )
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
                assert_retryable(caught.value, (grpc.StatusCode.UNAVAILABLE,))
                assert await client.health() == SERVING
        finally:
            await admin.close()
        # The retry succeeds on a fresh connection; nothing acknowledged went missing.
        await _call(client, kind, "cut")
        await client.assert_nothing_acknowledged_is_lost()
        assert {f"before-{i}" for i in range(100)} <= await client.stored_ids()


async def test_a_database_that_turns_connections_away_answers_unavailable(
    private_cluster: PrivateCluster, private_database: str
) -> None:
    async with served(private_database) as client:
        await client.batch(client.referrals("before", 100))
        # Restarted as a server in recovery: every connection gets 57P03.
        await asyncio.to_thread(private_cluster.stop, "fast")
        private_cluster.set_standby(True)
        try:
            await asyncio.to_thread(private_cluster.start)
            for kind in KINDS:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await _call(client, kind, f"recovering-{kind}")
                assert_retryable(caught.value, (grpc.StatusCode.UNAVAILABLE,))
            assert await client.health() == SERVING
        finally:
            await asyncio.to_thread(private_cluster.stop, "fast")
            private_cluster.set_standby(False)
            await asyncio.to_thread(private_cluster.start)
        await client.batch(client.referrals("after", 100))
        await client.assert_nothing_acknowledged_is_lost()


async def test_a_database_shutting_down_answers_unavailable(
    private_cluster: PrivateCluster, private_database: str
) -> None:
    async with served(private_database) as client:
        await client.batch(client.referrals("before", 10))
        holder = await asyncpg.connect(private_cluster.admin_dsn)
        # A smart shutdown waits for this session; meanwhile new connections get 57P03.
        await client.pool.expire_connections()
        try:
            await asyncio.to_thread(private_cluster.stop_smart_without_waiting)
            for kind in KINDS:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await _call(client, kind, f"stopping-{kind}")
                assert_retryable(caught.value, (grpc.StatusCode.UNAVAILABLE,))
            assert await client.health() == SERVING
        finally:
            await holder.close()
            await asyncio.to_thread(private_cluster.wait_until_stopped)
            await asyncio.to_thread(private_cluster.start)
        await client.batch(client.referrals("after", 10))
        await client.assert_nothing_acknowledged_is_lost()


async def test_a_crash_mid_load_answers_only_retryable_failures_and_loses_nothing(
    private_cluster: PrivateCluster, private_database: str
) -> None:
    async with served(private_database) as client:
        failures: list[grpc.aio.AioRpcError] = []
        stop = asyncio.Event()
        loads = [
            asyncio.ensure_future(_load(client, kind, f"{kind}-{n}", stop, failures))
            for kind in KINDS
            for n in range(2)
        ]
        await asyncio.sleep(0.5)
        await asyncio.to_thread(private_cluster.stop, "immediate")  # a crash
        await asyncio.sleep(0.3)
        assert await client.health() == SERVING
        await asyncio.to_thread(private_cluster.start, wait=False)  # crash recovery
        await private_cluster.wait_until_accepting()
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*loads)
        assert failures, "the crash failed no call"
        for failure in failures:
            assert_retryable(failure, (grpc.StatusCode.UNAVAILABLE,))
        await client.assert_nothing_acknowledged_is_lost()


async def test_too_many_connections_answers_unavailable(
    private_cluster: PrivateCluster, private_database: str
) -> None:
    async with served(private_database, pool_min=0) as client:
        await client.batch(client.referrals("before", 10))
        # Every slot of the server is taken by others, then the pool's connections end.
        hogs: list[asyncpg.Connection] = []
        try:
            await _take_every_slot(private_cluster.admin_dsn, hogs)
            count = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
            database = _database(private_database)

            # Terminate the pool's backends (waiting for them to exit) and take the slots
            # they free, until, with every slot taken, the pool holds no connection: a
            # pool keeping a minimum size reconnects at once and wins that race.
            for _ in range(50):
                await hogs[0].execute(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                    " WHERE datname = $1",
                    database,
                )
                await _take_every_slot(private_cluster.admin_dsn, hogs)
                if await hogs[0].fetchval(count, database) == 0:
                    break
            else:
                raise AssertionError("the service kept a connection with every slot taken")
            for kind in KINDS:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await _call(client, kind, f"full-{kind}")
                assert_retryable(caught.value, (grpc.StatusCode.UNAVAILABLE,))
            assert await client.health() == SERVING
        finally:
            await asyncio.gather(*(hog.close() for hog in hogs))
        await client.batch(client.referrals("after", 10))
        await client.assert_nothing_acknowledged_is_lost()


@pytest.mark.parametrize(
    ("sqlstate", "what"), [("40001", "serialization failure"), ("40P01", "deadlock")]
)
async def test_a_transaction_the_server_rolls_back_answers_unavailable(
    private_database: str, sqlstate: str, what: str
) -> None:
    async with served(private_database) as client:
        await client.batch(client.referrals("before", 10))
        # PostgreSQL itself raises the error inside the ingest transaction, every time
        # (so a deadlock outlasts the store's retries).
        await client.pool.execute(
            f"""CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION '{what}' USING ERRCODE = '{sqlstate}'; END $$;
            CREATE TRIGGER refuse BEFORE INSERT ON referrals FOR EACH STATEMENT
            EXECUTE FUNCTION refuse()"""
        )
        for kind in KINDS:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _call(client, kind, f"refused-{kind}")
            assert_retryable(caught.value, (grpc.StatusCode.UNAVAILABLE,))
            assert what not in (caught.value.details() or "")
        assert await client.health() == SERVING
        await client.pool.execute("DROP TRIGGER refuse ON referrals")
        await client.batch(client.referrals("after", 10))
        await client.assert_nothing_acknowledged_is_lost()


async def test_backends_terminated_under_load_answer_only_retryable_failures(
    private_database: str,
) -> None:
    async with served(private_database) as client:
        failures: list[grpc.aio.AioRpcError] = []
        stop = asyncio.Event()
        loads = [
            asyncio.ensure_future(_load(client, kind, f"{kind}-{n}", stop, failures))
            for kind in KINDS
            for n in range(3)
        ]
        admin = await asyncpg.connect(private_database)
        try:
            for _ in range(40):  # a backend ends every 50 ms, wherever its call is
                await asyncio.sleep(0.05)
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid() AND state = 'active'",
                    _database(private_database),
                )
                assert await client.health() == SERVING
        finally:
            stop.set()
            await asyncio.gather(*loads)
            await admin.close()
        assert failures, "no call failed"
        for failure in failures:
            assert_retryable(failure, (grpc.StatusCode.UNAVAILABLE,))
        await client.assert_nothing_acknowledged_is_lost()


async def test_an_exhausted_pool_answers_unavailable_after_the_acquire_timeout(
    private_database: str,
) -> None:
    async with served(private_database, pool_max=2, acquire_timeout_s=0.5) as client:
        admin = await asyncpg.connect(private_database)
        database = _database(private_database)
        try:
            async with table_locked(private_database):
                # Two batches hold both connections of the pool, waiting for the lock.
                holding = [
                    asyncio.ensure_future(_call(client, "batch", f"holding-{n}")) for n in range(2)
                ]

                async def both_waiting() -> bool:
                    return len(await backends_waiting_on_a_lock(admin, database)) == 2

                await wait_for(both_waiting)
                for kind in KINDS:
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await _call(client, kind, f"starved-{kind}")
                    assert_retryable(caught.value, (grpc.StatusCode.UNAVAILABLE,))
                assert await client.health() == SERVING
            await asyncio.gather(*holding)
        finally:
            await admin.close()
        await client.batch(client.referrals("after", 10))
        await client.assert_nothing_acknowledged_is_lost()

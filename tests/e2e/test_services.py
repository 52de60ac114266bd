"""Each service as its own process: health, a referral end to end, SIGTERM, bad configuration."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.auth.client import credential_channel
from services.common.gen.handoff.ingest.v1 import (
    accounts_pb2,
    accounts_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
)
from services.common.grpc_server import MAX_MESSAGE_BYTES
from services.demo_data import synthetic_referral, synthetic_referrals
from services.launcher.children import ChildProcess
from services.launcher.probes import health_status
from tests.e2e.conftest import SERVICE_NAMES, Starter, service_env

pytestmark = pytest.mark.e2e

ACCOUNT_ID = "0e2e0000-0000-4000-8000-000000000001"
CAMPAIGN_ID = "0e2e0000-0000-4000-8000-000000000002"
PROBLEM_JSON = "application/problem+json"


async def _create_account_and_campaign(channel: grpc.aio.Channel) -> None:
    accounts = accounts_pb2_grpc.AccountServiceStub(channel)
    await accounts.CreateAccount(
        accounts_pb2.CreateAccountRequest(id=ACCOUNT_ID, name="E2E Advertiser"), timeout=10
    )
    await accounts.CreateCampaign(
        accounts_pb2.CreateCampaignRequest(account_id=ACCOUNT_ID, id=CAMPAIGN_ID, name="E2E"),
        timeout=10,
    )


async def _get(url: str) -> tuple[int, str, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        body = await response.json(content_type=None)
        return response.status, response.content_type, body


async def test_every_service_reports_serving_and_export_answers_healthz(
    database_url: str, start_service: Starter
) -> None:
    env = service_env(database_url)
    running = await asyncio.gather(*(start_service(name, env) for name in SERVICE_NAMES))

    for service in running:
        assert await health_status(service.grpc_target) == "SERVING", service.name
    export = running[-1]
    assert await _get(f"{export.http_url}/healthz") == (200, "application/json", {"status": "ok"})
    status, _, ready = await _get(f"{export.http_url}/readyz")
    assert (status, ready["status"]) == (200, "ready")
    status, content_type, problem = await _get(f"{export.http_url}/no/such/path")
    assert (status, content_type) == (404, PROBLEM_JSON)
    assert problem["status"] == 404
    assert problem["title"] == "Not Found"


async def test_referral_ingested_through_the_process_is_stored(
    database_url: str, start_service: Starter, operator_token: str
) -> None:
    ingest = await start_service("ingest", service_env(database_url))
    referral = synthetic_referral(ACCOUNT_ID, CAMPAIGN_ID, index=1, seed=7)

    async with credential_channel(ingest.grpc_target, operator_token) as channel:
        await _create_account_and_campaign(channel)
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        answer = await stub.Ingest(ingest_pb2.IngestRequest(referral=referral), timeout=10)

    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT seq, email, country FROM referrals WHERE partner_referral_id = $1",
            referral.partner_referral_id,
        )
    finally:
        await conn.close()
    assert row is not None
    assert (row["seq"], row["email"], row["country"]) == (
        answer.seq,
        referral.consumer.email,
        referral.consumer.country,
    )


async def _wait_for_lock_waiter(conn: asyncpg.Connection, timeout_s: float) -> None:
    """Return once another backend of this database waits for a lock."""
    async with asyncio.timeout(timeout_s):
        while True:
            waiting = await conn.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                    WHERE datname = current_database() AND wait_event_type = 'Lock'
                      AND pid <> pg_backend_pid()"""
            )
            if waiting:
                return
            await asyncio.sleep(0.02)


async def test_sigterm_turns_not_serving_and_lets_an_in_flight_batch_finish(
    database_url: str, start_service: Starter, operator_token: str
) -> None:
    ingest = await start_service("ingest", service_env(database_url))
    rows = synthetic_referrals(ACCOUNT_ID, CAMPAIGN_ID, 2000, seed=11)
    options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
    blocker = await asyncpg.connect(database_url)
    try:
        async with credential_channel(
            ingest.grpc_target, operator_token, options=options
        ) as channel:
            await _create_account_and_campaign(channel)
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            # Hold the batch inside the server: its INSERT waits for our table lock.
            locked = blocker.transaction()
            await locked.start()
            await blocker.execute("LOCK TABLE referrals IN SHARE MODE")
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            batch = asyncio.ensure_future(
                stub.IngestBatch(ingest_pb2.IngestBatchRequest(referrals=rows), timeout=30)
            )
            await _wait_for_lock_waiter(blocker, timeout_s=10)

            ingest.child.send_signal(signal.SIGTERM)
            async with asyncio.timeout(5):
                changed = await watch.read()
            watch.cancel()  # an open Watch would hold the server for the whole grace
            assert changed.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert ingest.child.returncode is None, "stopped before the in-flight call ended"

            await locked.rollback()
            answer = await batch
    finally:
        await blocker.close()

    assert (answer.accepted, answer.rejected) == (2000, 0)
    async with asyncio.timeout(10):
        assert await ingest.child.wait() == 0


async def test_sigterm_stops_every_service_with_exit_code_0(
    database_url: str, start_service: Starter
) -> None:
    env = service_env(database_url)
    running = await asyncio.gather(*(start_service(name, env) for name in SERVICE_NAMES))

    for service in running:
        service.child.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        codes = await asyncio.gather(*(service.child.wait() for service in running))

    assert dict(zip(SERVICE_NAMES, codes, strict=True)) == dict.fromkeys(SERVICE_NAMES, 0)


async def test_export_healthz_answers_503_problem_when_the_database_is_gone(
    database_url: str, admin_dsn: str, start_service: Starter
) -> None:
    export = await start_service("export", service_env(database_url))
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()

    status, content_type, problem = await _get(f"{export.http_url}/healthz")
    assert (status, content_type) == (503, PROBLEM_JSON)
    assert problem["status"] == 503
    assert "database" in str(problem["detail"])


async def test_export_readyz_refuses_a_database_with_an_old_schema(
    database_url: str, start_service: Starter
) -> None:
    export = await start_service("export", service_env(database_url))
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DELETE FROM schema_migrations")
    finally:
        await conn.close()

    status, content_type, problem = await _get(f"{export.http_url}/readyz")
    assert (status, content_type) == (503, PROBLEM_JSON)
    assert "run the migrations" in str(problem["detail"])


@pytest.mark.parametrize("name", SERVICE_NAMES)
async def test_service_with_unreachable_database_exits_nonzero_saying_why(name: str) -> None:
    with socket.socket() as closed:  # a port that refuses connections
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = service_env(f"postgresql://postgres@127.0.0.1:{port}/handoff")
    child = await ChildProcess.start_module(name, f"services.{name}", env, echo=None)

    async with asyncio.timeout(15):
        code = await child.wait()

    assert code == 1
    assert "cannot connect to the database" in child.stderr_tail()


async def test_export_with_a_bad_http_port_exits_2_naming_the_variable() -> None:
    env = service_env("postgresql://postgres@127.0.0.1:1/unused", HANDOFF_EXPORT_HTTP_PORT="web")
    child = await ChildProcess.start(
        "export", [sys.executable, "-m", "services.export"], env, echo=None
    )

    async with asyncio.timeout(15):
        code = await child.wait()

    assert code == 2
    assert "HANDOFF_EXPORT_HTTP_PORT must be an integer" in child.stderr_tail()

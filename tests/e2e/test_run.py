"""`python -m services.run` as a user runs it: against DATABASE_URL, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from services.common.auth.client import credential_channel
from services.common.gen.handoff.ingest.v1 import accounts_pb2, accounts_pb2_grpc
from services.launcher.children import ChildProcess, stop_children
from services.launcher.demo import DEMO_CAMPAIGN_ID
from services.launcher.probes import health_status, http_status
from tests.conftest import with_database
from tests.e2e.conftest import SERVICE_NAMES, service_env, wait_for_line

pytestmark = pytest.mark.e2e

READY_LINE = "Press Ctrl-C to stop."


@pytest.fixture
async def launched() -> AsyncIterator[list[ChildProcess]]:
    """Launchers started by the test; any still running at the end are stopped."""
    children: list[ChildProcess] = []
    yield children
    await stop_children(children, grace_s=20)


async def _launch(children: list[ChildProcess], env: dict[str, str], *args: str) -> ChildProcess:
    argv = [sys.executable, "-m", "services.run", "--start-timeout", "20", *args]
    child = await ChildProcess.start("run", argv, env, echo=None, tail_lines=1000)
    children.append(child)
    return child


async def test_run_starts_four_healthy_services_and_stops_cleanly_on_sigterm(
    database_url: str, launched: list[ChildProcess], tmp_path: Path
) -> None:
    env = service_env(database_url, HANDOFF_HOME=str(tmp_path))
    run = await _launch(launched, env)

    await wait_for_line(run, READY_LINE, timeout_s=25)
    for name in SERVICE_NAMES:
        target = f"127.0.0.1:{env[f'HANDOFF_{name.upper()}_PORT']}"
        assert await health_status(target) == "SERVING", name
    http = f"http://127.0.0.1:{env['HANDOFF_EXPORT_HTTP_PORT']}"
    assert await http_status(f"{http}/healthz") == 200
    printed = "\n".join(run.stdout_lines)
    assert http in printed
    assert database_url in printed  # no password in the test's URL, so shown as is
    # The local operator credential: kept owner-only, named by its file, never printed,
    # and good for a call that needs the operator role.
    token_file = tmp_path / "operator-token"
    token = token_file.read_text().strip()
    assert token.startswith("hoff_sc_")
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert str(token_file) in printed
    assert token not in printed
    ingest_target = f"127.0.0.1:{env['HANDOFF_INGEST_PORT']}"
    async with credential_channel(ingest_target, token) as channel:
        listed = await accounts_pb2_grpc.AccountServiceStub(channel).ListAccounts(
            accounts_pb2.ListAccountsRequest(), timeout=10
        )
    assert list(listed.accounts) == []

    run.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        assert await run.wait() == 0
    assert run.stdout_lines[-1] == "run: all services stopped"
    for name in SERVICE_NAMES:  # nothing left listening
        target = f"127.0.0.1:{env[f'HANDOFF_{name.upper()}_PORT']}"
        assert await health_status(target, timeout_s=0.5) is None, name


async def test_run_with_text_logs_shows_each_listening_event_once_with_its_address(
    database_url: str, launched: list[ChildProcess], tmp_path: Path
) -> None:
    env = service_env(database_url, HANDOFF_LOG_FORMAT="text", HANDOFF_HOME=str(tmp_path))
    run = await _launch(launched, env)
    await wait_for_line(run, READY_LINE, timeout_s=25)
    run.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        assert await run.wait() == 0

    relayed = run.stderr_tail().splitlines()  # the launcher relays its children on stderr
    for name in SERVICE_NAMES:
        address = f"127.0.0.1:{env[f'HANDOFF_{name.upper()}_PORT']}"
        shown = [line for line in relayed if "listening" in line and line.startswith(name)]
        assert len(shown) == (2 if name == "export" else 1), shown  # export: gRPC and HTTP
        assert address in shown[0]


async def test_run_demo_ingests_synthetic_referrals_once(
    database_url: str, launched: list[ChildProcess], tmp_path: Path
) -> None:
    env = service_env(database_url, HANDOFF_HOME=str(tmp_path))
    run = await _launch(launched, env, "--demo", "--demo-count", "1500")

    report = await wait_for_line(run, "demo: sent", timeout_s=40)
    run.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        assert await run.wait() == 0

    assert "1500 accepted, 0 already there (duplicates), 0 rejected" in report
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM referrals WHERE campaign_id = $1", uuid.UUID(DEMO_CAMPAIGN_ID)
        )
        countries = await conn.fetchval(
            "SELECT count(DISTINCT country) FROM referrals WHERE campaign_id = $1",
            uuid.UUID(DEMO_CAMPAIGN_ID),
        )
    finally:
        await conn.close()
    assert stored == 1500
    assert countries >= 5


async def test_run_refuses_up_front_when_a_port_is_taken_naming_port_holder_and_variable(
    database_url: str, launched: list[ChildProcess], tmp_path: Path
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = service_env(
            database_url, HANDOFF_SCHEDULER_PORT=str(port), HANDOFF_HOME=str(tmp_path)
        )
        run = await _launch(launched, env)
        async with asyncio.timeout(30):
            code = await run.wait()

    assert code == 1
    said = run.stderr_tail()
    assert f"scheduler gRPC cannot listen on 127.0.0.1:{port}" in said
    assert f"pid {os.getpid()} (" in said  # the holder: this test process
    assert "HANDOFF_SCHEDULER_PORT=<port>" in said
    assert run.stdout_lines == []  # nothing started, not even the migrations


async def test_a_second_run_is_refused_and_leaves_the_first_serving(
    database_url: str, launched: list[ChildProcess], tmp_path: Path
) -> None:
    env = service_env(database_url, HANDOFF_HOME=str(tmp_path))
    first = await _launch(launched, env)
    await wait_for_line(first, READY_LINE, timeout_s=25)

    second = await _launch(launched, env, "--demo")
    async with asyncio.timeout(30):
        code = await second.wait()

    assert code == 1
    assert READY_LINE not in second.stdout_lines
    said = second.stderr_tail()
    ingest_pid = _pid_in_summary(first, "ingest")
    assert f"pid {ingest_pid} (" in said
    assert "services.ingest" in said
    assert "HANDOFF_INGEST_PORT=<port>" in said
    assert "is `make run` already running?" in said
    assert first.returncode is None
    for name in SERVICE_NAMES:
        target = f"127.0.0.1:{env[f'HANDOFF_{name.upper()}_PORT']}"
        assert await health_status(target) == "SERVING", name


async def test_run_names_the_service_that_cannot_start_and_exits_1(
    database_url: str, launched: list[ChildProcess], tmp_path: Path
) -> None:
    # Workers are an ingest feature; delivery refuses the variable and exits 2 at start-up.
    env = service_env(database_url, HANDOFF_DELIVERY_WORKERS="2", HANDOFF_HOME=str(tmp_path))
    run = await _launch(launched, env)
    async with asyncio.timeout(30):
        code = await run.wait()

    assert code == 1
    assert "delivery exited with code 2" in run.stderr_tail()
    assert "HANDOFF_DELIVERY_WORKERS is not supported" in run.stderr_tail()


@pytest.mark.parametrize(
    ("sig", "exit_code", "said"),
    [
        (signal.SIGKILL, 137, "scheduler was killed by SIGKILL; stopping the others"),
        (signal.SIGTERM, 0, "scheduler stopped on its own with exit code 0"),
    ],
)
async def test_one_service_stopping_stops_the_others_with_its_exit_code(
    database_url: str,
    launched: list[ChildProcess],
    tmp_path: Path,
    sig: signal.Signals,
    exit_code: int,
    said: str,
) -> None:
    env = service_env(database_url, HANDOFF_HOME=str(tmp_path))
    run = await _launch(launched, env)
    await wait_for_line(run, READY_LINE, timeout_s=25)

    os.kill(_pid_in_summary(run, "scheduler"), sig)
    async with asyncio.timeout(30):
        code = await run.wait()

    assert code == exit_code
    assert said in run.stderr_tail()
    for name in SERVICE_NAMES:  # the others were stopped, not left behind
        target = f"127.0.0.1:{env[f'HANDOFF_{name.upper()}_PORT']}"
        assert await health_status(target, timeout_s=0.5) is None, name


def _pid_in_summary(run: ChildProcess, service: str) -> int:
    line = next(x for x in run.stdout_lines if x.strip().startswith(f"{service} "))
    return int(line.rsplit("pid ", 1)[1])


async def test_run_migrate_only_migrates_an_empty_database_and_exits(
    admin_dsn: str, launched: list[ChildProcess]
) -> None:
    name = f"handoff_t_{uuid.uuid4().hex[:12]}_empty"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        run = await _launch(launched, service_env(with_database(admin_dsn, name)), "--migrate-only")
        async with asyncio.timeout(20):
            assert await run.wait() == 0
        conn = await asyncpg.connect(with_database(admin_dsn, name))
        try:
            versions = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    assert versions >= 1
    assert any(line.startswith("run: migrations: 0001_") for line in run.stdout_lines)

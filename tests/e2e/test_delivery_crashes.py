"""Exactly once, proven with processes: two scheduler and two delivery replicas deliver a
task every second over SFTP, and again over FTPS, while referrals arrive (some in slow
transactions that commit out of order); delivery processes are SIGKILLed mid-upload twice
and a scheduler once. At the end the files hold every referral exactly once, and no
partial file has a final name."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from services.common.auth.client import credential_channel
from services.common.auth.model import Role
from services.common.gen.handoff.scheduler.v1 import (
    connections_pb2,
    connections_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
)
from tests.e2e.conftest import RunningService, Starter, free_port, service_env
from tests.integration.credentials_support import service_token
from tests.integration.ftps_servers import FTP_PASSWORD, FTP_USER, pyftpd
from tests.integration.layouts_support import create_account
from tests.integration.sftp_servers import SFTP_PASSWORD, SFTP_USER, asyncssh_sftp, fingerprint

pytestmark = pytest.mark.e2e
PART = ".handoff-part"


async def _slow_insert(
    pool: asyncpg.Pool, account: uuid.UUID, campaign: uuid.UUID, email: str, hold_s: float
) -> None:
    """A referral whose transaction draws its seq now and commits after `hold_s`."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO referrals (account_id, campaign_id, partner_referral_id, email,
                                      opted_in_at, extra)
               VALUES ($1, $2, $3, $4, now(), '{}')""",
            account, campaign, f"slow-{email}", email,
        )  # fmt: skip
        await asyncio.sleep(hold_s)


async def _fast_inserts(
    pool: asyncpg.Pool, account: uuid.UUID, campaign: uuid.UUID, emails: list[str]
) -> None:
    await pool.executemany(
        """INSERT INTO referrals (account_id, campaign_id, partner_referral_id, email,
                                  opted_in_at, extra)
           VALUES ($1, $2, $3, $4, now(), '{}')""",
        [(account, campaign, f"fast-{e}", e) for e in emails],
    )


def _fresh_part_files(folder: Path) -> list[Path]:
    now = time.time()
    return [p for p in folder.iterdir() if p.name.endswith(PART) and now - p.stat().st_mtime < 1.0]


async def _uploading(pool: asyncpg.Pool, folder: Path) -> bool:
    """Whether an attempt is writing right now: it holds a live lease and its temporary
    file was just touched (a stale one, left by an attempt killed earlier, is not)."""
    if not _fresh_part_files(folder):
        return False
    live = await pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE state = 'running' AND lease_until > now()"
    )
    return bool(live)


@dataclass
class Drop:
    """A file server the task delivers to: the connection to create, and a switch that
    makes each write wait (so that an upload whose temporary file exists is still
    writing)."""

    connection: connections_pb2.Connection
    slow_writes: Callable[[float], None]


@asynccontextmanager
async def _drop(kind: str, root: Path) -> AsyncIterator[Drop]:
    """An asyncssh SFTP server or a pyftpdlib FTPS server writing under `root`/in."""
    if kind == "sftp":
        async with asyncssh_sftp(root) as sftp:
            ssh = connections_pb2.SftpConnection(
                host="127.0.0.1", port=sftp.port, username=SFTP_USER,
                host_key=fingerprint(sftp.host_key), remote_dir="/in", password=SFTP_PASSWORD,
            )  # fmt: skip

            def slow_ssh(delay_s: float) -> None:
                sftp.server_class.write_delay_s = delay_s

            yield Drop(connections_pb2.Connection(name="drop", sftp=ssh), slow_ssh)
        return
    with pyftpd(root) as ftpd:
        ftps = connections_pb2.FtpsConnection(
            host="127.0.0.1", port=ftpd.port, username=FTP_USER,
            certificate_sha256=ftpd.certificate.sha256, remote_dir="/in", password=FTP_PASSWORD,
        )  # fmt: skip

        def slow_ftp(delay_s: float) -> None:
            ftpd.handler.write_delay_s = delay_s

        yield Drop(connections_pb2.Connection(name="drop", ftps=ftps), slow_ftp)


def _emails(path: Path) -> list[str]:
    return [r["email"] for r in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))]


@pytest.mark.parametrize("kind", ["sftp", "ftps"])
async def test_every_referral_arrives_exactly_once_through_crashes(
    database_url: str, pool: asyncpg.Pool, start_service: Starter, tmp_path: Path, kind: str
) -> None:
    (tmp_path / "in").mkdir()
    account, campaign = await create_account(pool)
    operator = await service_token(pool, Role.OPERATOR)
    scheduler_token = await service_token(pool, Role.SCHEDULER)
    timing = {
        "HANDOFF_DELIVERY_LEASE_S": "2", "HANDOFF_DELIVERY_RETRY_FIRST_S": "0.2",
        "HANDOFF_SCHEDULER_TICK_S": "0.2", "HANDOFF_SCHEDULER_REISSUE_S": "1",
        "HANDOFF_SCHEDULER_TOKEN": scheduler_token,
    }  # fmt: skip
    base = service_env(database_url, **timing)
    second = {
        **base,
        "HANDOFF_SCHEDULER_PORT": str(free_port()),
        "HANDOFF_DELIVERY_PORT": str(free_port()),
    }
    for env in (base, second):
        env["HANDOFF_SCHEDULER_DELIVERY_TARGET"] = f"127.0.0.1:{env['HANDOFF_DELIVERY_PORT']}"

    async with _drop(kind, tmp_path) as drop:
        # Each write waits: an upload whose temporary file exists is still writing.
        drop.slow_writes(0.25)
        deliveries: dict[str, RunningService] = {
            "a": await start_service("delivery", base),
            "b": await start_service("delivery", second),
        }
        schedulers = {
            "a": await start_service("scheduler", base),
            "b": await start_service("scheduler", second),
        }
        # The API through scheduler b: scheduler a is the one killed.
        async with credential_channel(schedulers["b"].grpc_target, operator) as channel:
            connections = connections_pb2_grpc.ConnectionServiceStub(channel)
            tasks = tasks_pb2_grpc.TaskServiceStub(channel)
            connection = await connections.CreateConnection(
                connections_pb2.CreateConnectionRequest(
                    account_id=str(account), connection=drop.connection
                )
            )
            task = await tasks.CreateTask(
                tasks_pb2.CreateTaskRequest(
                    account_id=str(account),
                    task=tasks_pb2.Task(
                        name="every second",
                        connection_id=connection.id,
                        schedule=tasks_pb2.Schedule(cron="* * * * *"),
                    ),
                )
            )
            sent: list[str] = []
            stop = asyncio.Event()

            async def ingest_continuously() -> None:
                n = 0
                slow: list[asyncio.Task[None]] = []
                while not stop.is_set():
                    batch = [f"r{n + i}@example.com" for i in range(40)]
                    n += len(batch)
                    if n % 200 == 0:  # one held open while later ones commit first
                        email = f"r{n}@example.com"
                        n += 1
                        slow.append(
                            asyncio.create_task(_slow_insert(pool, account, campaign, email, 1.5))
                        )
                        sent.append(email)
                    await _fast_inserts(pool, account, campaign, batch)
                    sent.extend(batch)
                    await asyncio.sleep(0.1)
                await asyncio.gather(*slow)

            async def run_now_every_second() -> None:
                while not stop.is_set():
                    await tasks.RunTaskNow(
                        tasks_pb2.RunTaskNowRequest(account_id=str(account), id=task.id)
                    )
                    await asyncio.sleep(1.0)

            async def kill_mid_upload(times: int) -> int:
                killed = 0
                deadline = asyncio.get_running_loop().time() + 60
                while killed < times and asyncio.get_running_loop().time() < deadline:
                    if await _uploading(pool, tmp_path / "in"):
                        for replica in deliveries.values():  # both at once, mid-upload
                            replica.child.send_signal(signal.SIGKILL)
                        for name, replica in list(deliveries.items()):
                            await replica.child.wait()
                            env = base if name == "a" else second
                            deliveries[name] = await start_service("delivery", env)
                        killed += 1
                        await asyncio.sleep(2.0)
                    await asyncio.sleep(0.02)
                return killed

            workers = [
                asyncio.create_task(ingest_continuously()),
                asyncio.create_task(run_now_every_second()),
            ]
            killed = await kill_mid_upload(2)
            schedulers["a"].child.send_signal(signal.SIGKILL)
            await schedulers["a"].child.wait()
            schedulers["a"] = await start_service("scheduler", base)
            await asyncio.sleep(3.0)
            stop.set()
            await asyncio.gather(*workers)
            drop.slow_writes(0.0)

            # Drain: every referral in scope is delivered, every delivery finished.
            final = await pool.fetchval("SELECT max(seq) FROM referrals")
            async with asyncio.timeout(60):
                while True:
                    await tasks.RunTaskNow(
                        tasks_pb2.RunTaskNowRequest(account_id=str(account), id=task.id)
                    )
                    cursor = await pool.fetchval(
                        "SELECT delivered_seq FROM tasks WHERE id = $1", uuid.UUID(task.id)
                    )
                    open_ = await pool.fetchval(
                        "SELECT count(*) FROM deliveries WHERE state NOT IN ('succeeded', 'dead')"
                    )
                    if cursor >= final and open_ == 0:
                        break
                    await asyncio.sleep(0.5)

    assert killed == 2
    done = await pool.fetch("SELECT state, files FROM deliveries ORDER BY after_seq")
    assert {r["state"] for r in done} == {"succeeded"}
    recorded = {Path(f["path"]).name: f["sha256"] for r in done for f in r["files"]}
    files = sorted(p for p in (tmp_path / "in").iterdir() if not p.name.endswith(PART))
    assert sorted(p.name for p in files) == sorted(recorded)
    for path in files:  # no partial file under a final name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded[path.name], path.name
    arrived = Counter(e for path in files for e in _emails(path))
    assert arrived == Counter(sent)
    assert max(arrived.values()) == 1
    # Each kill cut an attempt off mid-upload: one more attempt each (perhaps of one delivery).
    extra = await pool.fetchval("SELECT sum(attempts - 1) FROM deliveries")
    assert extra >= 2

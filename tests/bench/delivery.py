"""Delivery benchmarks: 1,000,000 referrals over SFTP to a local OpenSSH sshd.

Beside each figure, a baseline measured in the same run:
- the default layout, delivered by the delivery service (its own process), beside the
  hand-rolled way: `COPY (SELECT the same columns) TO STDOUT CSV` streamed into an asyncssh
  upload to the same server;
- the render bench's 20-column layout with six custom fields, beside rendering alone;
- the delivery process's peak RSS at 100,000 and 1,000,000 rows;
- the scheduler reserving and issuing 1,000 tasks due at the same minute.
Needs root (sshd with a chrooted user); `python -m tests.bench.delivery`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import asyncssh

from services.common.auth.client import credential_channel
from services.common.auth.model import Role
from services.common.auth.store import CredentialStore
from services.common.db import create_pool
from services.common.gen.handoff.delivery.v1 import delivery_pb2, delivery_pb2_grpc
from services.common.layouts.codec import custom_field_to_json, layout_to_json
from services.common.layouts.compiler import compile_layout
from services.common.layouts.defaults import DEFAULT_LAYOUT
from services.common.localdb import resolve_admin_dsn
from services.common.referral_rows import QUERIES, range_arguments
from services.common.secrets import SecretBox, connection_secret_context, new_key_entry
from services.ingest.credentials import create_service_credential
from services.scheduler.tasks.runner import TaskRunner
from services.scheduler.tasks.store import TaskStorePg
from tests.bench import render
from tests.bench.scratch import scratch_database
from tests.bench.table import BenchRow, format_table
from tests.integration.sftp_servers import OpenSshSftp, openssh_sftp, sshd_available

TOTAL_ROWS = render.TOTAL_ROWS
SMALL_ROWS = render.SMALL_ROWS
SCHEDULER_TASKS = 1000
KEYS = new_key_entry("bench")
_INSERT_CONNECTION = """
    INSERT INTO connections (id, account_id, name, kind, settings, secrets)
    VALUES ($1, $2, 'bench', 'sftp', $3::jsonb, $4::jsonb)"""
_INSERT_FIELD = """
    INSERT INTO custom_fields (id, account_id, name, definition) VALUES ($1, $2, $3, $4::jsonb)"""
_INSERT_LAYOUT = """
    INSERT INTO layouts (id, account_id, name, definition) VALUES ($1, $2, 'bench20', $3::jsonb)"""
_INSERT_DELIVERY = """
    INSERT INTO deliveries (id, task_id, account_id, purpose, after_seq, through_seq)
    VALUES ($1, $2, $3, 'scheduled', 0, $4)"""
_INSERT_DUE_TASK = """
    INSERT INTO tasks (id, account_id, connection_id, name, schedule, time_zone,
                       delivered_seq, next_run_at)
    VALUES ($1, $2, $3, $4, '{"cron": "* * * * *"}', 'UTC', 0, now() - interval '1 second')"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def _delivery_process(
    dsn: str, port: int, extra_env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ, "DATABASE_URL": dsn, "HANDOFF_DELIVERY_PORT": str(port),
        "HANDOFF_SECRET_KEYS": KEYS, "HANDOFF_EGRESS_ALLOW": "127.0.0.0/8",
        "HANDOFF_LOG_LEVEL": "warning", **(extra_env or {}),
    }  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "services.delivery"], env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _hand_rolled(dsn: str, account: str, sshd: OpenSshSftp, fields: list[str]) -> float:
    """COPY of the same columns straight into an asyncssh upload: seconds, counted from the
    SSH connect (as a delivery's are)."""
    conn = await asyncpg.connect(dsn)
    started = time.perf_counter()
    async with asyncssh.connect(
        "127.0.0.1", sshd.port, username=sshd.user, password=sshd.password, known_hosts=None,
        config=None, agent_path=None, client_keys=None,
    ) as ssh, ssh.start_sftp_client() as sftp:  # fmt: skip
        async with sftp.open(f"{sshd.upload}/raw.csv", "wb") as remote:

            async def write(data: bytes) -> None:
                await remote.write(data)

            async with conn.transaction(readonly=True):
                await conn.execute(QUERIES["render_session"])
                await conn.copy_from_query(
                    QUERIES["referral_rows_in_range"],
                    *range_arguments(uuid.UUID(account), 0, TOTAL_ROWS, None, fields, None),
                    output=write, format="csv",
                )  # fmt: skip
        seconds = time.perf_counter() - started
    await conn.close()
    return seconds


async def _setup(dsn: str, account: str, sshd: OpenSshSftp) -> tuple[uuid.UUID, uuid.UUID, str]:
    """A connection to sshd, a saved 20-column layout and a SCHEDULER token."""
    box = SecretBox.from_env({"HANDOFF_SECRET_KEYS": KEYS})
    connection = uuid.uuid4()
    layout = uuid.uuid4()
    conn = await asyncpg.connect(dsn)
    try:
        settings = {
            "host": "127.0.0.1", "port": sshd.port, "username": sshd.user,
            "host_key": sshd.host_key_line, "remote_dir": sshd.upload,
            "file_name_template": "", "write_mode": "rename", "manifest": False,
            "max_rows_per_file": 0,
        }  # fmt: skip
        sealed = {
            "password": box.seal(sshd.password, connection_secret_context(connection, "password"))
        }
        await conn.execute(
            _INSERT_CONNECTION, connection, uuid.UUID(account), _json(settings), _json(sealed)
        )
        for name, spec in render.CUSTOM_FIELDS.items():
            definition = _json(custom_field_to_json(spec))
            await conn.execute(_INSERT_FIELD, uuid.uuid4(), uuid.UUID(account), name, definition)
        definition = _json(layout_to_json(render.LAYOUT))
        await conn.execute(_INSERT_LAYOUT, layout, uuid.UUID(account), definition)
        _, token = await create_service_credential(
            CredentialStore(conn), "bench scheduler", (Role.SCHEDULER,), (), None, datetime.now(UTC)
        )
    finally:
        await conn.close()
    return connection, layout, token


async def _setup_token(dsn: str) -> str:
    """A SCHEDULER token, for starting deliveries."""
    conn = await asyncpg.connect(dsn)
    try:
        _, token = await create_service_credential(
            CredentialStore(conn), "bench scheduler", (Role.SCHEDULER,), (), None, datetime.now(UTC)
        )
    finally:
        await conn.close()
    return token


def _json(value: object) -> str:
    import json

    return json.dumps(value)


async def _deliver(
    dsn: str,
    account: str,
    connection: uuid.UUID,
    layout: uuid.UUID | None,
    through: int,
    token: str,
    extra_env: dict[str, str] | None = None,
) -> tuple[float, float, int]:
    """A task and one delivery over (0, through], run by a fresh delivery process:
    (seconds, its peak RSS in MiB, rows)."""
    conn = await asyncpg.connect(dsn)
    task, delivery = uuid.uuid4(), uuid.uuid4()
    try:
        await conn.execute(
            """INSERT INTO tasks (id, account_id, connection_id, name, layout_id, schedule,
                                  time_zone, delivered_seq, next_run_at, enabled)
               VALUES ($1, $2, $3, $4, $5, '{"cron": "0 0 1 1 *"}', 'UTC', 0,
                       now() + interval '1 year', false)""",
            task, uuid.UUID(account), connection, f"bench {task.hex[:6]}", layout,
        )  # fmt: skip
        await conn.execute(_INSERT_DELIVERY, delivery, task, uuid.UUID(account), through)
        port = _free_port()
        with _delivery_process(dsn, port, extra_env) as proc:
            async with credential_channel(f"127.0.0.1:{port}", token) as channel:
                stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
                for _ in range(200):
                    try:
                        started = time.perf_counter()
                        await stub.StartDelivery(
                            delivery_pb2.StartDeliveryRequest(
                                delivery_id=str(delivery),
                                range=delivery_pb2.SeqRange(after_seq=0, through_seq=through),
                            ),
                            timeout=5,
                        )
                        break
                    except Exception:  # not serving yet
                        await asyncio.sleep(0.1)
                while True:
                    state, rows, error = await conn.fetchrow(
                        "SELECT state, rows_sent, error FROM deliveries WHERE id = $1", delivery
                    )
                    if state in ("succeeded", "dead", "retrying"):
                        break
                    await asyncio.sleep(0.05)
                seconds = time.perf_counter() - started
                if state != "succeeded":
                    raise RuntimeError(f"bench delivery {state}: {error}")
                peak = _peak_rss_mib(proc.pid)
    finally:
        await conn.close()
    return seconds, peak, int(rows)


class _NoJobs:
    async def start(self, delivery_id: uuid.UUID, after_seq: int, through_seq: int) -> None:
        return None


async def _scheduler_overhead(dsn: str, account: str, connection: uuid.UUID) -> float:
    """Seconds for one scheduler to reserve and issue 1,000 tasks due at once."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("UPDATE tasks SET enabled = false")
        await conn.executemany(
            _INSERT_DUE_TASK,
            [
                (uuid.uuid4(), uuid.UUID(account), connection, f"due {i}")
                for i in range(SCHEDULER_TASKS)
            ],
        )
    finally:
        await conn.close()
    async with create_pool(dsn, min_size=1, max_size=4) as pool:
        runner = TaskRunner(TaskStorePg(pool), _NoJobs())
        started = time.perf_counter()
        now = datetime.now(UTC)
        reserved = await runner.reserve_due(now)
        issued = await runner.issue_waiting(now + timedelta(seconds=1))
        seconds = time.perf_counter() - started
    assert reserved == issued == SCHEDULER_TASKS, (reserved, issued)
    return seconds


async def run(dsn: str) -> list[BenchRow]:
    """Seed a scratch database, measure, drop it; the table rows."""
    if not sshd_available():
        return [BenchRow("delivery bench skipped: needs root and openssh-server", 0, "-")]
    async with scratch_database(dsn, "delivery") as scratch:
        account = await render._seed(scratch, TOTAL_ROWS)
        with openssh_sftp() as sshd:
            connection, layout, token = await _setup(scratch, account, sshd)
            default_fields = list(compile_layout(DEFAULT_LAYOUT, {}).row_fields)
            raw = [await _hand_rolled(scratch, account, sshd, default_fields)]
            full, full_rss, full_rows = await _deliver(
                scratch, account, connection, None, TOTAL_ROWS, token
            )
            _, small_rss, _ = await _deliver(scratch, account, connection, None, SMALL_ROWS, token)
            wide, wide_rss, _ = await _deliver(
                scratch, account, connection, layout, TOTAL_ROWS, token
            )
            raw.append(await _hand_rolled(scratch, account, sshd, default_fields))
            rendered = render._render_in_child(scratch, account, TOTAL_ROWS)
            del sshd
        scheduler = await _scheduler_overhead(scratch, account, connection)
    raw_rate = TOTAL_ROWS / min(raw)
    render_rate = rendered["rows"] / rendered["seconds"]
    return [
        BenchRow(
            "SFTP delivery 1M rows, default layout",
            full_rows / full,
            "rows/s",
            "COPY CSV -> asyncssh upload",
            raw_rate,
            ">= 0.5x",
        ),
        BenchRow(
            "SFTP delivery 1M rows, 20 cols + 6 custom",
            TOTAL_ROWS / wide,
            "rows/s",
            "render only, same layout",
            render_rate,
            ">= 0.75x",
        ),
        BenchRow("delivery process peak RSS, 100k rows", small_rss, "MiB", "", None, "< 200"),
        BenchRow(
            "delivery process peak RSS, 1M rows",
            full_rss,
            "MiB",
            "peak RSS at 100k rows",
            small_rss,
            "< 200, flat",
        ),
        BenchRow("delivery process peak RSS, 1M rows, 20 cols", wide_rss, "MiB", "", None, "< 200"),
        BenchRow(
            f"scheduler: {SCHEDULER_TASKS} tasks due at once, reserved + issued",
            scheduler,
            "s",
            "",
            None,
            "<= 5 s",
        ),
    ]


def main() -> int:
    """Entry point: the table."""
    print(format_table("delivery (PostgreSQL -> SFTP)", asyncio.run(run(resolve_admin_dsn()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

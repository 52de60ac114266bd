"""Scheduled delivery end to end, in-process: the task API, the scheduler's loop, the
delivery engine and a real SFTP server; files read back from disk, row by row."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest

from services.common.auth.client import credential_channel
from services.common.auth.model import Role
from services.common.gen.handoff.scheduler.v1 import (
    connections_pb2,
    connections_pb2_grpc,
    layouts_pb2,
    layouts_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
)
from services.common.layouts.defaults import DEFAULT_LAYOUT_VERSION
from services.delivery.engine import DeliveryEngine
from services.scheduler.tasks.runner import GrpcDeliveryJobs, TaskRunner
from services.scheduler.tasks.store import TaskStorePg
from tests.integration.access_support import make_engine, serve_everything
from tests.integration.credentials_support import authenticator, service_token
from tests.integration.layouts_support import create_account, insert_referrals, violations
from tests.integration.sftp_servers import (
    SFTP_PASSWORD,
    SFTP_USER,
    AsyncsshSftp,
    asyncssh_sftp,
    fingerprint,
)

if TYPE_CHECKING:
    from services.common.gen.handoff.scheduler.v1.connections_pb2_grpc import (
        ConnectionServiceAsyncStub,
    )
    from services.common.gen.handoff.scheduler.v1.layouts_pb2_grpc import LayoutServiceAsyncStub
    from services.common.gen.handoff.scheduler.v1.tasks_pb2_grpc import TaskServiceAsyncStub

pytestmark = pytest.mark.integration


@dataclass
class World:
    account: str
    campaign: str
    connections: ConnectionServiceAsyncStub
    tasks: TaskServiceAsyncStub
    layouts: LayoutServiceAsyncStub
    runner: TaskRunner
    engine: DeliveryEngine
    sftp: AsyncsshSftp
    pool: asyncpg.Pool

    @property
    def folder(self) -> Path:
        return self.sftp.root / "in"

    async def run(self) -> None:
        """One scheduler tick, then wait for the attempts it started."""
        await self.runner.tick()
        await self.engine.wait_idle()

    async def ingest(self, count: int, tag: str) -> list[str]:
        """Store referrals and wait until the safe watermark covers them (transactions of
        other databases on the shared server can hold it back for a moment)."""
        emails = [f"{tag}-{i}@example.com" for i in range(count)]
        await insert_referrals(
            self.pool, uuid.UUID(self.account), uuid.UUID(self.campaign),
            [{"email": e} for e in emails],
        )  # fmt: skip
        await self.settled()
        return emails

    async def settled(self) -> None:
        """Wait until the safe watermark covers every referral stored so far."""
        last = await self.pool.fetchval("SELECT coalesce(max(seq), 0) FROM referrals")
        async with asyncio.timeout(30):
            for _ in range(100_000):
                if await self.pool.fetchval("SELECT safe_referral_watermark()") >= last:
                    break
                await asyncio.sleep(0.02)


@pytest.fixture
async def world(pool: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[World]:
    (tmp_path / "in").mkdir()
    account, campaign = (str(x) for x in await create_account(pool))
    operator = await service_token(pool, Role.OPERATOR)
    scheduler = await service_token(pool, Role.SCHEDULER)
    engine = make_engine(pool)
    async with (
        asyncssh_sftp(tmp_path) as sftp,
        serve_everything(pool, authenticator(pool), engine) as server,
        credential_channel(f"127.0.0.1:{server.port}", operator) as channel,
        credential_channel(f"127.0.0.1:{server.port}", scheduler) as scheduler_channel,
    ):
        runner = TaskRunner(TaskStorePg(pool), GrpcDeliveryJobs(scheduler_channel), reissue_s=0.0)
        yield World(
            account, campaign, connections_pb2_grpc.ConnectionServiceStub(channel),
            tasks_pb2_grpc.TaskServiceStub(channel), layouts_pb2_grpc.LayoutServiceStub(channel),
            runner, engine, sftp, pool,
        )  # fmt: skip
        await engine.close()


async def _connection(world: World, **sftp: object) -> str:
    settings: dict[str, object] = {
        "host": "127.0.0.1", "port": world.sftp.port, "username": SFTP_USER,
        "host_key": fingerprint(world.sftp.host_key), "remote_dir": "/in",
        "password": SFTP_PASSWORD,
    }  # fmt: skip
    settings.update(sftp)
    created = await world.connections.CreateConnection(
        connections_pb2.CreateConnectionRequest(
            account_id=world.account,
            connection=connections_pb2.Connection(
                name=f"sftp-{uuid.uuid4().hex[:6]}",
                sftp=connections_pb2.SftpConnection(**settings),  # type: ignore[arg-type]
            ),
        )
    )
    return created.id


async def _task(world: World, connection_id: str, **fields: object) -> tasks_pb2.Task:
    task = tasks_pb2.Task(
        name=f"Daily {uuid.uuid4().hex[:4]}", connection_id=connection_id,
        schedule=tasks_pb2.Schedule(cron="0 6 * * *"), time_zone="Europe/London",
        **fields,  # type: ignore[arg-type]
    )  # fmt: skip
    return await world.tasks.CreateTask(
        tasks_pb2.CreateTaskRequest(account_id=world.account, task=task)
    )


def _csv_emails(path: Path) -> list[str]:
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    return [r["email"] for r in rows]


async def _now(world: World, task: tasks_pb2.Task) -> None:
    await world.tasks.RunTaskNow(tasks_pb2.RunTaskNowRequest(account_id=world.account, id=task.id))


async def _deliveries(world: World, task: tasks_pb2.Task) -> list[tasks_pb2.Delivery]:
    listed = await world.tasks.ListDeliveries(
        tasks_pb2.ListDeliveriesRequest(account_id=world.account, task_id=task.id)
    )
    return list(reversed(listed.deliveries))  # oldest first


async def test_each_run_sends_exactly_the_new_referrals_and_a_resend_the_same_bytes(
    world: World,
) -> None:
    before = await world.ingest(3, "before")  # before the task: not sent (no backfill)
    task = await _task(world, await _connection(world))
    first = await world.ingest(5, "first")
    preview = await world.tasks.PreviewNextRun(
        tasks_pb2.PreviewNextRunRequest(account_id=world.account, id=task.id)
    )
    assert (preview.referrals, preview.open_delivery) == (5, False)
    sample = list(csv.DictReader(io.StringIO(preview.sample.decode())))
    assert [r["email"] for r in sample] == first
    (lag,) = await world.runner.refresh_lags()
    assert (str(lag[0]), lag[2] > 0) == (task.id, True)  # the new referrals wait
    await _now(world, task)
    await world.run()
    (after,) = await world.runner.refresh_lags()
    assert after[2] == 0  # delivered: nothing waits
    second = await world.ingest(4, "second")
    await world.run()  # not due: nothing happens
    await _now(world, task)
    await world.run()

    done = await _deliveries(world, task)
    assert [d.state for d in done] == ["succeeded", "succeeded"]
    assert (done[0].layout_id, done[0].layout_version) == ("", DEFAULT_LAYOUT_VERSION)
    assert [d.rows for d in done] == [5, 4]
    files = [world.folder / Path(d.files[0].path).name for d in done]
    assert sorted(p.name for p in world.folder.iterdir()) == sorted(p.name for p in files)
    assert _csv_emails(files[0]) == first
    assert _csv_emails(files[1]) == second
    assert not set(before) & set(_csv_emails(files[0]) + _csv_emails(files[1]))
    for delivery, path in zip(done, files, strict=True):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == delivery.files[0].sha256
        assert delivery.range.through_seq > delivery.range.after_seq
    assert done[1].range.after_seq == done[0].range.through_seq  # no gap, no overlap
    refreshed = await world.tasks.GetTask(
        tasks_pb2.GetTaskRequest(account_id=world.account, id=task.id)
    )
    assert refreshed.delivered_seq == done[1].range.through_seq

    # A resend writes the same name with the same bytes, and moves no cursor.
    files[0].unlink()
    resend = await world.tasks.ResendDelivery(
        tasks_pb2.ResendDeliveryRequest(account_id=world.account, id=done[0].id)
    )
    assert resend.resend_of == done[0].id
    await world.run()
    again = await world.tasks.GetDelivery(
        tasks_pb2.GetDeliveryRequest(account_id=world.account, id=resend.id)
    )
    assert again.state == "succeeded"
    assert again.files[0].path == done[0].files[0].path
    assert again.files[0].sha256 == done[0].files[0].sha256
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == done[0].files[0].sha256
    still = await world.tasks.GetTask(
        tasks_pb2.GetTaskRequest(account_id=world.account, id=task.id)
    )
    assert still.delivered_seq == refreshed.delivered_seq


async def test_a_permanent_failure_needs_attention_and_the_fix_sends_the_same_range_first(
    world: World,
) -> None:
    connection = await _connection(world, password="wrong")
    task = await _task(world, connection)
    first = await world.ingest(3, "held")
    await _now(world, task)
    await world.run()
    (dead,) = await _deliveries(world, task)
    assert (dead.state, dead.diagnosis) == ("dead", "auth")
    stuck = await world.tasks.GetTask(
        tasks_pb2.GetTaskRequest(account_id=world.account, id=task.id)
    )
    assert "refused user" in stuck.attention
    events = await world.tasks.ListAttention(
        tasks_pb2.ListAttentionRequest(account_id=world.account)
    )
    assert [(e.task_id, e.diagnosis) for e in events.events] == [(task.id, "auth")]
    later = await world.ingest(2, "later")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _now(world, task)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION

    # Fix the password, resume: the dead range goes first, under its own name.
    current = await world.connections.GetConnection(
        connections_pb2.GetConnectionRequest(account_id=world.account, id=connection)
    )
    current.sftp.password = SFTP_PASSWORD
    await world.connections.UpdateConnection(
        connections_pb2.UpdateConnectionRequest(account_id=world.account, connection=current)
    )
    await world.tasks.ResumeTask(tasks_pb2.ResumeTaskRequest(account_id=world.account, id=task.id))
    await world.run()
    await _now(world, task)
    await world.run()
    revived, after = await _deliveries(world, task)
    assert revived.id == dead.id
    assert (revived.state, revived.rows, after.rows) == ("succeeded", 3, 2)
    assert _csv_emails(world.folder / Path(revived.files[0].path).name) == first
    assert _csv_emails(world.folder / Path(after.files[0].path).name) == later
    resolved = await world.tasks.ListAttention(
        tasks_pb2.ListAttentionRequest(account_id=world.account)
    )
    assert list(resolved.events) == []


async def test_a_retryable_failure_retries_the_same_range_until_it_arrives(
    world: World,
) -> None:
    connection = await _connection(world)
    task = await _task(world, connection)
    await world.ingest(2, "retry")
    world.sftp.server_class.cut_after = 10  # the server drops the first attempt mid-upload
    await _now(world, task)
    await world.run()
    (waiting,) = await _deliveries(world, task)
    assert (waiting.state, waiting.diagnosis, waiting.attempts) == (
        "retrying",
        "connection_lost",
        1,
    )
    # Nothing under a final name; the partial file is the retry's own temporary name.
    assert [p.name for p in world.folder.iterdir() if not p.name.endswith(".handoff-part")] == []
    world.sftp.server_class.cut_after = None
    await asyncio.sleep(0.1)  # past the backoff (50 ms in tests)
    await world.run()
    (done,) = await _deliveries(world, task)
    assert (done.state, done.attempts, done.rows) == ("succeeded", 2, 2)
    assert [p.name for p in world.folder.iterdir()] == [Path(done.files[0].path).name]


async def test_parts_and_manifests(world: World) -> None:
    task = await _task(world, await _connection(world, max_rows_per_file=4, manifest=True))
    emails = await world.ingest(10, "part")
    await _now(world, task)
    await world.run()
    (done,) = await _deliveries(world, task)
    assert [f.rows for f in done.files] == [4, 4, 2]
    names = [Path(f.path).name for f in done.files]
    assert all("_part000" in n for n in names)
    assert [e for n in names for e in _csv_emails(world.folder / n)] == emails
    for f in done.files:
        meta = json.loads((world.folder / f"{Path(f.path).name}.manifest.json").read_text())
        assert (meta["rows"], meta["sha256"], meta["bytes"]) == (f.rows, f.sha256, f.bytes)


async def test_bad_tasks_are_refused_naming_the_field(world: World, pool: asyncpg.Pool) -> None:
    connection = await _connection(world)
    other_account, other_campaign = await create_account(pool)
    cases: list[tuple[dict[str, object], tuple[str, str]]] = [
        (
            {"schedule": tasks_pb2.Schedule(cron="61 * * * *")},
            ("task.schedule.cron", "INVALID_FORMAT"),
        ),
        ({"time_zone": "Mars/Olympus"}, ("task.time_zone", "UNKNOWN_CODE")),
        ({"campaign_ids": [str(other_campaign)]}, ("task.campaign_ids[0]", "NOT_FOUND")),
        ({"layout_id": str(uuid.uuid4())}, ("task.layout_id", "NOT_FOUND")),
        (
            {"schedule": tasks_pb2.Schedule(every_seconds=5)},
            ("task.schedule.every_seconds", "INVALID_FORMAT"),
        ),
    ]
    for fields, violation in cases:
        values: dict[str, object] = {
            "name": "Bad", "connection_id": connection,
            "schedule": tasks_pb2.Schedule(cron="0 6 * * *"),
        }  # fmt: skip
        values.update(fields)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await world.tasks.CreateTask(
                tasks_pb2.CreateTaskRequest(account_id=world.account, task=tasks_pb2.Task(**values))  # type: ignore[arg-type]
            )
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, violation
        assert violation in violations(caught.value), violations(caught.value)
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 0
    del other_account
    # A connection in use cannot be deleted: the error names the task.
    task = await _task(world, connection)
    with pytest.raises(grpc.aio.AioRpcError) as used:
        await world.connections.DeleteConnection(
            connections_pb2.DeleteConnectionRequest(account_id=world.account, id=connection)
        )
    assert used.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert task.name in (used.value.details() or "")


async def test_a_layout_a_task_delivers_with_cannot_be_deleted(world: World) -> None:
    layout = await world.layouts.CreateLayout(
        layouts_pb2.CreateLayoutRequest(
            account_id=world.account,
            layout=layouts_pb2.Layout(
                name="Short", columns=[layouts_pb2.Column(header="Email", field="email")]
            ),
        )
    )
    task = await _task(world, await _connection(world), layout_id=layout.id)
    emails = await world.ingest(2, "short")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await world.layouts.DeleteLayout(
            layouts_pb2.DeleteLayoutRequest(account_id=world.account, id=layout.id)
        )
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert task.name in (caught.value.details() or "")
    await _now(world, task)
    await world.run()
    (done,) = await _deliveries(world, task)
    path = world.folder / Path(done.files[0].path).name
    assert path.read_text().splitlines() == ["Email", *emails]
    assert (done.layout_id, done.layout_version) == (layout.id, 1)

    # An update makes version 2 and keeps version 1; a resend still renders version 1.
    changed = layouts_pb2.Layout(
        id=layout.id, name="Short",
        columns=[layouts_pb2.Column(header="Email", field="email"),
                 layouts_pb2.Column(header="City", field="city")],
    )  # fmt: skip
    updated = await world.layouts.UpdateLayout(
        layouts_pb2.UpdateLayoutRequest(account_id=world.account, layout=changed)
    )
    assert updated.version == 2
    kept = await world.pool.fetch(
        "SELECT version FROM layout_versions WHERE layout_id = $1 ORDER BY version",
        uuid.UUID(layout.id),
    )
    assert [r["version"] for r in kept] == [1, 2]
    resend = await world.tasks.ResendDelivery(
        tasks_pb2.ResendDeliveryRequest(account_id=world.account, id=done.id)
    )
    await world.run()
    again = await world.tasks.GetDelivery(
        tasks_pb2.GetDeliveryRequest(account_id=world.account, id=resend.id)
    )
    assert (again.state, again.layout_version) == ("succeeded", 1)
    assert again.files[0].sha256 == done.files[0].sha256
    assert path.read_text().splitlines() == ["Email", *emails]


async def test_a_time_frame_is_sent_again_without_moving_the_cursor(world: World) -> None:
    task = await _task(world, await _connection(world))
    base = datetime(2026, 11, 2, tzinfo=UTC)
    tagged = []
    for day in range(4):
        emails = [f"d{day}-{i}@example.com" for i in range(2)]
        await insert_referrals(
            world.pool, uuid.UUID(world.account), uuid.UUID(world.campaign),
            [{"email": e, "opted_in_at": base + timedelta(days=day)} for e in emails],
        )  # fmt: skip
        tagged.append(emails)
    await world.settled()
    await _now(world, task)
    await world.run()
    cursor = (
        await world.tasks.GetTask(tasks_pb2.GetTaskRequest(account_id=world.account, id=task.id))
    ).delivered_seq

    request = tasks_pb2.RedeliverTimeFrameRequest(
        account_id=world.account, task_id=task.id, by=tasks_pb2.OPTED_IN_AT
    )
    getattr(request, "from").FromDatetime(base + timedelta(days=1))
    request.to.FromDatetime(base + timedelta(days=3))
    again = await world.tasks.RedeliverTimeFrame(request)
    assert again.purpose == "redeliver"
    await world.run()
    done = await world.tasks.GetDelivery(
        tasks_pb2.GetDeliveryRequest(account_id=world.account, id=again.id)
    )
    assert (done.state, done.rows) == ("succeeded", 4)
    assert _csv_emails(world.folder / Path(done.files[0].path).name) == tagged[1] + tagged[2]
    after = await world.tasks.GetTask(
        tasks_pb2.GetTaskRequest(account_id=world.account, id=task.id)
    )
    assert after.delivered_seq == cursor

    backwards = tasks_pb2.RedeliverTimeFrameRequest(account_id=world.account, task_id=task.id)
    getattr(backwards, "from").FromDatetime(base)
    backwards.to.FromDatetime(base - timedelta(days=1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await world.tasks.RedeliverTimeFrame(backwards)
    assert violations(caught.value) == [("to", "OUT_OF_RANGE")]


def _gpg_key(home: Path) -> str:
    home.mkdir(mode=0o700)
    run = ["gpg", "--homedir", str(home), "--batch", "--passphrase", ""]
    subprocess.run(
        [*run, "--quick-gen-key", "Acme <data@acme.example>", "default", "default", "never"],
        check=True,
        capture_output=True,
    )
    exported = subprocess.run(
        ["gpg", "--homedir", str(home), "--armor", "--export"], check=True, capture_output=True
    )
    return exported.stdout.decode()


def _decrypt(home: Path, path: Path) -> str:
    done = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--decrypt", str(path)],
        check=True, capture_output=True,
    )  # fmt: skip
    return done.stdout.decode()


@pytest.mark.skipif(shutil.which("gpg") is None, reason="needs GnuPG")
async def test_files_are_encrypted_to_the_advertisers_key_and_a_resend_says_why_it_cannot(
    world: World, tmp_path: Path
) -> None:
    key = _gpg_key(tmp_path / "advertiser")
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await _connection(world, pgp_public_key="-----BEGIN PGP PUBLIC KEY BLOCK-----\nnope\n")
    assert violations(bad.value) == [("connection.sftp.pgp_public_key", "INVALID_FORMAT")]
    connection = await _connection(world, pgp_public_key=key)
    saved = await world.connections.GetConnection(
        connections_pb2.GetConnectionRequest(account_id=world.account, id=connection)
    )
    assert len(saved.sftp.pgp_fingerprint) == 40
    task = await _task(world, connection)
    emails = await world.ingest(3, "secret")
    await _now(world, task)
    await world.run()
    (done,) = await _deliveries(world, task)
    path = world.folder / Path(done.files[0].path).name
    assert path.name.endswith(".csv.gpg")
    assert b"secret-0@example.com" not in path.read_bytes()
    plain = _decrypt(tmp_path / "advertiser", path)
    assert [r["email"] for r in csv.DictReader(io.StringIO(plain))] == emails
    with pytest.raises(grpc.aio.AioRpcError) as resend:
        await world.tasks.ResendDelivery(
            tasks_pb2.ResendDeliveryRequest(account_id=world.account, id=done.id)
        )
    assert resend.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "session key" in (resend.value.details() or "")


async def test_a_backfill_sends_what_came_before_and_send_empty_sends_a_header_only_file(
    world: World,
) -> None:
    old = await world.ingest(3, "old")
    since = datetime.now(UTC) - timedelta(hours=1)
    backfill = tasks_pb2.Task(
        name="Backfill", connection_id=await _connection(world),
        schedule=tasks_pb2.Schedule(cron="0 6 * * *"), send_empty=True,
    )  # fmt: skip
    backfill.backfill_from.FromDatetime(since)
    task = await world.tasks.CreateTask(
        tasks_pb2.CreateTaskRequest(account_id=world.account, task=backfill)
    )
    await _now(world, task)
    await world.run()
    await _now(world, task)  # nothing new: a header-only file, as asked
    await world.run()
    first, empty = await _deliveries(world, task)
    assert _csv_emails(world.folder / Path(first.files[0].path).name) == old
    assert empty.rows == 0
    header = (world.folder / Path(empty.files[0].path).name).read_text()
    assert header.startswith("email,")
    assert header.count("\n") == 1


async def test_another_account_s_referrals_make_no_file_and_the_cursor_moves_over_them(
    world: World,
) -> None:
    task = await _task(world, await _connection(world))
    other_account, other_campaign = await create_account(world.pool)
    await insert_referrals(world.pool, other_account, other_campaign, [{"email": "x@example.com"}])
    await world.settled()
    await _now(world, task)
    await world.run()
    assert await _deliveries(world, task) == []  # nothing of its own: no (empty) file
    assert list(world.folder.iterdir()) == []
    moved = await world.tasks.GetTask(
        tasks_pb2.GetTaskRequest(account_id=world.account, id=task.id)
    )
    assert moved.delivered_seq >= await world.pool.fetchval("SELECT max(seq) FROM referrals")
    mine = await world.ingest(2, "mine")
    await _now(world, task)
    await world.run()
    (delivery,) = await _deliveries(world, task)
    assert delivery.rows == 2
    assert _csv_emails(world.folder / Path(delivery.files[0].path).name) == mine

"""Sailthru connections through the connection API and scheduled deliveries through the
engine, against the Sailthru fake: what its list holds, referral by referral, and what
Handoff recorded about each delivery."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest

from services.common.auth.client import credential_channel
from services.common.auth.model import Role
from services.common.gen.handoff.scheduler.v1 import (
    connections_pb2,
    connections_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
)
from services.delivery.engine import TRANSPORTS, DeliveryEngine, RetryPolicy
from services.delivery.spool import Spool
from services.delivery.transports.sailthru.client import JobPolling
from services.delivery.transports.sailthru.transport import sailthru_transport_factory
from services.scheduler.tasks.runner import GrpcDeliveryJobs, TaskRunner
from services.scheduler.tasks.store import TaskStorePg
from tests.fakes.sailthru import FakeSailthru, sailthru_fake
from tests.integration.access_support import QUICK_RETRY, make_engine, serve_everything
from tests.integration.credentials_support import authenticator, service_token
from tests.integration.layouts_support import create_account, insert_referrals, violations
from tests.integration.test_export_referrals import settled

if TYPE_CHECKING:
    from services.common.gen.handoff.scheduler.v1.connections_pb2_grpc import (
        ConnectionServiceAsyncStub,
    )
    from services.common.gen.handoff.scheduler.v1.tasks_pb2_grpc import TaskServiceAsyncStub

pytestmark = pytest.mark.integration
FAST = JobPolling(first_s=0.01, factor=2.0, max_s=0.05, deadline_s=10.0)


@dataclass
class Setup:
    account: str
    campaign: str
    connections: ConnectionServiceAsyncStub
    tasks: TaskServiceAsyncStub
    runner: TaskRunner
    engine: DeliveryEngine
    fake: FakeSailthru
    pool: asyncpg.Pool

    async def ingest(self, emails: list[str]) -> None:
        await insert_referrals(
            self.pool, uuid.UUID(self.account), uuid.UUID(self.campaign),
            [{"email": e, "first_name": e.split("@")[0].title()} for e in emails],
        )  # fmt: skip
        await settled(self.pool)

    def message(self, **overrides: Any) -> connections_pb2.Connection:
        fields: dict[str, Any] = {
            "mode": "scheduled", "list_name": "Referrals", "base_url": self.fake.url,
            "api_key": self.fake.api_key, "api_secret": self.fake.secret,
        }  # fmt: skip
        fields.update(overrides)
        return connections_pb2.Connection(
            name=f"sailthru-{uuid.uuid4().hex[:6]}",
            sailthru=connections_pb2.SailthruConnection(**fields),
        )

    async def connection(self, **overrides: Any) -> str:
        created = await self.connections.CreateConnection(
            connections_pb2.CreateConnectionRequest(
                account_id=self.account, connection=self.message(**overrides)
            )
        )
        return created.id

    async def task(self, connection: str) -> tasks_pb2.Task:
        return await self.tasks.CreateTask(
            tasks_pb2.CreateTaskRequest(
                account_id=self.account,
                task=tasks_pb2.Task(
                    name=f"Sailthru {uuid.uuid4().hex[:4]}", connection_id=connection,
                    schedule=tasks_pb2.Schedule(cron="0 6 * * *"), time_zone="UTC",
                ),
            )
        )  # fmt: skip

    async def run_now(self, task: tasks_pb2.Task) -> list[tasks_pb2.Delivery]:
        await self.tasks.RunTaskNow(
            tasks_pb2.RunTaskNowRequest(account_id=self.account, id=task.id)
        )
        await self.runner.tick()
        await self.engine.wait_idle()
        listed = await self.tasks.ListDeliveries(
            tasks_pb2.ListDeliveriesRequest(account_id=self.account, task_id=task.id)
        )
        return list(reversed(listed.deliveries))


@pytest.fixture
async def setup(pool: asyncpg.Pool, request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    retry: RetryPolicy = getattr(request, "param", QUICK_RETRY)
    account, campaign = (str(x) for x in await create_account(pool))
    operator = await service_token(pool, Role.OPERATOR)
    scheduler = await service_token(pool, Role.SCHEDULER)
    sailthru = sailthru_transport_factory(Spool(), FAST)
    engine = make_engine(pool, transports={**TRANSPORTS, "sailthru": sailthru}, retry=retry)
    async with (
        sailthru_fake() as fake,
        serve_everything(pool, authenticator(pool), engine) as server,
        credential_channel(f"127.0.0.1:{server.port}", operator) as channel,
        credential_channel(f"127.0.0.1:{server.port}", scheduler) as jobs,
    ):
        runner = TaskRunner(TaskStorePg(pool), GrpcDeliveryJobs(jobs), reissue_s=0.0)
        yield Setup(
            account, campaign, connections_pb2_grpc.ConnectionServiceStub(channel),
            tasks_pb2_grpc.TaskServiceStub(channel), runner, engine, fake, pool,
        )  # fmt: skip
        await engine.close()


async def test_each_delivery_is_an_import_job_and_the_list_holds_every_referral(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    connection = await setup.connection()
    task = await setup.task(connection)
    first = [f"ann{i}@example.com" for i in range(5)]
    await setup.ingest(first)
    (done,) = await setup.run_now(task)
    assert (done.state, done.rows) == ("succeeded", 5)
    assert set(setup.fake.members["Referrals"]) == set(first)
    for email in first:
        profile = setup.fake.profiles[email]
        assert profile.lists == {"Referrals": 1}
        assert profile.vars["first_name"] == email.split("@")[0].title()
    (job,) = setup.fake.jobs.values()
    files = await setup.pool.fetchval(
        "SELECT files FROM deliveries WHERE id = $1", uuid.UUID(done.id)
    )
    assert files[0]["remote"] == {
        "job_id": job.job_id, "status": "completed", "imported": 5, "invalid": 0, "total": 5
    }  # fmt: skip
    assert files[0]["path"] == f"sailthru:Referrals/job/{job.job_id}"
    # The next run imports only what is new.
    await setup.ingest(["bob@example.com"])
    deliveries = await setup.run_now(task)
    assert [d.rows for d in deliveries] == [5, 1]
    assert setup.fake.jobs[max(setup.fake.jobs)].csv_text.count("@") == 1
    # Secrets are in no answer, no record, no log.
    got = await setup.connections.GetConnection(
        connections_pb2.GetConnectionRequest(account_id=setup.account, id=connection)
    )
    assert list(got.sailthru.secrets_set) == ["api_key", "api_secret"]
    assert (got.sailthru.api_key, got.sailthru.api_secret) == ("", "")
    stored = await setup.pool.fetchval(
        "SELECT secrets::text FROM connections WHERE id = $1", uuid.UUID(connection)
    )
    rows = await setup.pool.fetch("SELECT * FROM deliveries WHERE task_id = $1", uuid.UUID(task.id))
    for secret in (setup.fake.api_key, setup.fake.secret):
        assert secret not in stored
        assert secret not in caplog.text
        assert all(secret not in str(dict(r)) for r in rows)


async def test_a_job_ending_in_error_retries_and_then_succeeds(setup: Setup) -> None:
    connection = await setup.connection()
    task = await setup.task(connection)
    await setup.ingest(["ann@example.com", "bob@example.com"])
    setup.fake.fail_jobs_with = "temporarily unable to import"
    (failed,) = await setup.run_now(task)
    assert failed.state == "retrying"
    assert "ended in error: temporarily unable to import" in failed.error
    assert setup.fake.members == {}
    setup.fake.fail_jobs_with = ""
    await asyncio.sleep(0.1)  # past the quick retry's backoff
    await setup.runner.tick()
    await setup.engine.wait_idle()
    listed = await setup.tasks.ListDeliveries(
        tasks_pb2.ListDeliveriesRequest(account_id=setup.account, task_id=task.id)
    )
    assert [d.state for d in listed.deliveries] == ["succeeded"]
    assert set(setup.fake.members["Referrals"]) == {"ann@example.com", "bob@example.com"}


@pytest.mark.parametrize(
    "setup", [RetryPolicy(first_s=0.05, factor=1.0, max_s=0.05, window_s=0.0)], indirect=True
)
async def test_a_job_still_failing_after_the_window_is_dead_and_the_task_needs_attention(
    setup: Setup,
) -> None:
    setup.fake.fail_jobs_with = "the file could not be parsed"
    task = await setup.task(await setup.connection())
    await setup.ingest(["ann@example.com"])
    (dead,) = await setup.run_now(task)
    assert dead.state == "dead"
    got = await setup.tasks.GetTask(tasks_pb2.GetTaskRequest(account_id=setup.account, id=task.id))
    assert "the file could not be parsed" in got.attention


async def test_a_wrong_secret_is_dead_at_once_naming_the_signature(setup: Setup) -> None:
    task = await setup.task(await setup.connection(api_secret="not-the-secret"))
    await setup.ingest(["ann@example.com"])
    (dead,) = await setup.run_now(task)
    assert dead.state == "dead"
    assert "signature" in dead.error
    assert setup.fake.jobs == {}


async def test_test_call_proves_key_secret_and_list(setup: Setup) -> None:
    good = await setup.connection()
    answer = await setup.connections.TestConnection(
        connections_pb2.TestConnectionRequest(account_id=setup.account, id=good)
    )
    assert answer.ok, answer.message
    wrong = await setup.connections.TestConnection(
        connections_pb2.TestConnectionRequest(
            account_id=setup.account, draft=setup.message(api_secret="wrong")
        )
    )
    assert (wrong.ok, wrong.diagnosis) == (False, "auth")
    missing = await setup.connections.TestConnection(
        connections_pb2.TestConnectionRequest(
            account_id=setup.account, draft=setup.message(list_name="Nope")
        )
    )
    assert (missing.ok, missing.diagnosis) == (False, "config")
    # The wrong signature was refused before anything was read.
    assert [r.endpoint for r in setup.fake.received] == ["list", "list"]


async def test_bad_settings_are_refused_field_by_field(setup: Setup) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await setup.connections.CreateConnection(
            connections_pb2.CreateConnectionRequest(
                account_id=setup.account,
                connection=setup.message(
                    list_name="", api_secret="", mode="sometimes",
                    base_url="http://api.sailthru.com", var_types={"Age": "integer"},
                ),
            )
        )  # fmt: skip
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(refused.value)) >= {
        ("connection.sailthru.list_name", "REQUIRED"),
        ("connection.sailthru.api_secret", "REQUIRED"),
        ("connection.sailthru.mode", "UNKNOWN_CODE"),
        ("connection.sailthru.base_url", "INSECURE"),
        ("connection.sailthru.var_types.Age", "UNKNOWN_CODE"),
    }


async def test_a_task_on_a_real_time_connection_is_dead_saying_to_switch_the_mode(
    setup: Setup,
) -> None:
    task = await setup.task(await setup.connection(mode="realtime"))
    await setup.ingest(["ann@example.com"])
    (dead,) = await setup.run_now(task)
    assert dead.state == "dead"
    assert "set its mode to scheduled" in dead.error
    assert setup.fake.received == []

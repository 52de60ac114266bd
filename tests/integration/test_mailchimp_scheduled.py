"""Mailchimp in scheduled deliveries, end to end in-process: the connection and task
APIs, the scheduler's loop, the delivery engine and the fake — members checked one by
one, batches of at most 500, per-member errors recorded per referral, a retry item
resending the range idempotently, throttling backed off, a revoked key dead with
attention; and the connection test call's diagnoses."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest

from services.common.auth.client import credential_channel
from services.common.auth.model import Role
from services.common.gen.handoff.scheduler.v1 import (
    connections_pb2,
    connections_pb2_grpc,
    live_pb2,
    live_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
)
from services.delivery.engine import DeliveryEngine
from services.delivery.key_slots import KeySlots
from services.delivery.store import DeliveryStorePg
from services.delivery.transports.base import PermanentError
from services.delivery.transports.mailchimp.batch import member_reader, read_members
from services.scheduler.tasks.runner import GrpcDeliveryJobs, TaskRunner
from services.scheduler.tasks.store import TaskStorePg
from tests.fakes.mailchimp import Mailchimp, mailchimp_fake
from tests.integration.access_support import LOOPBACK, serve_everything
from tests.integration.credentials_support import authenticator, service_token
from tests.integration.layouts_support import create_account, insert_referrals, violations
from tests.integration.live_support import eventually, notify
from tests.integration.mailchimp_support import (
    KEY,
    LIST,
    MAPPING,
    mailchimp_engine,
    replica,
    settings,
)

if TYPE_CHECKING:
    from services.common.gen.handoff.scheduler.v1.connections_pb2_grpc import (
        ConnectionServiceAsyncStub,
    )
    from services.common.gen.handoff.scheduler.v1.live_pb2_grpc import (
        LiveDeliveryServiceAsyncStub,
    )
    from services.common.gen.handoff.scheduler.v1.tasks_pb2_grpc import TaskServiceAsyncStub

pytestmark = pytest.mark.integration


@dataclass
class World:
    account: str
    campaign: str
    connections: ConnectionServiceAsyncStub
    tasks: TaskServiceAsyncStub
    runner: TaskRunner
    engine: DeliveryEngine
    fake: Mailchimp
    pool: asyncpg.Pool
    live: LiveDeliveryServiceAsyncStub

    async def run(self) -> None:
        await self.runner.tick()
        await self.engine.wait_idle()

    async def ingest(self, rows: list[dict[str, object]]) -> list[int]:
        seqs = await insert_referrals(
            self.pool, uuid.UUID(self.account), uuid.UUID(self.campaign), rows
        )

        async def covered() -> bool:
            watermark = await self.pool.fetchval("SELECT safe_referral_watermark()")
            return bool(watermark >= seqs[-1])

        await eventually(covered)
        return seqs

    def connection(self, key: str = KEY, **values: object) -> connections_pb2.Connection:
        fields: dict[str, object] = {
            "list_id": LIST, "merge_fields": MAPPING, "tags": ["handoff"],
            "base_url": self.fake.base_url, "api_key": key,
        }  # fmt: skip
        fields.update(values)
        return connections_pb2.Connection(
            name=f"mailchimp-{uuid.uuid4().hex[:6]}",
            mailchimp=connections_pb2.MailchimpConnection(**fields),  # type: ignore[arg-type]
        )

    async def task(self, key: str = KEY, **values: object) -> tasks_pb2.Task:
        created = await self.connections.CreateConnection(
            connections_pb2.CreateConnectionRequest(
                account_id=self.account, connection=self.connection(key, **values)
            )
        )
        task = tasks_pb2.Task(
            name=f"Nightly {uuid.uuid4().hex[:4]}", connection_id=created.id,
            schedule=tasks_pb2.Schedule(cron="0 6 * * *"), time_zone="UTC",
        )  # fmt: skip
        return await self.tasks.CreateTask(
            tasks_pb2.CreateTaskRequest(account_id=self.account, task=task)
        )

    async def now(self, task: tasks_pb2.Task) -> None:
        await self.tasks.RunTaskNow(
            tasks_pb2.RunTaskNowRequest(account_id=self.account, id=task.id)
        )
        await self.run()

    async def deliveries(self, task: tasks_pb2.Task) -> list[tasks_pb2.Delivery]:
        listed = await self.tasks.ListDeliveries(
            tasks_pb2.ListDeliveriesRequest(account_id=self.account, task_id=task.id)
        )
        return list(reversed(listed.deliveries))


@pytest.fixture
async def world(pool: asyncpg.Pool) -> AsyncIterator[World]:
    account, campaign = (str(x) for x in await create_account(pool))
    operator = await service_token(pool, Role.OPERATOR)
    scheduler = await service_token(pool, Role.SCHEDULER)
    slots = KeySlots(pool, "test-replica")
    engine = mailchimp_engine(pool, slots)
    async with (
        mailchimp_fake() as fake,
        serve_everything(pool, authenticator(pool), engine) as server,
        credential_channel(f"127.0.0.1:{server.port}", operator) as channel,
        credential_channel(f"127.0.0.1:{server.port}", scheduler) as scheduler_channel,
    ):
        fake.add_key(KEY)
        fake.add_list(LIST)
        runner = TaskRunner(TaskStorePg(pool), GrpcDeliveryJobs(scheduler_channel), reissue_s=0.0)
        yield World(
            account, campaign, connections_pb2_grpc.ConnectionServiceStub(channel),
            tasks_pb2_grpc.TaskServiceStub(channel), runner, engine, fake, pool,
            live_pb2_grpc.LiveDeliveryServiceStub(channel),
        )  # fmt: skip
        await engine.close()
    await slots.close()


async def test_batches_of_500_every_member_and_each_refusal_recorded(world: World) -> None:
    task = await world.task()
    rows: list[dict[str, object]] = [
        {"email": f"m{i}@example.com", "first_name": f"F{i}", "last_name": ""} for i in range(1_203)
    ]
    rows[10] = {"email": ""}  # unusable: rejected without a call
    rows[700] = {"email": "bot@spam.invalid"}  # the fake calls it fake: a per-member error
    seqs = await world.ingest(rows)
    await world.now(task)

    (done,) = await world.deliveries(task)
    assert (done.state, done.rows) == ("succeeded", 1_201)
    assert world.fake.calls["POST /lists/{id}"] == 3  # 500 + 500 + 201, never more than 500
    members = world.fake.lists[LIST].members
    assert len(members) == 1_201
    for i, row in enumerate(rows):
        if i in (10, 700):
            continue
        member = world.fake.member(LIST, str(row["email"]))
        assert member is not None, row
        # An empty value is left out: it never erases what the audience holds.
        assert member["merge_fields"] == {"FNAME": f"F{i}"}
        assert (member["status"], member["tags"]) == ("subscribed", ["handoff"])
    items = await DeliveryStorePg(world.pool).items(uuid.UUID(done.id))
    assert [(seq, outcome) for seq, outcome, _ in items] == [
        (seqs[10], "rejected"), (seqs[700], "rejected"),
    ]  # fmt: skip
    assert "no usable email" in items[0][2]
    assert "ERROR_GENERIC" in items[1][2]
    assert "looks fake or invalid" in items[1][2]


async def test_a_member_to_try_again_retries_the_delivery_and_the_resend_is_idempotent(
    world: World,
) -> None:
    task = await world.task()
    emails = [f"r{i}@example.com" for i in range(20)]
    await world.ingest([{"email": e} for e in emails])
    world.fake.flaky["r3@example.com"] = 1  # "please try again", once
    await world.now(task)
    (first,) = await world.deliveries(task)
    assert first.state == "retrying"
    assert "1 referral(s) will be tried again" in first.error
    assert world.fake.member(LIST, "r3@example.com") is None
    await asyncio.sleep(0.1)  # the quick retry policy's delay
    await world.run()
    (done,) = await world.deliveries(task)
    assert (done.state, done.attempts, done.rows) == ("succeeded", 2, 20)
    assert len(world.fake.lists[LIST].members) == 20
    # The resend updated the others (an upsert), it made no second member.
    assert world.fake.member(LIST, "r0@example.com")["updates"] == 1  # type: ignore[index]
    assert world.fake.member(LIST, "r3@example.com")["updates"] == 0  # type: ignore[index]
    assert await DeliveryStorePg(world.pool).items(uuid.UUID(done.id)) == []


async def test_throttling_backs_off_inside_the_attempt(world: World) -> None:
    task = await world.task()
    await world.ingest([{"email": f"b{i}@example.com"} for i in range(3)])
    world.fake.answers = ["429", "403"]  # a 429, then a bare 403: slow down, twice
    await world.now(task)
    (done,) = await world.deliveries(task)
    assert (done.state, done.attempts, done.rows) == ("succeeded", 1, 3)
    assert world.fake.calls["POST /lists/{id}"] == 1  # the two throttled calls were refused
    assert len(world.fake.lists[LIST].members) == 3


async def test_a_revoked_key_is_dead_at_once_and_the_task_needs_attention(world: World) -> None:
    task = await world.task()
    await world.ingest([{"email": "x@example.com"}])
    world.fake.revoked.add(KEY)
    await world.now(task)
    (done,) = await world.deliveries(task)
    assert (done.state, done.diagnosis) == ("dead", "auth")
    assert "API Key Invalid" in done.error
    assert KEY not in done.error
    got = await world.tasks.GetTask(tasks_pb2.GetTaskRequest(account_id=world.account, id=task.id))
    assert "API Key Invalid" in got.attention


async def test_a_mapped_column_the_tasks_layout_lacks_is_dead_before_any_call(
    world: World,
) -> None:
    task = await world.task(merge_fields={**MAPPING, "nickname": "NICK"})
    await world.ingest([{"email": "n@example.com"}])
    await world.now(task)
    (done,) = await world.deliveries(task)
    assert (done.state, done.diagnosis) == ("dead", "config")
    assert "no column nickname" in done.error
    assert world.fake.calls["POST /lists/{id}"] == 0


async def test_the_connection_api_validates_and_the_test_call_diagnoses(world: World) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await world.connections.CreateConnection(
            connections_pb2.CreateConnectionRequest(
                account_id=world.account,
                connection=world.connection(
                    key="nodatacentre",
                    merge_fields={"email": "EMAIL", "mobile": "EMAIL", "city": "city!"},
                    status_if_new="maybe",
                ),
            )
        )
    assert sorted(violations(refused.value)) == [
        ("connection.mailchimp.api_key", "INVALID_FORMAT"),
        ("connection.mailchimp.merge_fields", "DUPLICATE"),
        ("connection.mailchimp.merge_fields.city", "INVALID_FORMAT"),
        ("connection.mailchimp.status_if_new", "UNKNOWN_CODE"),
    ]
    created = await world.connections.CreateConnection(
        connections_pb2.CreateConnectionRequest(
            account_id=world.account, connection=world.connection()
        )
    )
    assert created.mailchimp.api_key == ""  # never returned
    assert created.mailchimp.api_key_set
    assert created.mailchimp.merge_fields == MAPPING

    async def test(**values: object) -> connections_pb2.TestConnectionResponse:
        return await world.connections.TestConnection(
            connections_pb2.TestConnectionRequest(
                account_id=world.account,
                draft=world.connection(**values),  # type: ignore[arg-type]
            )
        )

    ok = await world.connections.TestConnection(
        connections_pb2.TestConnectionRequest(account_id=world.account, id=created.id)
    )
    assert ok.ok, ok.message
    assert any("us7" in s for s in ok.steps)
    other_dc = "0123456789abcdef0123456789abcdef-us9"  # a key of another data centre
    assert (await test(key=other_dc)).diagnosis == "auth"
    assert (await test(list_id="nosuchlist")).diagnosis == "missing"
    unknown = await test(merge_fields={"email": "EMAIL", "city": "CITY"})
    assert (unknown.ok, unknown.diagnosis) == (False, "config")
    assert "CITY" in unknown.message
    world.fake.disabled.add(KEY)
    disabled = await test()
    assert (disabled.diagnosis, "User Disabled" in disabled.message) == ("auth", True)


async def test_members_are_read_back_a_page_at_a_time(world: World) -> None:
    audience = world.fake.lists[LIST]
    for i in range(2_345):
        email = f"a{i}@example.com"
        audience.members[f"h{i}"] = {
            "email_address": email, "status": "unsubscribed" if i % 10 == 0 else "subscribed",
            "merge_fields": {"FNAME": "x" * 50}, "tags": [],
        }  # fmt: skip
    config = settings(world.fake)
    slots = KeySlots(world.pool, "reader")
    read = member_reader(slots)  # as the audience sources call it: stored settings
    pages = [p async for p in read(config.to_json(), {"api_key": KEY}, LOOPBACK)]
    await slots.close()
    assert [len(p) for p in pages] == [1000, 1000, 345]
    got = [m for p in pages for m in p]
    assert got[:2] == [("a0@example.com", "unsubscribed"), ("a1@example.com", "subscribed")]
    assert len({e for e, _ in got}) == 2_345
    world.fake.revoked.add(KEY)
    with pytest.raises(PermanentError, match="API Key Invalid"):
        async for _ in read_members(config, {"api_key": KEY}, LOOPBACK):
            pass


async def test_a_realtime_connection_has_live_state_and_enable_live_resumes_it(
    world: World,
) -> None:
    scheduled = await world.connections.CreateConnection(
        connections_pb2.CreateConnectionRequest(
            account_id=world.account, connection=world.connection()
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await world.live.GetLiveState(
            live_pb2.GetLiveStateRequest(account_id=world.account, connection_id=scheduled.id)
        )
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    created = await world.connections.CreateConnection(
        connections_pb2.CreateConnectionRequest(
            account_id=world.account,
            connection=world.connection(
                realtime=True, live=connections_pb2.LiveOptions(retry_schedule_s=[0.05] * 5)
            ),
        )
    )
    ids = {"account_id": world.account, "connection_id": created.id}
    world.fake.revoked.add(KEY)
    async with replica(world.pool):
        await world.ingest([{"email": "late@example.com"}])
        await notify(world.pool)

        async def disabled() -> bool:
            state = await world.live.GetLiveState(live_pb2.GetLiveStateRequest(**ids))
            return state.disabled

        await eventually(disabled)
        world.fake.revoked.discard(KEY)  # the key fixed in Mailchimp
        enabled = await world.live.EnableLive(live_pb2.EnableLiveRequest(**ids))
        assert not enabled.disabled
        await eventually(lambda: world.fake.member(LIST, "late@example.com") is not None)
    assert world.fake.calls["POST /lists/{id}"] == 0  # real time: one PUT per member

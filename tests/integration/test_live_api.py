"""The live-delivery API over gRPC: an endpoint failing for the configured period is
disabled (a fake clock, not waiting) and the account told; re-enabling delivers the
backlog from the cursor; dead letters and time frames replay with their first message id."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
from aiohttp import web
from google.protobuf import timestamp_pb2

from services.common.auth.client import credential_channel
from services.common.auth.model import Role
from services.common.gen.handoff.scheduler.v1 import (
    live_pb2,
    live_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
)
from services.delivery.live.loop import message_id
from services.delivery.transports.http.settings import ApiSettings
from tests.integration.access_support import serve_everything
from tests.integration.credentials_support import authenticator, service_token
from tests.integration.layouts_support import create_account, insert_referrals
from tests.integration.live_support import api_connection, crm, eventually, notify, supervisor

if TYPE_CHECKING:
    from services.common.gen.handoff.scheduler.v1.live_pb2_grpc import (
        LiveDeliveryServiceAsyncStub,
    )
    from services.common.gen.handoff.scheduler.v1.tasks_pb2_grpc import TaskServiceAsyncStub

pytestmark = pytest.mark.integration
TEMPLATE = '{"email": "{{email}}"}'


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.at


@dataclass
class Api:
    live: LiveDeliveryServiceAsyncStub
    tasks: TaskServiceAsyncStub


@pytest.fixture
async def api(pool: asyncpg.Pool) -> AsyncIterator[Api]:
    operator = await service_token(pool, Role.OPERATOR)
    async with (
        serve_everything(pool, authenticator(pool)) as server,
        credential_channel(f"127.0.0.1:{server.port}", operator) as channel,
    ):
        yield Api(
            live_pb2_grpc.LiveDeliveryServiceStub(channel), tasks_pb2_grpc.TaskServiceStub(channel)
        )


def _stamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


async def test_a_continuously_failing_endpoint_is_disabled_told_and_resumes_its_backlog(
    pool: asyncpg.Pool, api: Api
) -> None:
    account, campaign = await create_account(pool)
    state = {"up": False}

    async def endpoint(request: web.Request) -> web.Response:
        return web.json_response({}) if state["up"] else web.Response(status=503)

    clock = Clock()
    async with crm(endpoint) as server, supervisor(pool, now=clock) as running:
        connection = await api_connection(
            pool, account,
            ApiSettings(url=server.url, body_template=TEMPLATE, retry_schedule_s=(3600,) * 5,
                        disable_after_s=3600),
        )  # fmt: skip
        await running.claim_round()
        first = await insert_referrals(pool, account, campaign, [{"email": "a@example.com"}])
        await notify(pool)
        ids: dict[str, Any] = {"account_id": str(account), "connection_id": str(connection)}

        async def failing() -> bool:
            got = await api.live.GetLiveState(live_pb2.GetLiveStateRequest(**ids))
            return got.HasField("failing_since") and got.waiting == 1

        await eventually(failing)
        assert not (await api.live.GetLiveState(live_pb2.GetLiveStateRequest(**ids))).disabled
        clock.at += timedelta(seconds=3601)  # an hour of failing, by the clock
        await insert_referrals(pool, account, campaign, [{"email": "b@example.com"}])
        await notify(pool)

        async def disabled() -> bool:
            got = await api.live.GetLiveState(live_pb2.GetLiveStateRequest(**ids))
            return got.disabled

        await eventually(disabled)
        got = await api.live.GetLiveState(live_pb2.GetLiveStateRequest(**ids))
        assert "failed every attempt for 1.0 hours" in got.disabled_reason
        events = await api.tasks.ListAttention(
            tasks_pb2.ListAttentionRequest(account_id=str(account))
        )
        assert [(e.connection_id, e.diagnosis) for e in events.events] == [
            (str(connection), "disabled")
        ]
        await asyncio.sleep(0.3)
        assert connection not in running.loops
        # While disabled, referrals wait behind the cursor; nothing is sent.
        later = await insert_referrals(pool, account, campaign, [{"email": "c@example.com"}])
        await notify(pool)
        sent_before = len(server.seen)
        await asyncio.sleep(0.3)
        assert len(server.seen) == sent_before
        state["up"] = True
        enabled = await api.live.EnableLive(live_pb2.EnableLiveRequest(**ids))
        assert not enabled.disabled
        assert not enabled.HasField("failing_since")
        await running.claim_round()

        await eventually(lambda: {"a@example.com", "b@example.com", "c@example.com"} <= {
            s.json()["email"] for s in server.seen[sent_before:]
        })  # fmt: skip
        events = await api.tasks.ListAttention(
            tasks_pb2.ListAttentionRequest(account_id=str(account))
        )
        assert events.events == []  # resolved by re-enabling
        keys = {s.headers["Idempotency-Key"] for s in server.seen if b"a@example" in s.body}
        assert keys == {message_id(connection, first[0])}
        assert later


async def test_dead_letters_and_time_frames_replay_with_their_message_ids(
    pool: asyncpg.Pool, api: Api
) -> None:
    account, campaign = await create_account(pool)
    state = {"up": False}

    async def endpoint(request: web.Request) -> web.Response:
        return web.json_response({}) if state["up"] else web.Response(status=500)

    async with crm(endpoint) as server, supervisor(pool) as running:
        connection = await api_connection(
            pool, account,
            ApiSettings(url=server.url, body_template=TEMPLATE, retry_schedule_s=(0.05,)),
        )  # fmt: skip
        await running.claim_round()
        ids: dict[str, Any] = {"account_id": str(account), "connection_id": str(connection)}
        started = datetime.now(UTC)
        seqs = await insert_referrals(
            pool, account, campaign, [{"email": f"{i}@example.com"} for i in range(3)]
        )
        await notify(pool)

        async def all_dead() -> bool:
            got = await api.live.GetLiveState(live_pb2.GetLiveStateRequest(**ids))
            return got.dead == 3

        await eventually(all_dead)
        dead = await api.live.ListLiveMessages(
            live_pb2.ListLiveMessagesRequest(**ids, state="dead", page_size=2)
        )
        assert len(dead.messages) == 2
        assert dead.next_page_token
        rest = await api.live.ListLiveMessages(
            live_pb2.ListLiveMessagesRequest(**ids, state="dead", page_token=dead.next_page_token)
        )
        assert sorted(m.seq for m in [*dead.messages, *rest.messages]) == seqs
        assert all(m.attempts == 2 and m.last_status == 500 for m in dead.messages)
        state["up"] = True
        one = await api.live.ReplayLive(
            live_pb2.ReplayLiveRequest(**ids, referrals=live_pb2.SeqList(seqs=[seqs[0]]))
        )
        assert one.queued == 1
        await eventually(lambda: any(s.json()["email"] == "0@example.com" and
                                     s.headers["Idempotency-Key"] == message_id(connection, seqs[0])
                                     for s in server.seen[-3:]))  # fmt: skip
        failed = await api.live.ReplayLive(
            live_pb2.ReplayLiveRequest(**ids, failed_since=_stamp(started))
        )
        assert failed.queued == 2

        async def none_dead() -> bool:
            got = await api.live.GetLiveState(live_pb2.GetLiveStateRequest(**ids))
            return got.dead == 0 and got.waiting == 0

        await eventually(none_dead)
        count = len(server.seen)
        frame = live_pb2.ReceivedBetween(
            start=_stamp(started - timedelta(minutes=1)), end=_stamp(datetime.now(UTC))
        )
        again = await api.live.ReplayLive(live_pb2.ReplayLiveRequest(**ids, received=frame))
        assert again.queued == 3
        await eventually(lambda: len(server.seen) >= count + 3)
        request = live_pb2.ListLiveAttemptsRequest(**ids, seq=seqs[1])

        async def recorded() -> bool:
            return len((await api.live.ListLiveAttempts(request)).attempts) == 4

        await eventually(recorded)
        attempts = await api.live.ListLiveAttempts(request)
        # Newest first: the first try, its retry (dead), then two replays that arrived.
        assert [a.outcome for a in attempts.attempts] == ["accepted", "accepted", "dead", "retry"]


async def test_bad_requests_are_named(pool: asyncpg.Pool, api: Api) -> None:
    account, _ = await create_account(pool)
    connection = await api_connection(pool, account, ApiSettings(url="https://example.com"))
    ids: dict[str, Any] = {"account_id": str(account), "connection_id": str(connection)}
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.live.ReplayLive(live_pb2.ReplayLiveRequest(**ids))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "referrals, received or failed_since" in (raised.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.live.ListLiveMessages(live_pb2.ListLiveMessagesRequest(**ids, state="gone"))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.live.GetLiveState(
            live_pb2.GetLiveStateRequest(account_id=str(account), connection_id=str(uuid.uuid4()))
        )
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND

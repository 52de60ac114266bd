"""API connections through ConnectionService: created with a body template and a rule,
validated naming each problem, tested with a real call (secrets redacted), linked to a
campaign, and then each new referral arrives at the endpoint."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from aiohttp import web

from services.common.auth.client import credential_channel
from services.common.auth.model import Role
from services.common.gen.handoff.scheduler.v1 import connections_pb2, connections_pb2_grpc
from tests.integration.access_support import serve_everything
from tests.integration.credentials_support import authenticator, service_token
from tests.integration.layouts_support import create_account, insert_referrals
from tests.integration.live_support import crm, eventually, notify, supervisor

if TYPE_CHECKING:
    from services.common.gen.handoff.scheduler.v1.connections_pb2_grpc import (
        ConnectionServiceAsyncStub,
    )

pytestmark = pytest.mark.integration
TEMPLATE = json.dumps({"email": "{{email}}", "name": "{{first_name}} {{last_name}}"})


@dataclass
class World:
    account: str
    campaign: str
    connections: ConnectionServiceAsyncStub
    pool: asyncpg.Pool


@pytest.fixture
async def world(pool: asyncpg.Pool) -> AsyncIterator[World]:
    account, campaign = await create_account(pool)
    operator = await service_token(pool, Role.OPERATOR)
    async with (
        serve_everything(pool, authenticator(pool)) as server,
        credential_channel(f"127.0.0.1:{server.port}", operator) as channel,
    ):
        yield World(
            str(account), str(campaign), connections_pb2_grpc.ConnectionServiceStub(channel), pool
        )


def _api(url: str, **fields: object) -> connections_pb2.ApiConnection:
    rule = connections_pb2.ResponseRule(
        status="2xx", json_path="$.status", equals="error", outcome=connections_pb2.REJECTED,
        name="crm error",
    )  # fmt: skip
    values: dict[str, object] = {
        "url": url, "body_template": TEMPLATE, "auth": connections_pb2.BEARER,
        "token": "s3cret-token", "response_rules": [rule], "all_campaigns": True,
    }  # fmt: skip
    values.update(fields)
    return connections_pb2.ApiConnection(**values)  # type: ignore[arg-type]


async def _create(world: World, api: connections_pb2.ApiConnection) -> connections_pb2.Connection:
    return await world.connections.CreateConnection(
        connections_pb2.CreateConnectionRequest(
            account_id=world.account, connection=connections_pb2.Connection(name="crm", api=api)
        )
    )


async def test_create_test_link_and_deliver(world: World) -> None:
    async def answer(request: web.Request) -> web.Response:
        body = await request.json()
        if body["email"].startswith("bad"):
            return web.json_response({"status": "error"})
        return web.json_response({"status": "ok"})

    async with crm(answer) as endpoint, supervisor(world.pool) as running:
        api = _api(f"{endpoint.url}/leads", test_url=f"{endpoint.url}/test", all_campaigns=False)
        created = await _create(world, api)
        assert created.api.secrets_set == ["token"]
        assert created.api.token == ""  # never returned
        assert created.api.body_template == TEMPLATE
        got = await world.connections.GetConnection(
            connections_pb2.GetConnectionRequest(account_id=world.account, id=created.id)
        )
        assert got.api == created.api
        tested = await world.connections.TestConnection(
            connections_pb2.TestConnectionRequest(account_id=world.account, id=created.id)
        )
        assert tested.ok, tested.message
        exchange = tested.exchange
        assert exchange.url == f"{endpoint.url}/test"
        assert exchange.request_headers["Authorization"] == "[redacted]"
        assert json.loads(exchange.request_body) == {
            "email": "ada.lovelace@example.com", "name": "Ada Lovelace"
        }  # fmt: skip
        assert (exchange.status, exchange.outcome, exchange.rule) == (200, "accepted",
                                                                      "default: 2xx")  # fmt: skip
        assert endpoint.seen[-1].headers["Authorization"] == "Bearer s3cret-token"
        # Linked to no campaign yet: nothing is sent. Link the campaign, then send.
        await running.claim_round()
        (early,) = await insert_referrals(
            world.pool, uuid.UUID(world.account), uuid.UUID(world.campaign),
            [{"email": "early@example.com"}],
        )  # fmt: skip
        await notify(world.pool)

        async def passed() -> bool:  # the cursor moved past it: out of scope, done
            cursor = await world.pool.fetchval(
                "SELECT delivered_seq FROM live_cursors WHERE connection_id = $1",
                uuid.UUID(created.id),
            )
            return bool(cursor and cursor >= early)

        await eventually(passed)
        assert [s.path for s in endpoint.seen] == ["/test"]
        linked = created.api
        linked.campaign_ids.append(world.campaign)
        await world.connections.UpdateConnection(
            connections_pb2.UpdateConnectionRequest(
                account_id=world.account,
                connection=connections_pb2.Connection(id=created.id, name="crm", api=linked),
            )
        )
        await running.claim_round()  # the new version restarts the loop
        await insert_referrals(
            world.pool, uuid.UUID(world.account), uuid.UUID(world.campaign),
            [{"email": "new@example.com"}, {"email": "bad@example.com"}],
        )  # fmt: skip
        await notify(world.pool)
        await eventually(lambda: len([s for s in endpoint.seen if s.path == "/leads"]) >= 2)
        leads = [s.json()["email"] for s in endpoint.seen if s.path == "/leads"]
        assert leads == ["new@example.com", "bad@example.com"]
        recent = await world.connections.TestConnection(
            connections_pb2.TestConnectionRequest(
                account_id=world.account, id=created.id, recent=True
            )
        )
        assert not recent.ok
        assert (recent.diagnosis, recent.exchange.rule) == ("rejected", "crm error")
        assert json.loads(recent.exchange.request_body)["email"] == "bad@example.com"


async def test_bad_api_connections_are_refused_naming_the_field(world: World) -> None:
    here = "http://127.0.0.1:9/x"
    bad_rule = connections_pb2.ResponseRule(status="2yy", outcome=connections_pb2.REJECTED)
    cases = {
        "connection.api.body_template$.a: no field named 'nope'": _api(
            here, body_template='{"a": "{{nope}}"}'
        ),
        "connection.api.body_template$.a": _api(here, body_template='{"a": "x {{email:number}}"}'),
        "connection.api.url": _api("ftp://example.com/x"),
        "connection.api.token": _api(here, token=""),
        "connection.api.response_rules[0].status": _api(here, response_rules=[bad_rule]),
        "connection.api.headers.Authorization": _api(here, headers={"Authorization": "x"}),
        "connection.api.signing_secret": _api(here, standard_webhooks=True),
    }
    for field, api in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _create(world, api)
        assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in (raised.value.details() or ""), (field, raised.value.details())


async def test_an_internal_address_is_refused_when_saved(world: World) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _create(world, _api("https://10.1.2.3/leads"))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "a private address" in (raised.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _create(world, _api("http://example.com/leads"))
    assert "https" in (raised.value.details() or "")

"""Every RPC of every service, read from what the servers mount: no credential, the wrong
caller, another account's ids, and the right caller — each answered as its rule says."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor

from services.common.auth.client import credential_channel
from services.common.auth.model import SCOPES, AccessRule, Role
from services.common.auth.rules import MissingRuleError, method_rules, rule_of
from services.common.grpc_server import RunningServer, grpc_server
from tests.integration.access_support import every_service, serve_everything
from tests.integration.credentials_support import account_token, authenticator, service_token
from tests.integration.layouts_support import create_account

pytestmark = pytest.mark.integration

CODE = grpc.StatusCode


@dataclass(frozen=True)
class Method:
    """One RPC: its path, descriptor and rule."""

    path: str
    descriptor: MethodDescriptor
    rule: AccessRule


async def _methods(pool: asyncpg.Pool) -> list[Method]:
    async with every_service(pool) as services:
        names = [service.full_name for service in services]
    rules = method_rules(names)
    found = []
    for name in names:
        service = descriptor_pool.Default().FindServiceByName(name)
        for method in service.methods:
            path = f"/{name}/{method.name}"
            found.append(Method(path, method, rules[path]))
    return found


@dataclass
class World:
    """Two accounts, a token per scope set, a credential per role, one server."""

    server: RunningServer
    account_a: str
    account_b: str
    roles: dict[Role, str]
    a_all_scopes: str
    b_all_scopes: str
    a_all_but: dict[str, str]  # scope -> a token of A holding every other scope
    methods: list[Method]


@pytest.fixture
async def world(pool: asyncpg.Pool) -> AsyncIterator[World]:
    a = str((await create_account(pool))[0])
    b = str((await create_account(pool))[0])
    roles = {role: await service_token(pool, role) for role in Role}
    a_all = await account_token(pool, a, *SCOPES)
    b_all = await account_token(pool, b, *SCOPES)
    a_but = {s: await account_token(pool, a, *(o for o in SCOPES if o != s)) for s in SCOPES}
    async with serve_everything(pool, authenticator(pool)) as server:
        yield World(server, a, b, roles, a_all, b_all, a_but, await _methods(pool))


def _request(method: Method, account: str | None) -> Any:
    cls = message_factory.GetMessageClass(method.descriptor.input_type)
    request = cls()
    if method.rule.account_field and account is not None:
        setattr(request, method.rule.account_field, account)
    return request


async def _call(world: World, method: Method, token: str | None, account: str | None) -> CODE:
    """The status code of one call (OK when it succeeded)."""
    target = f"127.0.0.1:{world.server.port}"
    channel = credential_channel(target, token) if token else grpc.aio.insecure_channel(target)
    request = _request(method, account)
    async with channel:
        kwargs: dict[str, Any] = {
            "request_serializer": lambda m: m.SerializeToString(),
            "response_deserializer": lambda b: b,
        }
        try:
            if method.descriptor.client_streaming:
                call = channel.stream_unary(method.path, **kwargs)
                await call(iter([request]), timeout=10)
            else:
                await channel.unary_unary(method.path, **kwargs)(request, timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return CODE.OK


async def test_every_rpc_refuses_a_call_without_credential(world: World) -> None:
    assert len(world.methods) >= 25  # accounts, ingest, credentials, layouts
    for method in world.methods:
        assert await _call(world, method, None, world.account_a) is CODE.UNAUTHENTICATED, (
            method.path
        )


async def test_every_rpc_refuses_the_wrong_role_or_scope(world: World) -> None:
    for method in world.methods:
        rule = method.rule
        if rule.any_caller:
            continue
        for role, token in world.roles.items():
            if role not in rule.roles:
                got = await _call(world, method, token, world.account_a)
                assert got is CODE.PERMISSION_DENIED, (method.path, role)
        token = world.a_all_but[rule.scope] if rule.scope else world.a_all_scopes
        got = await _call(world, method, token, world.account_a)
        assert got is CODE.PERMISSION_DENIED, (method.path, "account token")


async def test_an_account_token_sees_another_account_as_missing(world: World) -> None:
    scoped = [m for m in world.methods if m.rule.scope]
    assert scoped
    for method in scoped:
        other = await _call(world, method, world.b_all_scopes, world.account_a)
        missing = await _call(world, method, world.b_all_scopes, str(uuid.uuid4()))
        assert (other, missing) == (CODE.NOT_FOUND, CODE.NOT_FOUND), method.path


async def test_every_rpc_admits_its_right_callers(world: World) -> None:
    refused = {CODE.UNAUTHENTICATED, CODE.PERMISSION_DENIED}
    for method in world.methods:
        rule = method.rule
        callers = [world.roles[r] for r in rule.roles]
        if rule.scope or rule.any_caller:
            callers.append(world.a_all_scopes)
        if rule.any_caller:
            callers.extend(world.roles.values())
        assert callers, method.path
        for token in callers:
            got = await _call(world, method, token, world.account_a)
            assert got not in refused, (method.path, got)
            if token == world.a_all_scopes:
                # Its own account is never hidden: whatever it answers, not NOT_FOUND
                # for the account (empty ids answer INVALID_ARGUMENT instead).
                assert got is not CODE.NOT_FOUND or not rule.account_field, method.path


def test_a_method_without_a_rule_is_refused_at_start() -> None:
    health = descriptor_pool.Default().FindServiceByName("grpc.health.v1.Health")
    with pytest.raises(MissingRuleError, match="has no"):
        rule_of(health.methods[0])
    with pytest.raises(MissingRuleError):
        method_rules(["grpc.health.v1.Health"])


async def test_a_server_mounting_a_service_without_rules_does_not_start(
    pool: asyncpg.Pool,
) -> None:
    from services.common.grpc_server import GrpcService

    unruled = GrpcService("grpc.health.v1.Health", lambda server: None)
    with pytest.raises(MissingRuleError):
        async with grpc_server("127.0.0.1", 0, [unruled], authenticator=authenticator(pool)):
            pass  # pragma: no cover

"""The export API behind the access middleware, and TLS (reloaded on change) on gRPC and
HTTP ports."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import grpc
import pytest
from aiohttp import web

from services.common.auth.client import credential_channel
from services.common.auth.grpc_access import peer_is_loopback
from services.common.auth.http_access import _is_loopback, add_route, check_rules
from services.common.auth.model import SCOPES, AccessRule, Role
from services.common.auth.store import CredentialStore
from services.common.auth.tls import TlsFiles, http_ssl_context
from services.common.gen.handoff.auth.v1 import credentials_pb2, credentials_pb2_grpc
from services.common.grpc_server import grpc_server
from services.export.health_routes import Readiness
from services.export.http_app import create_app, serve_http
from services.export.store import ExportStore
from services.ingest.services import ingest_services
from services.ingest.store import IngestStore
from tests.integration.credentials_support import account_token, authenticator, service_token
from tests.integration.layouts_support import create_account
from tests.integration.tls_support import self_signed, write_pair

pytestmark = pytest.mark.integration


@pytest.fixture
async def app(pool: asyncpg.Pool) -> web.Application:
    return create_app(
        ExportStore(pool),
        Readiness(),
        authenticator(pool),
        expected_schema_version=1,
        health_timeout_s=2,
    )


@pytest.fixture
async def http_url(app: web.Application) -> AsyncIterator[str]:
    async with serve_http(app, "127.0.0.1", 0, grace_s=0.5) as port:
        yield f"http://127.0.0.1:{port}"


async def _get(
    url: str, token: str = "", ssl_context: ssl.SSLContext | None = None
) -> tuple[int, dict[str, str], dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers, ssl=ssl_context or False) as response,
    ):
        return response.status, dict(response.headers), await response.json(content_type=None)


async def test_the_http_api_needs_a_credential_and_health_does_not(
    http_url: str, pool: asyncpg.Pool
) -> None:
    status, _, _ = await _get(f"{http_url}/healthz")
    assert status == 200
    status, headers, problem = await _get(f"{http_url}/v1/me")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert headers["Content-Type"].startswith("application/problem+json")
    assert "authorization: Bearer" in str(problem["detail"])
    status, _, problem = await _get(f"{http_url}/v1/me", token="hoff_at_nope")
    assert (status, problem["status"]) == (401, 401)

    account = str((await create_account(pool))[0])
    token = await account_token(pool, account, "referrals:read")
    status, _, me = await _get(f"{http_url}/v1/me", token=token)
    assert status == 200
    assert (me["kind"], me["account_id"], me["scopes"]) == ("account", account, ["referrals:read"])
    assert token not in str(me)


async def test_http_rules_refuse_wrong_scope_and_other_accounts(pool: asyncpg.Pool) -> None:
    api = create_app(
        ExportStore(pool),
        Readiness(),
        authenticator(pool),
        expected_schema_version=1,
        health_timeout_s=2,
    )

    async def echo(request: web.Request) -> web.StreamResponse:
        return web.json_response({"account": request.match_info["account_id"]})

    # A route like the export API's: account in the path, a scope needed.
    app = web.Application(middlewares=api.middlewares)
    rule = AccessRule(
        roles=frozenset({Role.OPERATOR}), scope="referrals:read", account_field="account_id"
    )
    add_route(app, "GET", "/v1/accounts/{account_id}/probe", echo, rule)
    check_rules(app, [])
    mine = str((await create_account(pool))[0])
    other = str((await create_account(pool))[0])
    reader = await account_token(pool, mine, "referrals:read")
    config = await account_token(pool, mine, *(s for s in SCOPES if s != "referrals:read"))
    operator = await service_token(pool, Role.OPERATOR)
    ingest = await service_token(pool, Role.INGEST)
    async with serve_http(app, "127.0.0.1", 0, grace_s=0.5) as port:
        base = f"http://127.0.0.1:{port}/v1/accounts"
        assert (await _get(f"{base}/{mine}/probe", reader))[0] == 200
        assert (await _get(f"{base}/{other}/probe", reader))[0] == 404
        assert (await _get(f"{base}/{other}/probe", operator))[0] == 200
        assert (await _get(f"{base}/{mine}/probe", config))[0] == 403
        assert (await _get(f"{base}/{mine}/probe", ingest))[0] == 403
        assert (await _get(f"{base}/{mine}/probe"))[0] == 401


def test_an_http_route_without_a_rule_is_refused_when_the_app_is_built() -> None:
    app = web.Application()

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response()

    app.router.add_get("/v1/unguarded", handler)
    with pytest.raises(RuntimeError, match="/v1/unguarded has no access rule"):
        check_rules(app, ["/healthz"])


def test_loopback_peers_are_told_from_remote_ones() -> None:
    assert peer_is_loopback("ipv4:127.0.0.1:5000")
    assert peer_is_loopback("ipv6:[::1]:5000")
    assert peer_is_loopback("ipv6:[::ffff:127.0.0.1]:5000")
    assert peer_is_loopback("unix:/run/handoff.sock")
    assert not peer_is_loopback("ipv4:10.0.0.8:5000")
    assert not peer_is_loopback("ipv6:[2001:db8::1]:5000")
    assert not peer_is_loopback("garbage")
    assert _is_loopback("127.0.0.1")
    assert _is_loopback("::1")
    assert not _is_loopback("192.0.2.10")
    assert not _is_loopback(None)


async def test_grpc_serves_tls_and_picks_up_a_rotated_certificate(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    first, second = self_signed(), self_signed()
    cert, key = write_pair(tmp_path, first)
    token = await service_token(pool, Role.OPERATOR)
    verifier, tls = authenticator(pool), TlsFiles(cert, key)
    async with (
        ingest_services(IngestStore(pool), CredentialStore(pool)) as services,
        grpc_server(
            "127.0.0.1", 0, services.grpc, authenticator=verifier, tls=tls, grace_s=0.5
        ) as running,
    ):
        target = f"127.0.0.1:{running.port}"

        async def whoami(root: bytes) -> str:
            async with credential_channel(target, token, root_certificates=root) as channel:
                stub = credentials_pb2_grpc.CredentialServiceStub(channel)
                return (await stub.WhoAmI(credentials_pb2.WhoAmIRequest(), timeout=5)).name

        assert await whoami(first[0]) == "test service"
        async with credential_channel(target, token) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await credentials_pb2_grpc.CredentialServiceStub(plain).WhoAmI(
                    credentials_pb2.WhoAmIRequest(), timeout=2
                )
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE

        write_pair(tmp_path, second)  # a rotation, as cert-manager does it
        assert await whoami(second[0]) == "test service"
        with pytest.raises(grpc.aio.AioRpcError):
            await whoami(first[0])


async def test_http_serves_tls_and_picks_up_a_rotated_certificate(
    app: web.Application, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    first, second = self_signed(), self_signed()
    cert, key = write_pair(tmp_path, first)
    account = str((await create_account(pool))[0])
    token = await account_token(pool, account, "config:read")
    context = http_ssl_context(TlsFiles(cert, key))
    async with serve_http(app, "127.0.0.1", 0, grace_s=0.5, ssl_context=context) as port:
        url = f"https://127.0.0.1:{port}/v1/me"

        def trusting(pem: bytes) -> ssl.SSLContext:
            return ssl.create_default_context(cadata=pem.decode())

        assert (await _get(url, token, trusting(first[0])))[0] == 200
        write_pair(tmp_path, second)
        assert (await _get(url, token, trusting(second[0])))[0] == 200
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await _get(url, token, trusting(first[0]))

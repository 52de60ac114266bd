"""Real-time delivery test support: aiohttp servers on loopback playing advertisers' CRMs,
API connections stored the way the connection API stores them, and a running supervisor."""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from services.common.secrets import connection_secret_context
from services.delivery.live.supervisor import LiveSupervisor
from services.delivery.transports.http.settings import ApiSettings
from tests.integration.access_support import LOOPBACK, TEST_BOX
from tests.integration.tls_support import self_signed, write_pair

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    """One request a CRM received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Crm:
    """A CRM on loopback: what it received, and its base URL."""

    url: str
    seen: list[Seen] = field(default_factory=list)
    ca_pem: str = ""

    def bodies(self) -> list[Any]:
        return [s.json() for s in self.seen]


@asynccontextmanager
async def crm(handler: Handler | None = None, *, tls_dir: Path | None = None) -> AsyncIterator[Crm]:
    """An aiohttp server recording every request; `handler` answers (default: 200 {})."""
    state = Crm("")

    async def record(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        state.seen.append(
            Seen(
                request.method, request.path, dict(request.query), dict(request.headers), body,
                asyncio.get_running_loop().time(),
            )
        )  # fmt: skip
        if handler is None:
            return web.json_response({"ok": True})
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = None
    if tls_dir is not None:
        pair = self_signed("localhost")
        cert, key = write_pair(tls_dir, pair)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        state.ca_pem = pair[0].decode()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = (
        f"{'https' if context else 'http'}://{'localhost' if context else '127.0.0.1'}:{port}"
    )
    try:
        yield state
    finally:
        await runner.cleanup()


async def api_connection(
    pool: asyncpg.Pool,
    account: uuid.UUID,
    api: ApiSettings,
    secrets: dict[str, str] | None = None,
    *,
    name: str = "",
) -> uuid.UUID:
    """Store an API connection (secrets sealed as the connection API seals them)."""
    cid = uuid.uuid4()
    sealed = {
        n: TEST_BOX.seal(v, connection_secret_context(cid, n)) for n, v in (secrets or {}).items()
    }
    await pool.execute(
        "INSERT INTO connections (id, account_id, name, kind, settings, secrets) "
        "VALUES ($1, $2, $3, 'api', $4, $5)",
        cid, account, name or f"crm-{cid.hex[:6]}", api.to_json(), sealed,
    )  # fmt: skip
    return cid


async def notify(pool: asyncpg.Pool) -> None:
    """What ingest sends at commit."""
    await pool.execute("SELECT pg_notify('referrals_ingested', '0')")


@asynccontextmanager
async def supervisor(
    pool: asyncpg.Pool, *, now: Callable[[], datetime] | None = None, lease_s: float = 3.0
) -> AsyncIterator[LiveSupervisor]:
    """A running supervisor over the test database (loopback allowed)."""
    running = LiveSupervisor(
        pool, TEST_BOX, LOOPBACK, lease_s=lease_s, now=now or (lambda: datetime.now(UTC))
    )
    await running.start()
    await running.wait_claimed()
    try:
        yield running
    finally:
        await running.close()


async def eventually(check: Callable[[], Any], timeout: float = 30.0) -> None:  # noqa: ASYNC109
    """Wait until `check()` is truthy (awaiting it if it is a coroutine)."""
    async with asyncio.timeout(timeout):
        while True:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            await asyncio.sleep(0.02)

"""A Zapier stand-in on loopback that behaves as Zapier does with a REST-hook trigger.

Turning a Zap on subscribes: Zapier calls the app's subscribe URL with the user's
credentials and a `target_url` of its own (one per Zap), and keeps the `id` the app
answers. While the Zap is on, each POST to that URL is one trigger event (answered 200
with Zapier's small JSON). Turning it off unsubscribes with a DELETE of that id; from
then on the URL answers **410 Gone**, which is what Zapier answers when a hook arrives
for a Zap that is off (and what the app must take as "remove the subscription"). A
Catch Hook ("Webhooks by Zapier") is just such a URL, with no subscribe step.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web


@dataclass
class Zap:
    """One Zap (or Catch Hook): its hook URL and what arrived there."""

    id: str
    target_url: str
    on: bool = True
    subscription_id: str | None = None  # what Handoff answered when it subscribed
    received: list[Any] = field(default_factory=list)  # each hook's JSON body, in order
    gone_answers: int = 0  # hooks answered 410 after the Zap was turned off


class FakeZapier:
    """Zapier's side: Zaps, their hook URLs, and the calls it makes to the app."""

    def __init__(self) -> None:
        self.url = ""
        self.zaps: dict[str, Zap] = {}
        self.refused: list[tuple[str, int]] = []  # (zap id, status) of hooks refused

    def app(self) -> web.Application:
        """The hook receiver."""
        app = web.Application()
        app.router.add_post("/hooks/standard/{zap_id}/", self._hook)
        app.router.add_post("/hooks/catch/{zap_id}/", self._hook)
        return app

    async def _hook(self, request: web.Request) -> web.StreamResponse:
        zap = self.zaps.get(request.match_info["zap_id"])
        if zap is None:
            self.refused.append((request.match_info["zap_id"], 404))
            return web.json_response({"status": "error", "message": "no such hook"}, status=404)
        if not zap.on:
            zap.gone_answers += 1
            return web.json_response({"status": "error", "message": "Zap is off"}, status=410)
        if request.content_type != "application/json":
            self.refused.append((zap.id, 400))
            return web.json_response({"status": "error", "message": "JSON only"}, status=400)
        try:
            body = json.loads(await request.read())
        except ValueError:
            self.refused.append((zap.id, 400))
            return web.json_response({"status": "error", "message": "bad JSON"}, status=400)
        zap.received.append(body)
        return web.json_response(
            {"status": "success", "attempt": str(uuid.uuid4()), "id": str(uuid.uuid4()),
             "request_id": uuid.uuid4().hex[:16]}
        )  # fmt: skip

    def catch_hook(self) -> Zap:
        """A "Webhooks by Zapier" Catch Hook URL: no subscribe step."""
        zap_id = uuid.uuid4().hex[:10]
        zap = Zap(zap_id, f"{self.url}/hooks/catch/{zap_id}/")
        self.zaps[zap_id] = zap
        return zap

    async def turn_on(
        self, handoff_url: str, token: str, *, campaign_ids: Sequence[str] | None = None
    ) -> Zap:
        """A user turns on a Zap with the "new referral" trigger: subscribe with the
        user's token, as the app's performSubscribe does."""
        zap_id = uuid.uuid4().hex[:10]
        zap = Zap(zap_id, f"{self.url}/hooks/standard/{zap_id}/")
        body: dict[str, Any] = {"target_url": zap.target_url, "event": "new_referral"}
        if campaign_ids is not None:
            body["campaign_ids"] = list(campaign_ids)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{handoff_url}/v1/zapier/subscriptions",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            ) as answer,
        ):
            text = await answer.text()
            if answer.status != 201:  # Zapier shows the error and leaves the Zap off
                raise AssertionError(f"subscribe answered {answer.status}: {text}")
            zap.subscription_id = str(json.loads(text)["id"])
        self.zaps[zap_id] = zap
        return zap

    async def turn_off(
        self, zap: Zap, handoff_url: str, token: str, *, unsubscribe: bool = True
    ) -> int | None:
        """The user turns the Zap off: its URL answers 410 from now on, and Zapier
        unsubscribes (`unsubscribe=False`: that call never reached the app). The DELETE's
        status, or None."""
        zap.on = False
        if not unsubscribe:
            return None
        async with (
            aiohttp.ClientSession() as session,
            session.delete(
                f"{handoff_url}/v1/zapier/subscriptions/{zap.subscription_id}",
                headers={"Authorization": f"Bearer {token}"},
            ) as answer,
        ):
            return answer.status


@asynccontextmanager
async def fake_zapier() -> AsyncIterator[FakeZapier]:
    """The fake, serving its hook URLs on a free loopback port."""
    zapier = FakeZapier()
    runner = web.AppRunner(zapier.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    zapier.url = f"http://127.0.0.1:{port}"
    try:
        yield zapier
    finally:
        await runner.cleanup()

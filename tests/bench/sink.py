"""A fast HTTP endpoint for the live benchmark, in its own process: answers 200 to every
request and keeps each Idempotency-Key's arrival time (GET /stats, GET /arrivals)."""

from __future__ import annotations

import sys
import time

from aiohttp import web

ARRIVALS: dict[str, float] = {}
COUNTS = {"live": 0, "raw": 0, "duplicates": 0}


async def receive(request: web.Request) -> web.Response:
    await request.read()
    key = request.headers.get("Idempotency-Key", "")
    if key.startswith("raw-"):
        COUNTS["raw"] += 1
    elif key in ARRIVALS:
        COUNTS["duplicates"] += 1
    else:
        ARRIVALS[key] = time.time()
        COUNTS["live"] += 1
    return web.json_response({"ok": True})


async def stats(request: web.Request) -> web.Response:
    return web.json_response(COUNTS)


async def arrivals(request: web.Request) -> web.Response:
    return web.json_response(ARRIVALS)


def main() -> None:
    app = web.Application()
    app.router.add_post("/leads", receive)
    app.router.add_get("/stats", stats)
    app.router.add_get("/arrivals", arrivals)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()

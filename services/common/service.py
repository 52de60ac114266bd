"""Process entry point shared by the services: config, telemetry, asyncio, exit codes."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from services.common.config import ConfigError, ServiceConfig
from services.common.db import DatabaseError
from services.common.grpc_server import wait_for_shutdown_signal
from services.common.telemetry import telemetry
from services.common.workers import start_workers, stop_workers

log = logging.getLogger(__name__)


def run_service(
    name: str,
    default_port: int,
    serve: Callable[[ServiceConfig], Coroutine[Any, Any, None]],
    *,
    workers_allowed: bool = False,
) -> int:
    """Read the service's config, set up telemetry and run `serve` until it returns.

    With HANDOFF_<NAME>_WORKERS=N (where allowed), N-1 more processes serve the same
    port: Python runs one core per process, and the kernel spreads connections.
    """
    try:
        config = ServiceConfig.from_env(name, default_port)
        if config.workers > 1 and not workers_allowed:
            raise ConfigError(f"HANDOFF_{name.upper()}_WORKERS is not supported by {name}")
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        return 2
    workers = start_workers(name, config.workers - 1)
    try:
        code = _serve(config, serve)
    finally:
        failed = stop_workers(workers, config.shutdown_grace_s + 5)
    return code or (1 if failed else 0)


def _serve(
    config: ServiceConfig, serve: Callable[[ServiceConfig], Coroutine[Any, Any, None]]
) -> int:
    with telemetry(config.telemetry):
        try:
            asyncio.run(serve(config))
        except ConfigError as exc:
            log.error("configuration error: %s", exc)
            return 2
        except DatabaseError as exc:
            log.error("cannot start: %s", exc)
            return 1
        except OSError as exc:
            log.error("cannot start: %s", exc)
            return 1
        except KeyboardInterrupt:
            pass
    return 0


_ANNOUNCEMENT = re.compile(
    r"(?P<name>[a-z]+) (?P<what>gRPC|HTTP) listening on (?P<host>.*):(?P<port>\d+)"
)


def announcement(name: str, what: str, host: str, port: int) -> str:
    """The stdout line by which a service tells whoever started it that it bound a port."""
    return f"{name} {what} listening on {host}:{port}"


def parse_announcement(line: str) -> tuple[str, str, int] | None:
    """(service, "gRPC" or "HTTP", port) of an announcement line; None for any other line."""
    found = _ANNOUNCEMENT.fullmatch(line)
    if found is None:
        return None
    return found["name"], found["what"], int(found["port"])


def announce(name: str, what: str, host: str, port: int) -> None:
    """Log where a service listens, and report it on stdout to whoever started it.

    The stdout line is how `make run` knows the server answering on that port is its own
    child; the launcher reads it and does not echo it, so each event shows once.
    """
    log.info("%s listening on %s:%d", what, host, port, extra={"host": host, "port": port})
    print(announcement(name, what, host, port), flush=True)


async def until_shutdown_or_failure(*watched: Awaitable[None]) -> None:
    """Return on SIGTERM or SIGINT; raise first if a watched background task fails.

    A watch that returns instead of raising counts as a failure too: whatever it watched
    has stopped.
    """
    signal = asyncio.ensure_future(wait_for_shutdown_signal())
    watches = [asyncio.ensure_future(w) for w in watched]
    try:
        done, _ = await asyncio.wait([signal, *watches], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not signal:
                task.result()  # raises what the background task died of
                raise RuntimeError("a background task stopped")
    finally:
        for task in (signal, *watches):
            task.cancel()
        await asyncio.gather(signal, *watches, return_exceptions=True)

"""Process entry point shared by the services: config, telemetry, asyncio, exit codes."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from services.common.config import ConfigError, ServiceConfig
from services.common.db import DatabaseError
from services.common.telemetry import telemetry

log = logging.getLogger(__name__)


def run_service(
    name: str, default_port: int, serve: Callable[[ServiceConfig], Coroutine[Any, Any, None]]
) -> int:
    """Read the service's config, set up telemetry and run `serve` until it returns."""
    try:
        config = ServiceConfig.from_env(name, default_port)
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        return 2
    with telemetry(config.telemetry):
        try:
            asyncio.run(serve(config))
        except DatabaseError as exc:
            log.error("cannot start: %s", exc)
            return 1
        except OSError as exc:
            log.error("cannot start: %s", exc)
            return 1
        except KeyboardInterrupt:
            pass
    return 0


def announce(name: str, what: str, host: str, port: int) -> None:
    """Log and print (for `make run` and tests) where a service listens."""
    log.info("%s listening", what, extra={"host": host, "port": port})
    print(f"{name} {what} listening on {host}:{port}", flush=True)

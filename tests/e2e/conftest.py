"""End-to-end fixtures: the services as real processes on free ports, stopped after each test."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import asyncpg
import pytest

from services.common.auth.model import Role
from services.launcher.children import ChildProcess, stop_children
from services.launcher.probes import wait_until_http_ok, wait_until_serving
from tests.integration.credentials_support import service_token

START_TIMEOUT_S = 20.0
SERVICE_NAMES = ("ingest", "scheduler", "delivery", "export")


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def service_env(database_url: str, **overrides: str) -> dict[str, str]:
    """This process's environment for a service: the test's database, free ports, JSON logs."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k == "HANDOFF_HOME" or not k.startswith(("HANDOFF_", "OTEL_"))
    }
    env.update(
        {
            "DATABASE_URL": database_url,
            "HANDOFF_SHUTDOWN_GRACE_S": "10",
            "HANDOFF_LOG_FORMAT": "json",
            "HANDOFF_EXPORT_HTTP_PORT": str(free_port()),
        }
    )
    for name in SERVICE_NAMES:
        env[f"HANDOFF_{name.upper()}_PORT"] = str(free_port())
        env[f"HANDOFF_{name.upper()}_DB_POOL_MIN"] = "1"
        env[f"HANDOFF_{name.upper()}_DB_POOL_MAX"] = "4"
    env.update(overrides)
    return env


@dataclass(frozen=True)
class RunningService:
    """A service process and where it listens."""

    name: str
    child: ChildProcess
    grpc_target: str
    http_url: str  # '' except for export


Starter = Callable[..., Awaitable[RunningService]]


@pytest.fixture
async def operator_token(pool: asyncpg.Pool) -> str:
    """A service credential with OPERATOR and INGEST in the test's database (what the
    launcher makes for `make run`)."""
    return await service_token(pool, Role.OPERATOR, Role.INGEST, name="e2e operator")


@pytest.fixture
async def start_service() -> AsyncIterator[Starter]:
    """start_service(name, env) starts `python -m services.<name>` and waits until it serves.

    Every process still running at the end of the test gets SIGTERM, then SIGKILL.
    """
    children: list[ChildProcess] = []

    async def start(name: str, env: Mapping[str, str], *, wait: bool = True) -> RunningService:
        child = await ChildProcess.start_module(name, f"services.{name}", env, echo=None)
        children.append(child)
        target = f"127.0.0.1:{env[f'HANDOFF_{name.upper()}_PORT']}"
        http_url = f"http://127.0.0.1:{env['HANDOFF_EXPORT_HTTP_PORT']}" if name == "export" else ""
        if wait:
            await wait_until_serving(child, target, START_TIMEOUT_S)
            if http_url:
                await wait_until_http_ok(child, f"{http_url}/healthz", START_TIMEOUT_S)
        return RunningService(name, child, target, http_url)

    yield start
    await stop_children(children, grace_s=15)


async def wait_for_line(child: ChildProcess, text: str, timeout_s: float) -> str:
    """The first stdout line of `child` containing `text`; fails if it exits or times out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        for line in child.stdout_lines:
            if text in line:
                return line
        if child.returncode is not None:
            await child.wait()
            pytest.fail(
                f"{child.name} exited with {child.returncode} before printing {text!r}:\n"
                f"{child.stderr_tail()}"
            )
        await asyncio.sleep(0.05)
    pytest.fail(f"{child.name} did not print {text!r} within {timeout_s} s:\n{child.stderr_tail()}")

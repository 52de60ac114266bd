"""Asks a started service whether it serves: gRPC health Check, HTTP GET."""

from __future__ import annotations

import asyncio

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.service import parse_announcement
from services.launcher.children import ChildProcess

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class StartupError(RuntimeError):
    """A service died or did not become healthy; the message carries its stderr tail."""

    def __init__(self, name: str, reason: str, stderr_tail: str) -> None:
        tail = "\n".join(f"    {line}" for line in stderr_tail.splitlines()) or "    (nothing)"
        super().__init__(f"{name} {reason}; the end of its stderr:\n{tail}")
        self.name = name


def client_host(host: str) -> str:
    """Where a local client reaches a server bound to `host` (wildcards become loopback)."""
    return _WILDCARDS.get(host, host)


def grpc_target(host: str, port: int) -> str:
    """A gRPC target for a server bound to host:port, IPv6 literals in brackets."""
    local = client_host(host)
    return f"[{local}]:{port}" if ":" in local else f"{local}:{port}"


def http_url(host: str, port: int) -> str:
    """The base URL of an HTTP server bound to host:port."""
    local = client_host(host)
    return f"http://[{local}]:{port}" if ":" in local else f"http://{local}:{port}"


async def health_status(target: str, *, timeout_s: float = 1.0, service: str = "") -> str | None:
    """The health status name (SERVING, NOT_SERVING, ...), or None when nothing answers."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return None
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name


async def http_status(url: str, *, timeout_s: float = 2.0) -> int | None:
    """The HTTP status of GET `url`, or None when nothing answers."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url) as response,
        ):
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


def announced_port(child: ChildProcess, kind: str) -> int | None:
    """The port `child` reported on stdout that its `kind` ("gRPC", "HTTP") server bound."""
    for line in child.stdout_lines:
        found = parse_announcement(line)
        if found is not None and found[1] == kind:
            return found[2]
    return None


async def wait_until_announced(child: ChildProcess, kind: str, port: int, timeout_s: float) -> None:
    """Return once `child` reports it bound `port`: only then is what answers there its own.

    Without this, a server of another process on that port (a second `make run`) would pass
    the health check in its place.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (bound := announced_port(child, kind)) is None:
        if child.returncode is not None:
            await child.wait()
            raise StartupError(
                child.name, f"exited with code {child.returncode}", child.stderr_tail()
            )
        if loop.time() > deadline:
            raise StartupError(
                child.name,
                f"did not report its {kind} server listening within {timeout_s:g} s",
                child.stderr_tail(),
            )
        await asyncio.sleep(0.05)
    if bound != port:
        raise StartupError(
            child.name, f"listens for {kind} on port {bound}, not {port}", child.stderr_tail()
        )


async def wait_until_serving(child: ChildProcess, target: str, timeout_s: float) -> None:
    """Return once `child` answers SERVING at `target`; raise StartupError if it dies first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if child.returncode is not None:
            await child.wait()  # let its last output arrive
            raise StartupError(
                child.name, f"exited with code {child.returncode}", child.stderr_tail()
            )
        if await health_status(target, timeout_s=1.0) == "SERVING":
            return
        if loop.time() > deadline:
            raise StartupError(
                child.name, f"did not report SERVING within {timeout_s:g} s", child.stderr_tail()
            )
        await asyncio.sleep(0.1)


async def wait_until_http_ok(child: ChildProcess, url: str, timeout_s: float) -> None:
    """Return once GET `url` answers 200; raise StartupError if `child` dies first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: int | None = None
    while True:
        if child.returncode is not None:
            await child.wait()
            raise StartupError(
                child.name, f"exited with code {child.returncode}", child.stderr_tail()
            )
        last = await http_status(url)
        if last == 200:
            return
        if loop.time() > deadline:
            answer = f"answered {last}" if last else "did not answer"
            raise StartupError(
                child.name, f"{url} {answer} within {timeout_s:g} s", child.stderr_tail()
            )
        await asyncio.sleep(0.1)

"""gRPC server bootstrap: health service, reflection, error mapping, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.config import ServiceConfig
from services.common.grpc_errors import DomainErrorInterceptor

log = logging.getLogger(__name__)

# Room for batches of 10,000 referrals with long free-text fields.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class GrpcService:
    """A servicer to mount: its full name (for health and reflection) and how to add it."""

    full_name: str
    register: Callable[[grpc.aio.Server], None]


@dataclass(frozen=True)
class RunningServer:
    """A started server and the port it really listens on (useful with port 0)."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer


@asynccontextmanager
async def grpc_server(
    host: str,
    port: int,
    services: Sequence[GrpcService],
    *,
    grace_s: float = 10.0,
    reuse_port: bool = False,
    drain_s: float = 0.0,
    max_concurrent_rpcs: int | None = None,
) -> AsyncIterator[RunningServer]:
    """Serve `services` until the block exits; then turn NOT_SERVING and stop gracefully.

    `drain_s` is how long to keep serving after turning NOT_SERVING, so load balancers
    see it before new calls are refused; `max_concurrent_rpcs` bounds memory (callers
    beyond it get RESOURCE_EXHAUSTED).
    """
    server = grpc.aio.server(
        interceptors=[DomainErrorInterceptor()],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Off unless several worker processes share the port on purpose: a second
            # server on a taken port must fail, not silently split the traffic.
            ("grpc.so_reuseport", int(reuse_port)),
        ],
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in services:
        service.register(server)
    names = [s.full_name for s in services]
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc}") from exc
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    for name in ["", *names]:
        await health_servicer.set(name, serving)
    try:
        yield RunningServer(server=server, port=bound, health=health_servicer)
    finally:
        # Tell load balancers first, then let in-flight calls finish within the grace.
        await health_servicer.enter_graceful_shutdown()
        if drain_s > 0:
            await asyncio.sleep(drain_s)
        await server.stop(grace_s)


def grpc_server_for(
    config: ServiceConfig, services: Sequence[GrpcService]
) -> AbstractAsyncContextManager[RunningServer]:
    """grpc_server with everything a service's configuration says about serving."""
    return grpc_server(
        config.host,
        config.port,
        services,
        grace_s=config.shutdown_grace_s,
        reuse_port=config.reuse_port,
        drain_s=config.shutdown_drain_s,
        max_concurrent_rpcs=config.max_concurrent_rpcs,
    )


async def wait_for_shutdown_signal() -> None:
    """Return when the process receives SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    try:
        await stopped.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("shutdown signal received")

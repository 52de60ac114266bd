"""gRPC server bootstrap: health, reflection, access checks, error mapping, TLS, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.auth.grpc_access import AccessInterceptor
from services.common.auth.rules import method_rules
from services.common.auth.tls import TlsFiles, grpc_server_credentials
from services.common.auth.verify import Authenticator
from services.common.call_limits import CallLimitInterceptor, core_options
from services.common.config import ServiceConfig
from services.common.grpc_errors import DomainErrorInterceptor
from services.common.readiness import Check, follow_readiness

log = logging.getLogger(__name__)

# Room for batches of 10,000 referrals of 3 KiB each (a typical one is 0.4 KiB). Ingest's
# memory budget is sized so that one request of this size always fits in it
# (services/ingest/memory_budget.py): gRPC holds a whole message before a handler sees it.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024


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
    authenticator: Authenticator,
    tls: TlsFiles | None = None,
    tls_terminated_upstream: bool = False,
    reflection_enabled: bool = True,
    access_checks: bool = True,
    grace_s: float = 10.0,
    reuse_port: bool = False,
    drain_s: float = 0.0,
    max_concurrent_rpcs: int | None = None,
    readiness_check: Check | None = None,
    readiness_grace_s: float = 10.0,
) -> AsyncIterator[RunningServer]:
    """Serve `services` until the block exits; then turn NOT_SERVING and stop gracefully.

    `drain_s` is how long to keep serving after turning NOT_SERVING, so load balancers
    see it before new calls are refused; `max_concurrent_rpcs` bounds memory (callers
    beyond it get RESOURCE_EXHAUSTED with RetryInfo; health is never refused; client
    streams get a quarter of the bound). Every method of `services` must declare its access
    rule (handoff.auth.v1.access), checked against `authenticator`'s callers; health and
    reflection are open. With `readiness_check`, the health service `readiness` follows
    it (services/common/readiness.py).
    """
    names = [s.full_name for s in services]
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    access = AccessInterceptor(
        authenticator,
        method_rules(names),
        [health_name, reflection.SERVICE_NAME],
        plaintext=tls is None,
        tls_terminated_upstream=tls_terminated_upstream,
        unchecked=not access_checks,
    )
    interceptors: list[grpc.aio.ServerInterceptor] = [DomainErrorInterceptor()]
    limit_options: list[tuple[str, int]] = []
    if max_concurrent_rpcs is not None:
        limit_options = core_options(max_concurrent_rpcs)
        # Counted here rather than by gRPC core, which would count health calls too.
        interceptors.append(
            CallLimitInterceptor(max_concurrent_rpcs, [health_name, reflection.SERVICE_NAME])
        )
    interceptors.append(access)
    server = grpc.aio.server(
        # The error mapping wraps the limit and the access check, so refusals become
        # statuses too.
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Off unless several worker processes share the port on purpose: a second
            # server on a taken port must fail, not silently split the traffic.
            ("grpc.so_reuseport", int(reuse_port)),
            *limit_options,
        ],
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in services:
        service.register(server)
    if reflection_enabled:
        reflection.enable_server_reflection([*names, health_name, reflection.SERVICE_NAME], server)
    address = f"{host}:{port}"
    try:
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, grpc_server_credentials(tls))
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc}") from exc
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    for name in ["", *names]:
        await health_servicer.set(name, serving)
    following = None
    if readiness_check is not None:
        following = asyncio.create_task(
            follow_readiness(health_servicer, readiness_check, grace_s=readiness_grace_s),
            name="readiness",
        )
    try:
        yield RunningServer(server=server, port=bound, health=health_servicer)
    finally:
        if following is not None:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        # Tell load balancers first, then let in-flight calls finish within the grace.
        await health_servicer.enter_graceful_shutdown()
        if drain_s > 0:
            await asyncio.sleep(drain_s)
        await server.stop(grace_s)


def tls_files(config: ServiceConfig) -> TlsFiles | None:
    """The TLS files a service's configuration names, if any."""
    access = config.access
    if not access.tls_cert_file:
        return None
    return TlsFiles(Path(access.tls_cert_file), Path(access.tls_key_file))


def grpc_server_for(
    config: ServiceConfig,
    services: Sequence[GrpcService],
    authenticator: Authenticator,
    readiness_check: Check | None = None,
) -> AbstractAsyncContextManager[RunningServer]:
    """grpc_server with everything a service's configuration says about serving."""
    return grpc_server(
        config.host,
        config.port,
        services,
        authenticator=authenticator,
        tls=tls_files(config),
        tls_terminated_upstream=config.access.tls_terminated_upstream,
        reflection_enabled=config.access.reflection,
        access_checks=not config.access.checks_disabled,
        grace_s=config.shutdown_grace_s,
        reuse_port=config.reuse_port,
        drain_s=config.shutdown_drain_s,
        max_concurrent_rpcs=config.max_concurrent_rpcs,
        readiness_check=readiness_check,
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

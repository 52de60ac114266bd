"""The shared gRPC bootstrap: drain before stopping, bounded concurrent calls."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.auth.verify import Authenticator
from services.common.grpc_server import grpc_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _NoCredentials:
    """A credential store that holds none: health needs no credential."""

    async def lookup(self, credential_id: object) -> None:
        return None


NOBODY = Authenticator(_NoCredentials())


async def test_server_answers_not_serving_during_the_drain_then_stops() -> None:
    stack = AsyncExitStack()
    running = await stack.enter_async_context(
        grpc_server("127.0.0.1", 0, [], authenticator=NOBODY, drain_s=0.6)
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == SERVING

        stopping = asyncio.create_task(stack.aclose())
        await asyncio.sleep(0.2)
        # Still accepting calls, and telling load balancers to go elsewhere.
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == NOT_SERVING
        assert not stopping.done()

        await asyncio.wait_for(stopping, 5)
        with pytest.raises(grpc.aio.AioRpcError):
            await health.Check(health_pb2.HealthCheckRequest(), timeout=1)


async def test_health_is_never_counted_against_the_call_bound() -> None:
    async with (
        grpc_server(
            "127.0.0.1", 0, [], authenticator=NOBODY, grace_s=0.1, max_concurrent_rpcs=1
        ) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(3)]
        for watch in watches:
            assert (await watch.read()).status == SERVING
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == SERVING
        for watch in watches:
            watch.cancel()


async def test_reflection_answers_unless_switched_off() -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    request = reflection_pb2.ServerReflectionRequest(list_services="")
    for enabled in (True, False):
        async with (
            grpc_server(
                "127.0.0.1", 0, [], authenticator=NOBODY, reflection_enabled=enabled
            ) as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
        ):
            call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([request])
            )
            if enabled:
                reply = await call.read()
                names = [s.name for s in reply.list_services_response.service]
                assert "grpc.health.v1.Health" in names
            else:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call.read()
                assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_readiness_follows_the_database_after_a_grace_and_liveness_stays_up() -> None:
    from services.common.readiness import READINESS_SERVICE, follow_readiness

    down = True

    async def check() -> None:
        if down:
            raise ConnectionRefusedError("the database is down")

    async with (
        grpc_server("127.0.0.1", 0, [], authenticator=NOBODY, grace_s=0.1) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)

        async def status(service: str) -> int:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            return int(reply.status)

        following = asyncio.create_task(
            follow_readiness(running.health, check, every_s=0.02, grace_s=0.2)
        )
        try:
            await asyncio.sleep(0.05)
            assert await status(READINESS_SERVICE) == SERVING  # within the grace
            await asyncio.sleep(0.35)
            assert await status(READINESS_SERVICE) == NOT_SERVING
            assert await status("") == SERVING  # liveness: not broken, only not ready
            down = False
            await asyncio.sleep(0.1)
            assert await status(READINESS_SERVICE) == SERVING
        finally:
            following.cancel()

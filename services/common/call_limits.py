"""Bounds on calls in flight, checked per call: beyond them RESOURCE_EXHAUSTED with
RetryInfo. Health and reflection are never counted, so a full server still answers its
probes; client-streaming calls (which a slow client can hold open for long) have a
smaller bound of their own, so a few stalled streams cannot take every slot."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc

from services.common.errors import ResourceExhaustedError
from services.common.grpc_handlers import (
    AnyHandler,
    StreamingBehavior,
    UnaryBehavior,
    WrapOnce,
    rewrap,
)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
STREAM_SHARE = 4  # client streams may hold at most 1/STREAM_SHARE of the calls
# gRPC core queues calls that arrived before the event loop asks for them, and beyond
# `grpc.server.max_pending_requests` (1,000 by default, with random early drops up to a
# hard limit of 3,000) it cancels them: CANCELLED, which clients do not retry. The queue
# holds only each call's headers and its stream's flow-control window, so it may grow far
# beyond the bound on calls in flight, which then refuses what it must itself
# (RESOURCE_EXHAUSTED with RetryInfo). (Capping streams per connection instead,
# grpc.max_concurrent_streams, answers a burst UNAVAILABLE: a client opens streams before
# it learns the cap, and the server resets them with REFUSED_STREAM.)
PENDING_PER_CALL = 10
MIN_PENDING = 10_000


def core_options(limit: int) -> list[tuple[str, int]]:
    """gRPC core settings that leave refusing overload to CallLimitInterceptor(limit)."""
    pending = max(limit * PENDING_PER_CALL, MIN_PENDING)
    return [
        ("grpc.server.max_pending_requests", pending),
        ("grpc.server.max_pending_requests_hard_limit", pending),
    ]


class _Counter:
    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.used = 0
        self.what = what

    def take(self) -> None:
        if self.used >= self.limit:
            raise ResourceExhaustedError(
                f"the server is at its limit of {self.limit} {self.what} in flight; retry shortly"
            )
        self.used += 1

    def give(self) -> None:
        self.used -= 1


class CallLimitInterceptor(grpc.aio.ServerInterceptor):
    """At most `limit` calls in flight (client streams: at most limit / STREAM_SHARE)."""

    def __init__(self, limit: int, open_services: Iterable[str]) -> None:
        self._calls = _Counter(limit, "calls")
        self._streams = _Counter(max(1, limit // STREAM_SHARE), "client streams")
        self._open = tuple(f"/{name}/" for name in open_services)
        self._wrap_once = WrapOnce(self._wrap)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(self._open):
            return handler
        return self._wrap_once(method, handler)

    def _wrap(self, method: str, handler: AnyHandler) -> AnyHandler:
        raw: Any = handler
        counters = [self._calls]
        if raw.stream_unary or raw.stream_stream:
            counters.append(self._streams)

        def take() -> None:
            taken = []
            try:
                for counter in counters:
                    counter.take()
                    taken.append(counter)
            except ResourceExhaustedError:
                for counter in taken:
                    counter.give()
                raise

        def give() -> None:
            for counter in counters:
                counter.give()

        def unary(behavior: UnaryBehavior) -> UnaryBehavior:
            async def wrapped(request: Any, context: Any) -> Any:
                take()
                try:
                    return await behavior(request, context)
                finally:
                    give()

            return wrapped

        def streaming(behavior: StreamingBehavior) -> StreamingBehavior:
            async def wrapped(request: Any, context: Any) -> Any:
                take()
                try:
                    async for item in behavior(request, context):
                        yield item
                finally:
                    give()

            return wrapped

        return rewrap(handler, unary, streaming)

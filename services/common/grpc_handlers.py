"""Rebuilds an RPC method handler around wrapped behaviours (for server interceptors)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
AnyHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
StreamingBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


def rewrap(
    handler: grpc.RpcMethodHandler[_Req, _Resp],
    wrap_unary: Callable[[UnaryBehavior], UnaryBehavior],
    wrap_streaming: Callable[[StreamingBehavior], StreamingBehavior],
) -> grpc.RpcMethodHandler[_Req, _Resp]:
    """The same handler with its behaviour wrapped.

    `wrap_unary` wraps behaviours that answer once (whatever their request side);
    `wrap_streaming` wraps async generators that stream answers. A streaming behaviour
    written as a coroutine calling context.write() (like grpc's health Watch) counts as
    unary here.
    """
    # The stubs type behaviours as synchronous; under grpc.aio they are coroutines.
    raw: Any = handler
    kwargs: dict[str, Any] = {
        "request_deserializer": raw.request_deserializer,
        "response_serializer": raw.response_serializer,
    }

    def streaming(behavior: Any) -> Any:
        if inspect.isasyncgenfunction(behavior):
            return wrap_streaming(behavior)
        return wrap_unary(behavior)

    wrapped: Any = handler
    if raw.unary_unary:
        wrapped = grpc.unary_unary_rpc_method_handler(wrap_unary(raw.unary_unary), **kwargs)
    elif raw.stream_unary:
        wrapped = grpc.stream_unary_rpc_method_handler(wrap_unary(raw.stream_unary), **kwargs)
    elif raw.unary_stream:
        wrapped = grpc.unary_stream_rpc_method_handler(streaming(raw.unary_stream), **kwargs)
    elif raw.stream_stream:
        wrapped = grpc.stream_stream_rpc_method_handler(streaming(raw.stream_stream), **kwargs)
    result: grpc.RpcMethodHandler[_Req, _Resp] = wrapped
    return result


class WrapOnce:
    """Caches one wrapped handler per method, so wrapping happens once, not per call."""

    def __init__(
        self,
        wrap: Callable[[str, grpc.RpcMethodHandler[Any, Any]], grpc.RpcMethodHandler[Any, Any]],
    ) -> None:
        self._wrap = wrap
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    def __call__(
        self, method: str, handler: grpc.RpcMethodHandler[_Req, _Resp]
    ) -> grpc.RpcMethodHandler[_Req, _Resp]:
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            hit: grpc.RpcMethodHandler[_Req, _Resp] = cached[1]
            return hit
        result: grpc.RpcMethodHandler[_Req, _Resp] = self._wrap(method, handler)
        self._wrapped[method] = (handler, result)
        return result

"""Client channels that present a credential on every call (services, tools, tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc


class _Bearer:
    """Adds `authorization: Bearer <token>` to each call's metadata."""

    def __init__(self, token: str) -> None:
        self._pair = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), self._pair]
        return details._replace(metadata=grpc.aio.Metadata(*metadata))


# grpc.aio files each interceptor under the first call kind it implements, so one class
# per kind.
class _UnaryUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnary(_Bearer, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _StreamStream(_Bearer, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def bearer_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors that present `token` on calls of every kind."""
    return [kind(token) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]


def credential_channel(
    target: str,
    token: str,
    *,
    root_certificates: bytes | None = None,
    tls: bool = False,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A channel to `target` whose calls carry `token`; TLS when `tls` or a CA is given."""
    interceptors = bearer_interceptors(token)
    if tls or root_certificates is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates)
        return grpc.aio.secure_channel(target, credentials, options, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options, interceptors=interceptors)

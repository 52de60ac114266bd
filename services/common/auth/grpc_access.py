"""The one gRPC server interceptor that establishes the caller and checks the method's rule."""

from __future__ import annotations

import ipaddress
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import grpc
from opentelemetry import trace

from services.common.auth.context import current_caller, current_request_id
from services.common.auth.model import AccessRule, Caller, CredentialKind, Role
from services.common.auth.rules import authorize
from services.common.auth.tokens import presented_token
from services.common.auth.verify import Authenticator
from services.common.errors import PermissionDeniedError, UnauthenticatedError
from services.common.grpc_handlers import (
    AnyHandler,
    StreamingBehavior,
    UnaryBehavior,
    WrapOnce,
    rewrap,
)

log = logging.getLogger(__name__)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
Context = grpc.aio.ServicerContext[Any, Any]


UNCHECKED = Caller(
    uuid.UUID(int=0), CredentialKind.SERVICE, "unchecked (benchmarks)", roles=frozenset(Role)
)


def peer_is_loopback(peer: str) -> bool:
    """Whether a gRPC peer string ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000",
    "unix:/path") is on this machine."""
    kind, _, rest = peer.partition(":")
    if kind in ("unix", "unix-abstract"):
        return True
    if kind == "ipv4":
        host = rest.rpartition(":")[0]
    elif kind == "ipv6":
        host = rest.rpartition(":")[0].strip("[]")
    else:
        return False
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """Every call to a method in `rules` needs a credential the rule allows.

    Methods of `open_services` (health, reflection) need none. A method that is in
    neither is refused: a servicer mounted without rules cannot be called.
    `plaintext` says the port serves without TLS: then a credential from a peer that is
    not on this machine is refused, unless `tls_terminated_upstream` (a mesh or gateway
    terminates TLS in front and forwards the call). `unchecked` admits every call as an
    all-roles caller without looking at credentials: benchmarks measure the check
    against it (HANDOFF_UNSAFE_DISABLE_ACCESS_CHECKS, loopback only).
    """

    def __init__(
        self,
        authenticator: Authenticator,
        rules: Mapping[str, AccessRule],
        open_services: Iterable[str],
        *,
        plaintext: bool,
        tls_terminated_upstream: bool = False,
        unchecked: bool = False,
    ) -> None:
        self._authenticator = authenticator
        self._rules = dict(rules)
        self._open = tuple(f"/{name}/" for name in open_services)
        self._check_peer = plaintext and not tls_terminated_upstream
        self._unchecked = unchecked
        if unchecked:
            log.warning("access checks are OFF (HANDOFF_UNSAFE_DISABLE_ACCESS_CHECKS)")
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
        rule = self._rules.get(method)
        admit = self._admit

        def unary(behavior: UnaryBehavior) -> UnaryBehavior:
            async def wrapped(request: Any, context: Context) -> Any:
                await admit(method, rule, context, request)
                return await behavior(request, context)

            return wrapped

        def streaming(behavior: StreamingBehavior) -> StreamingBehavior:
            async def wrapped(request: Any, context: Context) -> Any:
                await admit(method, rule, context, request)
                async for item in behavior(request, context):
                    yield item

            return wrapped

        return rewrap(handler, unary, streaming)

    async def _admit(
        self, method: str, rule: AccessRule | None, context: Context, request: Any
    ) -> Caller:
        """Establish the caller, check `rule`, and put the caller in context."""
        if self._unchecked:
            current_caller.set(UNCHECKED)
            return UNCHECKED
        metadata = [(k, v) for k, v in context.invocation_metadata() or () if isinstance(v, str)]
        authorization = None
        request_id = ""
        for key, value in metadata:
            if key == "authorization":
                authorization = value
            elif key == "x-request-id":
                request_id = value[:128]
        current_request_id.set(request_id)
        token = presented_token(authorization, metadata)
        if self._check_peer and not peer_is_loopback(context.peer()):
            raise UnauthenticatedError(
                "a credential may not travel over plaintext from another host: connect with "
                "TLS (the server needs HANDOFF_TLS_CERT_FILE and HANDOFF_TLS_KEY_FILE), or "
                "set HANDOFF_TLS_TERMINATED_UPSTREAM=1 where a mesh terminates TLS in front"
            )
        caller = await self._authenticator.authenticate(token)
        # Each grpc.aio call runs in its own task: the value lives and dies with the call.
        current_caller.set(caller)
        trace.get_current_span().set_attribute("handoff.caller", caller.label)
        if rule is None:
            raise PermissionDeniedError(f"{method} has no access rule")
        field = rule.account_field
        authorize(rule, caller, method, getattr(request, field) if field else None)
        return caller

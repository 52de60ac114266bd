"""Turns domain errors into gRPC statuses with google.rpc details; hides unexpected ones."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.common.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    HandoffError,
    IdleStreamError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from services.common.grpc_handlers import StreamingBehavior, UnaryBehavior, WrapOnce, rewrap

log = logging.getLogger(__name__)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

_CODES: list[tuple[type[HandoffError], int]] = [
    (InvalidArgumentError, code_pb2.INVALID_ARGUMENT),
    (NotFoundError, code_pb2.NOT_FOUND),
    (AlreadyExistsError, code_pb2.ALREADY_EXISTS),
    (FailedPreconditionError, code_pb2.FAILED_PRECONDITION),
    (UnavailableError, code_pb2.UNAVAILABLE),
    (ResourceExhaustedError, code_pb2.RESOURCE_EXHAUSTED),
    (UnauthenticatedError, code_pb2.UNAUTHENTICATED),
    (PermissionDeniedError, code_pb2.PERMISSION_DENIED),
]


def _code(error: HandoffError) -> int:
    """The error's code; one without its own is UNAVAILABLE when retryable, else INTERNAL."""
    code: int | None = next((c for kind, c in _CODES if isinstance(error, kind)), None)
    if code is None:
        retryable: int = code_pb2.UNAVAILABLE if error.retryable else code_pb2.INTERNAL
        return retryable
    return code


def status_for(error: HandoffError) -> status_pb2.Status:
    """Build the google.rpc.Status for a domain error (BadRequest for field problems)."""
    code = _code(error)
    status = status_pb2.Status(code=code, message=error.message)
    if isinstance(error, InvalidArgumentError) and error.problems:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=p.field, description=p.message, reason=p.code
                )
                for p in error.problems
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        status.details.append(detail)
    if error.retryable:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo())
        status.details.append(detail)
    return status


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: HandoffError) -> None:
    code = _code(error)
    if code == code_pb2.INTERNAL:  # e.g. a DatabaseError: its text is for the logs only
        await _abort_unexpected(context, error)
        return
    if code == code_pb2.UNAVAILABLE and not isinstance(error, IdleStreamError):
        # The cause (a host, a driver message) is for the logs, not for callers.
        log.warning("dependency unavailable: %s", error.message, exc_info=error.__cause__)
        error = UnavailableError("a dependency is unavailable; retry with backoff")
    await context.abort_with_status(rpc_status.to_status(status_for(error)))


async def _abort_unexpected(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
    """INTERNAL with a reference to find in the logs; the error itself stays server-side."""
    reference = uuid.uuid4().hex[:12]
    log.error("unexpected error (reference %s)", reference, exc_info=exc)
    status = status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"internal error (reference {reference})"
    )
    await context.abort_with_status(rpc_status.to_status(status))


def _wrap_unary(behavior: UnaryBehavior) -> UnaryBehavior:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behavior(request, context)
        except HandoffError as error:
            await _abort(context, error)
        except grpc.aio.AbortError:
            raise  # the servicer aborted on purpose
        except Exception as exc:
            await _abort_unexpected(context, exc)

    return wrapped


def _wrap_streaming(behavior: StreamingBehavior) -> StreamingBehavior:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            async for item in behavior(request, context):
                yield item
        except HandoffError as error:
            await _abort(context, error)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort_unexpected(context, exc)

    return wrapped


class DomainErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps HandoffError raised by any servicer method to its gRPC status."""

    def __init__(self) -> None:
        self._wrap_once = WrapOnce(lambda _, h: rewrap(h, _wrap_unary, _wrap_streaming))

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self._wrap_once(handler_call_details.method, handler)

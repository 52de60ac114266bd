"""RFC 9457 problem details: every HTTP error the export service answers looks like this."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from services.common.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    HandoffError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
)

PROBLEM_CONTENT_TYPE = "application/problem+json"
RETRY_AFTER_S = 1  # what a dependency's outage asks a client to wait

log = logging.getLogger(__name__)


def problem_body(
    status: int, detail: str = "", *, instance: str = "", **extensions: Any
) -> dict[str, Any]:
    """The problem document for `status`: type about:blank, the status phrase as title."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extensions)
    return body


def problem_response(
    status: int,
    detail: str = "",
    *,
    instance: str = "",
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> web.Response:
    """An application/problem+json response."""
    body = problem_body(status, detail, instance=instance, **extensions)
    return web.Response(
        status=status,
        text=json.dumps(body, ensure_ascii=False),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def _detail_for(exc: web.HTTPException, request: web.Request) -> str:
    if isinstance(exc, web.HTTPNotFound):
        return f"no resource at {request.path}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"{exc.method} is not allowed on {request.path}; allowed: {allowed}"
    # aiohttp's default text is "<code>: <reason>", which the title already says.
    text = exc.text or ""
    return "" if text.startswith(f"{exc.status}:") else text


def domain_problem(error: HandoffError, instance: str) -> web.Response:
    """The problem document for a domain error (the same mapping gRPC uses)."""
    if isinstance(error, InvalidArgumentError):
        params = [{"name": p.field, "code": p.code, "reason": p.message} for p in error.problems]
        return problem_response(400, error.message, instance=instance, invalid_params=params)
    if isinstance(error, NotFoundError):
        return problem_response(404, error.message, instance=instance)
    if isinstance(error, PermissionDeniedError):
        return problem_response(403, error.message, instance=instance)
    if isinstance(error, AlreadyExistsError | FailedPreconditionError):
        return problem_response(409, error.message, instance=instance)
    if error.retryable:
        # A dependency's message may name the driver: the client gets what to do.
        status = 429 if isinstance(error, ResourceExhaustedError) else 503
        detail = "the service is busy" if status == 429 else "a dependency is unavailable"
        return problem_response(
            status, f"{detail}; retry with backoff", instance=instance,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )  # fmt: skip
    log.error("unmapped domain error: %s", error.message, extra={"path": instance})
    return problem_response(500, "unexpected error; see the service log", instance=instance)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn HTTP errors (404, 405, ...), domain errors and unexpected exceptions into
    problem documents."""
    try:
        return await handler(request)
    except HandoffError as error:
        return domain_problem(error, request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {}
        if isinstance(exc, web.HTTPMethodNotAllowed):
            headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return problem_response(
            exc.status, _detail_for(exc, request), instance=request.path, headers=headers
        )
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return problem_response(500, "unexpected error; see the service log", instance=request.path)

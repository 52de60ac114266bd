"""RFC 9457 problem details: every HTTP error the export service answers looks like this."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

PROBLEM_CONTENT_TYPE = "application/problem+json"

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


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn HTTP errors (404, 405, ...) and unexpected exceptions into problem documents."""
    try:
        return await handler(request)
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

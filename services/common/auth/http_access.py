"""The one aiohttp middleware that establishes the caller and checks the route's rule.

Routes are added with `add_route`, which records their rule; `check_rules` (run when
the app is built) refuses an app with a route that has neither a rule nor a place in
the open list. Refusals are problem documents: 401 (with WWW-Authenticate), 403, and
404 for another account's ids, exactly as for ids that do not exist.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from services.common.auth.context import current_caller
from services.common.auth.model import AccessRule, Caller
from services.common.auth.rules import authorize
from services.common.auth.tokens import presented_token
from services.common.auth.verify import Authenticator
from services.common.errors import (
    HandoffError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)

ROUTE_RULES = web.AppKey("route_rules", dict[web.AbstractRoute, AccessRule])
OPEN_PATHS = web.AppKey("open_paths", frozenset[str])
Problem = Callable[[int, str, str, dict[str, str]], web.StreamResponse]
# Called once the caller is known, before the rule is checked: a response refuses the call
# (e.g. 429 when the credential's rate limit is spent), None lets it go on.
AfterAuth = Callable[[web.Request, Caller], web.StreamResponse | None]


def add_route(
    app: web.Application,
    method: str,
    path: str,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    rule: AccessRule,
) -> None:
    """Mount `handler` at `path`, callable as `rule` says."""
    route = app.router.add_route(method, path, handler)
    app.setdefault(ROUTE_RULES, {})[route] = rule


def check_rules(app: web.Application, open_paths: Iterable[str]) -> None:
    """Refuse an app with a route that has no rule and is not open (e.g. /healthz)."""
    opened = frozenset(open_paths)
    app[OPEN_PATHS] = opened
    rules = app.setdefault(ROUTE_RULES, {})
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = str(info.get("path") or info.get("formatter") or "")
        if route not in rules and path not in opened and route.method != "HEAD":
            raise RuntimeError(f"{route.method} {path} has no access rule")


def _is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.partition("%")[0]).is_loopback
    except ValueError:
        return False


def access_middleware(
    authenticator: Authenticator,
    problem: Problem,
    *,
    tls_terminated_upstream: bool = False,
    after_auth: AfterAuth | None = None,
) -> Middleware:
    """The middleware: `problem(status, detail, instance, headers)` answers refusals.

    The request id is not set here: the app's first middleware owns it."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        rule = request.app.get(ROUTE_RULES, {}).get(route)
        if rule is None:
            # Open paths, and 404/405 answers (which say nothing about any account).
            return await handler(request)
        try:
            token = presented_token(request.headers.get("Authorization"), request.headers.items())
            if not (request.secure or tls_terminated_upstream or _is_loopback(request.remote)):
                raise UnauthenticatedError(
                    "a credential may not travel over plaintext from another host: use HTTPS, "
                    "or set HANDOFF_TLS_TERMINATED_UPSTREAM=1 where a gateway terminates TLS"
                )
            caller = await authenticator.authenticate(token)
            current_caller.set(caller)
            refusal = after_auth(request, caller) if after_auth is not None else None
            if refusal is not None:
                return refusal
            field = rule.account_field
            what = f"{request.method} {request.path}"
            authorize(rule, caller, what, request.match_info.get(field) if field else None)
        except UnauthenticatedError as error:
            challenge = {"WWW-Authenticate": 'Bearer realm="handoff"'}
            return problem(401, error.message, request.path, challenge)
        except PermissionDeniedError as error:
            return problem(403, error.message, request.path, {})
        except NotFoundError as error:
            return problem(404, error.message, request.path, {})
        except HandoffError as error:  # the credential store is unreachable
            detail = "a dependency is unavailable; retry with backoff"
            return problem(503 if error.retryable else 500, detail, request.path, {})
        return await handler(request)

    return middleware

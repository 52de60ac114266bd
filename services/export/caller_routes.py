"""GET /v1/me: who the presented credential is (any valid credential may ask)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID

from aiohttp import web

from services.common.auth.context import caller
from services.common.auth.model import AccessRule
from services.common.errors import PermissionDeniedError

Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]], AccessRule]


def caller_account() -> UUID:
    """The account the caller's token acts for (the account-scoped routes' only account);
    a service credential has none."""
    account = caller().account_id
    if account is None:
        raise PermissionDeniedError("this route answers about one account: use its token")
    return account


async def me(request: web.Request) -> web.StreamResponse:
    """The caller's credential id, kind, account and scopes or roles (never the token)."""
    found = caller()
    return web.json_response(
        {
            "credential_id": str(found.credential_id),
            "kind": found.kind.value,
            "name": found.name,
            "account_id": str(found.account_id) if found.account_id else None,
            "scopes": sorted(found.scopes),
            "roles": sorted(r.value for r in found.roles),
            "expires_at": found.expires_at.isoformat() if found.expires_at else None,
        }
    )


def caller_routes() -> list[Route]:
    """The routes of this module with their access rules."""
    return [("GET", "/v1/me", me, AccessRule(any_caller=True))]

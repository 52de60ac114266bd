"""GET /v1/me: who the presented credential is (any valid credential may ask); and what
every account-scoped route shares: the caller's account, newest-first pages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

from aiohttp import web

from services.common.auth.context import caller
from services.common.auth.model import AccessRule
from services.common.errors import PermissionDeniedError
from services.common.paging import decode_token, fetch_page, invalid_token, page_size
from services.export.params import Params

Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]], AccessRule]
D = TypeVar("D", bound="Dated")


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


class Dated(Protocol):
    """An item of a newest-first page: ordered by its creation, then its id."""

    @property
    def id(self) -> UUID: ...
    @property
    def created_at(self) -> datetime: ...


def time_id_before(token: str) -> tuple[datetime, UUID] | None:
    """The (time, id) position a newest-first page token says the page starts after."""
    if not token:
        return None
    at, _, last = decode_token(token).partition("|")
    try:
        return datetime.fromisoformat(at), UUID(last)
    except ValueError as exc:
        raise invalid_token() from exc


async def newest_first(
    request: web.Request,
    page_of: Callable[[tuple[datetime, UUID] | None, int], Awaitable[Sequence[D]]],
    document: Callable[[D], Any],
) -> web.StreamResponse:
    """A page of the account's items newest first (`page_size`, `page_token`, nothing
    else), as {"items", "next_page_token"}."""
    params = Params(request.query, ("page_size", "page_token"))
    size = params.integer("page_size", low=1, high=1000)
    token = params.text("page_token")
    params.done()
    before = time_id_before(token)
    page = await fetch_page(
        lambda limit: page_of(before, limit),
        page_size(size or 0),
        lambda item: f"{item.created_at.isoformat()}|{item.id}",
    )
    return web.json_response(
        {"items": [document(item) for item in page.items], "next_page_token": page.next_token}
    )

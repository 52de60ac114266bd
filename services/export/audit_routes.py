"""GET /v1/audit: the account's audit log of exports and downloads, newest first."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from aiohttp import web

from services.common.auth.model import AccessRule
from services.common.paging import decode_token, fetch_page, invalid_token, page_size
from services.export.audit import ACTIONS, AuditLog
from services.export.caller_routes import Route, caller_account
from services.export.params import Params, interval

AUDIT_PARAMS = ("action", "from", "to", "time_zone", "page_size", "page_token")


class AuditRoutes:
    """The handler of the audit log route."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    def routes(self) -> list[Route]:
        """The route with its access rule."""
        return [("GET", "/v1/audit", self.page, AccessRule(scope="config:read"))]

    async def page(self, request: web.Request) -> web.StreamResponse:
        """A page of entries, newest first; `from`/`to` bound when they started."""
        account = caller_account()
        p = Params(request.query, AUDIT_PARAMS)
        action = p.text("action", "", ACTIONS) or None
        span = interval(p, p.zone("time_zone"))
        size = page_size(p.integer("page_size", low=1, high=1000) or 0)
        token = p.text("page_token")
        p.done()
        before: tuple[datetime, UUID] | None = None
        if token:
            at, _, last = decode_token(token).partition("|")
            try:
                before = (datetime.fromisoformat(at), UUID(last))
            except ValueError as exc:
                raise invalid_token() from exc
        page = await fetch_page(
            lambda limit: self._audit.page(account, action, span.start, span.end, before, limit),
            size,
            lambda entry: f"{entry.started_at.isoformat()}|{entry.id}",
        )
        return web.json_response(
            {"items": [e.document() for e in page.items], "next_page_token": page.next_token},
            headers={"Cache-Control": "no-store"},
        )

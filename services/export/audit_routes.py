"""GET /v1/audit: the account's audit log of exports and downloads, newest first."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from aiohttp import web

from services.common.auth.context import caller
from services.common.auth.model import AccessRule
from services.common.paging import decode_token, encode_token, invalid_token, page_size
from services.export.audit import ACTIONS, AuditLog
from services.export.params import Params, interval
from services.export.referral_routes import Route

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
        account = caller().account_id
        assert account is not None  # the rule admits account tokens only
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
        entries = await self._audit.page(account, action, span.start, span.end, before, size + 1)
        shown = entries[:size]
        next_token = ""
        if len(entries) > size:
            next_token = encode_token(f"{shown[-1].started_at.isoformat()}|{shown[-1].id}")
        return web.json_response(
            {"items": [e.document() for e in shown], "next_page_token": next_token},
            headers={"Cache-Control": "no-store"},
        )

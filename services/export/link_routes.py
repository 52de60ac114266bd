"""Signed links, opened without a credential (the signature is the permission):
`/v1/links/confirm` — a recipient confirms that it wants an email connection's files;
`/v1/links/download` — exactly one delivery's file, for an email too large to attach
(rendered again from the delivery's fixed layout and range: the same bytes).

GET only shows a page with a button: mail scanners and link previews fetch links, and a
fetch must not approve anyone; the POST of that button (carrying the same token) does.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncGenerator
from typing import Protocol
from uuid import UUID

from aiohttp import web

from services.common.signed_links import LinkError, LinkSigner
from services.delivery.parts import RowCount
from services.export.audit import AuditLog
from services.export.store import ExportStore
from services.export.streams import send_stream

CONFIRM_PATH = "/v1/links/confirm"
CONFIRM_PURPOSE = "confirm-recipient"
DOWNLOAD_PATH = "/v1/links/download"
DOWNLOAD_PURPOSE = "download-delivery"
LINK_PATHS = (CONFIRM_PATH, DOWNLOAD_PATH)
# What a signed token looks like (URL-safe base64, a dot, URL-safe base64): anything else
# is a link cut short or mangled by a mail client, answered 400 rather than 410.
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_.-]{1,1000}")
_INCOMPLETE = "the link is incomplete: open or copy the whole link from the email"


class DeliveryFiles(Protocol):
    """Renders one delivery's file again: (file name, chunks), or None when it has none."""

    async def file_of(
        self, delivery_id: UUID, count: RowCount | None = None
    ) -> tuple[str, AsyncGenerator[bytes, None]] | None: ...


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<meta name="robots" content="noindex"></head><body><h1>{title}</h1><p>{text}</p>{form}
</body></html>"""


def _page(title: str, text: str, form: str = "", status: int = 200) -> web.Response:
    body = _PAGE.format(title=html.escape(title), text=html.escape(text), form=form)
    return web.Response(
        text=body, status=status, content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )  # fmt: skip


class LinkRoutes:
    """The handlers of signed links."""

    def __init__(
        self,
        store: ExportStore,
        signer: LinkSigner,
        files: DeliveryFiles | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self._store = store
        self._signer = signer
        self._files = files
        self._audit = audit

    @staticmethod
    def _shaped(token: str) -> web.Response | None:
        """A 400 page for a token that cannot be one (missing, cut, mangled)."""
        if TOKEN_SHAPE.fullmatch(token):
            return None
        return _page("This link does not work", _INCOMPLETE, status=400)

    def _claim(self, token: str) -> UUID:
        claim = self._signer.check(token, CONFIRM_PURPOSE)
        return UUID(claim.subject)

    async def show_confirmation(self, request: web.Request) -> web.StreamResponse:
        """The page with the confirm button (changes nothing)."""
        token = request.query.get("token", "")
        if (refusal := self._shaped(token)) is not None:
            return refusal
        try:
            self._claim(token)
        except (LinkError, ValueError) as exc:
            return _page("This link does not work", str(exc), status=410)
        form = (
            f'<form method="post" action="{CONFIRM_PATH}"><input type="hidden" name="token" '
            f'value="{html.escape(token)}"><button type="submit">Confirm</button></form>'
        )
        return _page(
            "Confirm referral deliveries",
            "Press the button to confirm that this address may receive referral files.",
            form,
        )

    async def confirm(self, request: web.Request) -> web.StreamResponse:
        """Approve the pending recipient the token names."""
        try:
            form = await request.post()
        except (ValueError, LookupError, web.HTTPException):  # a body that is no form
            return _page("This link does not work", _INCOMPLETE, status=400)
        token = str(form.get("token", ""))
        if (refusal := self._shaped(token)) is not None:
            return refusal
        try:
            recipient = self._claim(token)
        except (LinkError, ValueError) as exc:
            return _page("This link does not work", str(exc), status=410)
        found = await self._store.confirm_recipient(recipient)
        if found is None:
            return _page("This link does not work", "the recipient was removed", status=410)
        address, state, _ = found
        if state != "approved":
            return _page(
                "Not confirmed",
                f"{address} was revoked; ask the sender to add it again.",
                status=409,
            )
        return _page("Confirmed", f"{address} will receive the referral files from now on.")

    async def download(self, request: web.Request) -> web.StreamResponse:
        """Stream exactly the delivery's file the token names."""
        token = request.query.get("token", "")
        if (refusal := self._shaped(token)) is not None:
            return refusal
        try:
            claim = self._signer.check(token, DOWNLOAD_PURPOSE)
            delivery = UUID(claim.subject)
        except (LinkError, ValueError) as exc:
            return _page("This link does not work", str(exc), status=410)
        count = RowCount()
        found = None if self._files is None else await self._files.file_of(delivery, count)
        account = await self._store.delivery_account(delivery) if found is not None else None
        if found is None or account is None:
            return _page("This link does not work", "the file is not available", status=410)
        name, chunks = found
        entry: UUID | None = None
        if self._audit is not None:
            filters = {"delivery_id": str(delivery)}
            entry = await self._audit.begin(account, "link_download", filters, by_link=True)
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment; filename="{name}"',
                "Cache-Control": "no-store",
            }
        )

        async def nothing_before_the_end(sent: int) -> None:
            return None

        outcome, sent = "failed", 0
        try:
            outcome, sent = await send_stream(request, response, chunks, nothing_before_the_end)
        finally:
            if self._audit is not None and entry is not None:
                await self._audit.finish(entry, outcome, count.rows, sent)
        return response

    def add_routes(self, app: web.Application) -> None:
        """Mount the link routes (open paths: the signature is checked by the handler)."""
        app.router.add_get(CONFIRM_PATH, self.show_confirmation)
        app.router.add_post(CONFIRM_PATH, self.confirm)
        app.router.add_get(DOWNLOAD_PATH, self.download)

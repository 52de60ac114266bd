"""/v1/audiences: an account's custom audiences (hashed email lists), the streamed upload
of their members (CSV or text, maybe gzip), all or nothing per upload, and the sources
pulled on a schedule (an SFTP folder, a Mailchimp audience) with their refresh."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDict

from services.common.audiences.lines import (
    BadGzipError,
    BodyTooLargeError,
    LineReader,
    Unpacker,
)
from services.common.audiences.model import KINDS, MODES, Audience
from services.common.audiences.sources import (
    PULLED,
    SourceSpec,
    source_problems,
    wrong_connection,
)
from services.common.audiences.staging import (
    MAX_FILE_BYTES,
    LineTally,
    StagedRow,
    staged_batches,
)
from services.common.audiences.store import AudienceStorePg
from services.common.auth.model import AccessRule
from services.common.control_characters import has_control_character
from services.common.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    FieldProblem,
    InvalidArgumentError,
    NotFoundError,
)
from services.export.caller_routes import Route, caller_account, newest_first
from services.export.params import Params
from services.export.streams import StreamSlots

READ = AccessRule(scope="config:read")
WRITE = AccessRule(scope="config:write")
PREFIX = "/v1/audiences"
DEFAULT_MAX_BYTES = MAX_FILE_BYTES  # uncompressed
MAX_JSON_BYTES = 16 * 1024
MAX_NAME_CHARS = 200
BODY_TYPES = ("text/csv", "text/plain")
PULL_FIELDS = ("source_settings", "refresh_interval_s")


def _audience_id(request: web.Request) -> UUID:
    params = Params(MultiDict(request.match_info), ("audience_id",))
    found = params.uuid("audience_id")
    params.done()
    assert found is not None  # the route's pattern always has it
    return found


def _missing(audience_id: UUID) -> NotFoundError:
    return NotFoundError(f"audience {audience_id} does not exist")


def _bad(name: str, code: str, reason: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"{name} {reason}", [FieldProblem(name, code, reason)])


async def _json_object(request: web.Request, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="the body must be application/json")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise web.HTTPRequestEntityTooLarge(limit, len(raw))
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad("body", "INVALID_FORMAT", "is not JSON") from exc
    if not isinstance(body, dict):
        raise _bad("body", "INVALID_FORMAT", "must be a JSON object")
    return body


@dataclass(frozen=True)
class NewAudience:
    """A caller's new audience: a name, include or exclude, and where members come from."""

    name: str
    kind: str
    source: str
    pulled: SourceSpec | None


def _new_audience(body: dict[str, Any]) -> NewAudience:
    problems = [
        FieldProblem(str(k)[:100], "UNKNOWN", "is not a field of an audience")
        for k in sorted(set(body) - {"name", "kind", "source", *PULL_FIELDS})
    ]
    name, kind = body.get("name"), body.get("kind")
    if not isinstance(name, str) or not name.strip():
        problems.append(FieldProblem("name", "REQUIRED", "must be a non-empty string"))
    elif len(name) > MAX_NAME_CHARS or has_control_character(name):
        problems.append(
            FieldProblem("name", "INVALID_FORMAT", f"at most {MAX_NAME_CHARS} characters, "
                         "no control characters")
        )  # fmt: skip
    if kind not in KINDS:
        problems.append(FieldProblem("kind", "INVALID_VALUE", "must be include or exclude"))
    pulled, found = source_problems(body)
    problems += found
    if problems:
        names = ", ".join(dict.fromkeys(p.field for p in problems))
        raise InvalidArgumentError(f"bad fields: {names}", problems)
    assert isinstance(name, str)
    assert isinstance(kind, str)
    return NewAudience(name, kind, str(body.get("source", "upload")), pulled)


def _body_kind(request: web.Request) -> bool:
    """Whether the body is CSV (else text, one value a line); 415 for anything else."""
    if request.content_type not in BODY_TYPES:
        raise web.HTTPUnsupportedMediaType(text="the body must be text/csv or text/plain")
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise web.HTTPUnsupportedMediaType(text="the body must be UTF-8")
    return request.content_type == "text/csv"


class BodyCutShortError(Exception):
    """The client stopped sending before the body's end (hung up, a broken chunk).

    Not an OSError on purpose: the store reads OSErrors as the database's."""


async def _staged_rows(
    request: web.Request, max_bytes: int, reader: LineReader, tally: LineTally
) -> AsyncIterator[list[StagedRow]]:
    """The body's members in batches, read chunk by chunk (never the whole body)."""
    # aiohttp has inflated a Content-Encoding: gzip body already; the Unpacker counts it
    # and inflates a gzip body sent without that header.
    chunks = request.content.iter_chunked(256 * 1024)
    try:
        async for batch in staged_batches(chunks, Unpacker(max_bytes), reader, tally):
            yield batch
    except BodyTooLargeError as exc:
        raise web.HTTPRequestEntityTooLarge(max_bytes, max_bytes + 1, text=str(exc)) from exc
    except BadGzipError as exc:
        raise _bad("body", "INVALID_FORMAT", str(exc)) from exc
    except (ConnectionResetError, HttpProcessingError) as exc:
        raise BodyCutShortError(str(exc)) from exc


class AudienceRoutes:
    """The handlers of /v1/audiences."""

    def __init__(
        self,
        store: AudienceStorePg,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        slots: StreamSlots | None = None,
    ) -> None:
        self._store = store
        self._max_bytes = max_bytes
        # An upload holds a connection while the file comes in, like an export.
        self._slots = slots or StreamSlots(4)

    def routes(self) -> list[Route]:
        """The routes of this module with their access rules."""
        return [
            ("POST", PREFIX, self.create, WRITE),
            ("GET", PREFIX, self.list_audiences, READ),
            ("GET", PREFIX + "/{audience_id}", self.get, READ),
            ("DELETE", PREFIX + "/{audience_id}", self.delete, WRITE),
            ("PUT", PREFIX + "/{audience_id}/members", self.upload, WRITE),
            ("POST", PREFIX + "/{audience_id}/refresh", self.refresh, WRITE),
        ]

    async def create(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/audiences {name, kind}: 201 with Location; 409 for a taken name."""
        account = caller_account()
        Params(request.query, ()).done()
        new = _new_audience(await _json_object(request))
        if new.pulled is not None:
            await self._check_connection(account, new.pulled)
        made = await self._store.create(
            uuid.uuid4(), account, new.name, new.kind, source=new.source, pulled=new.pulled
        )
        if made is None:
            raise AlreadyExistsError(f"the account has an audience named {new.name!r} already")
        return web.json_response(
            made.document(), status=201, headers={"Location": f"{PREFIX}/{made.id}"}
        )

    async def _check_connection(self, account: UUID, pulled: SourceSpec) -> None:
        """404 for a connection the account does not have, 400 for one of another kind."""
        found = await self._store.connection_kind(account, pulled.connection_id)
        if found is None:
            raise NotFoundError(f"connection {pulled.connection_id} does not exist")
        refusal = wrong_connection(pulled, found)
        if refusal is not None:
            raise refusal

    async def _audience(self, account: UUID, audience_id: UUID) -> Audience:
        """The account's audience, or 404."""
        found = await self._store.get(account, audience_id)
        if found is None:
            raise _missing(audience_id)
        return found

    async def refresh(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/audiences/{audience_id}/refresh: pull the source now (202; the
        scheduler's next tick starts it, or the next after a pull running now)."""
        account = caller_account()
        Params(request.query, ()).done()
        audience_id = _audience_id(request)
        found = await self._audience(account, audience_id)
        if found.source not in PULLED or not await self._store.request_refresh(
            account, audience_id
        ):
            raise FailedPreconditionError(
                f"audience {found.name!r} is filled by {found.source}: only an audience "
                "pulled from a source (sftp_folder, mailchimp) is refreshed"
            )
        refreshed = await self._audience(account, audience_id)  # 404: deleted meanwhile
        return web.json_response(refreshed.document(), status=202)

    async def list_audiences(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/audiences: the account's audiences, newest first."""
        account = caller_account()
        return await newest_first(
            request, lambda before, limit: self._store.page(account, before, limit),
            lambda a: a.document(),
        )  # fmt: skip

    async def get(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/audiences/{audience_id}: counts by hash kind, state, last import."""
        account = caller_account()
        Params(request.query, ()).done()
        audience_id = _audience_id(request)
        found = await self._audience(account, audience_id)
        return web.json_response(found.document())

    async def delete(self, request: web.Request) -> web.StreamResponse:
        """DELETE /v1/audiences/{audience_id}: the audience and its members."""
        account = caller_account()
        Params(request.query, ()).done()
        audience_id = _audience_id(request)
        users = await self._store.delete(account, audience_id)
        if users is None:
            raise _missing(audience_id)
        if users:
            raise FailedPreconditionError(
                f"audience {audience_id} is in use by {', '.join(users)}: remove it there first"
            )
        return web.Response(status=204)

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """PUT /v1/audiences/{audience_id}/members?mode=append|replace: the body is the
        file; all of it is merged, or (any error, a body cut short) none of it."""
        account = caller_account()
        params = Params(request.query, ("mode",))
        mode = params.text("mode", "append", MODES)
        params.done()
        audience_id = _audience_id(request)
        target = await self._audience(account, audience_id)
        if target.source in PULLED:
            # Its next pull would replace the upload: refuse rather than mislead.
            raise FailedPreconditionError(
                f"audience {target.name!r} is pulled from its {target.source} source; "
                "upload to an audience of source upload"
            )
        csv_body = _body_kind(request)
        if request.content_length is not None and request.content_length > self._max_bytes:
            raise web.HTTPRequestEntityTooLarge(self._max_bytes, request.content_length)
        reader, tally = LineReader(csv_body=csv_body), LineTally()
        try:
            async with self._slots.slot():
                done = await self._store.import_members(
                    account, audience_id, _staged_rows(request, self._max_bytes, reader, tally),
                    replace=mode == "replace",
                )  # fmt: skip
        except BodyCutShortError as exc:  # nothing was merged; the client is likely gone
            raise _bad("body", "INCOMPLETE", f"ended before its end ({exc})") from exc
        if done is None:  # deleted while the file came in
            raise _missing(audience_id)
        audience, counts = done
        lines = reader.number - (1 if reader.header else 0)
        return web.json_response(
            {
                "mode": mode,
                "header": reader.header,
                "lines": lines,
                "accepted": counts.people,
                "duplicates": counts.valid - counts.people,
                "rejected": tally.rejected,
                "errors": [e.document() for e in tally.errors],
                "members": {"sha256": audience.sha256_count, "md5": audience.md5_count},
                "member_count": audience.member_count,
                "state": audience.state,
                "state_reason": audience.refusal(),
                "audience": audience.document(),
            }
        )

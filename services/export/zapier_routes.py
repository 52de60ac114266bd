"""/v1/zapier: what Handoff's Zapier app calls — REST-hook subscribe and unsubscribe (each
subscription delivers through its own API connection, in real time), the polling
endpoint (sample data and the polling fallback), a Catch Hook connection in one step,
and the "add to custom audience" action with its dropdown."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from aiohttp import web
from multidict import MultiDict

from services.common.audiences.lines import LineError, LineReader
from services.common.audiences.staging import StagedRow
from services.common.audiences.store import AudienceStorePg
from services.common.auth.context import caller
from services.common.auth.model import AccessRule
from services.common.control_characters import has_control_character
from services.common.egress import EgressPolicy
from services.common.errors import (
    AlreadyExistsError,
    FieldProblem,
    InvalidArgumentError,
    NotFoundError,
)
from services.delivery.live.render import BodyValues
from services.export.audience_routes import _json_object
from services.export.caller_routes import Route, caller_account, newest_first
from services.export.params import Params
from services.export.referral_store import ReferralReads
from services.export.zapier import EVENTS, POLL_LIMIT, UNSUBSCRIBED, hook_settings
from services.export.zapier_store import ZapierStorePg
from services.scheduler.connections.model import ApiConfig, ConnectionDraft, Secrets
from services.scheduler.connections.rules import validated

PREFIX = "/v1/zapier"
CONFIG_READ = AccessRule(scope="config:read")
CONFIG_WRITE = AccessRule(scope="config:write")
REFERRALS_READ = AccessRule(scope="referrals:read")
MAX_MEMBERS = 100  # emails one action call adds
# Their JSON: 100 addresses of at most 254 characters, each written as \uXXXX at worst.
MAX_MEMBERS_JSON_BYTES = 256 * 1024
MAX_DROPDOWN = 200  # audiences the action's dropdown lists


def _invalid(problems: list[FieldProblem]) -> InvalidArgumentError:
    names = ", ".join(dict.fromkeys(p.field for p in problems))
    return InvalidArgumentError(f"bad fields: {names}", problems)


def _path_id(request: web.Request, name: str) -> UUID:
    params = Params(MultiDict(request.match_info), (name,))
    found = params.uuid(name)
    params.done()
    assert found is not None  # the route's pattern always has it
    return found


def _campaign_ids(body: dict[str, Any], problems: list[FieldProblem]) -> list[UUID] | None:
    """The optional scope: a list of campaign ids (absent, null or empty: every campaign,
    as Zapier sends an optional list field left empty)."""
    raw = body.get("campaign_ids")
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) > 100:
        problems.append(FieldProblem("campaign_ids", "INVALID_FORMAT", "a list of ≤ 100 ids"))
        return None
    found: list[UUID] = []
    for i, value in enumerate(raw):
        try:
            found.append(UUID(value))
        except (TypeError, ValueError, AttributeError):  # not a string, or not an id
            problems.append(FieldProblem(f"campaign_ids[{i}]", "INVALID_FORMAT", "a campaign id"))
    return list(dict.fromkeys(found)) or None


def _encodable_host(url: str) -> bool:
    """Whether the URL's host can be looked up at all (an empty label, say, cannot)."""
    try:
        (urlsplit(url.strip()).hostname or "").encode("idna")
    except (UnicodeError, ValueError):
        return False
    return True


class ZapierRoutes:
    """The handlers of /v1/zapier."""

    def __init__(
        self,
        store: ZapierStorePg,
        referrals: ReferralReads,
        audiences: AudienceStorePg,
        egress: EgressPolicy,
    ) -> None:
        self._store = store
        self._referrals = referrals
        self._audiences = audiences
        self._egress = egress

    def routes(self) -> list[Route]:
        """The routes of this module with their access rules."""
        return [
            ("POST", f"{PREFIX}/subscriptions", self.subscribe, CONFIG_WRITE),
            ("GET", f"{PREFIX}/subscriptions", self.list_subscriptions, CONFIG_READ),
            ("GET", PREFIX + "/subscriptions/{subscription_id}", self.get, CONFIG_READ),
            ("DELETE", PREFIX + "/subscriptions/{subscription_id}", self.unsubscribe,
             CONFIG_WRITE),
            ("GET", f"{PREFIX}/referrals", self.poll, REFERRALS_READ),
            ("POST", f"{PREFIX}/catch-hooks", self.catch_hook, CONFIG_WRITE),
            ("GET", f"{PREFIX}/audiences", self.audience_choices, CONFIG_READ),
            ("POST", PREFIX + "/audiences/{audience_id}/members", self.add_members,
             CONFIG_WRITE),
        ]  # fmt: skip

    async def _hook_config(
        self, account: UUID, url: Any, campaigns: list[UUID] | None, problems: list[FieldProblem]
    ) -> ApiConfig:
        """The hook connection's settings for `url` and the scope, validated exactly as
        the connection API validates an API connection (https, loopback http for tests,
        the egress policy); every problem named by the field the caller sent."""
        if not isinstance(url, str) or not url.strip():
            problems.append(FieldProblem("target_url", "REQUIRED", "an https:// URL"))
        elif has_control_character(url) or not _encodable_host(url):
            problems.append(
                FieldProblem("target_url", "INVALID_FORMAT", "not a URL (control characters "
                             "or a host name that is not one)")
            )  # fmt: skip
        if campaigns:
            for unknown in await self._referrals.unknown_campaigns(account, campaigns):
                problems.append(
                    FieldProblem(
                        "campaign_ids", "NOT_FOUND", f"campaign {unknown} is not this account's"
                    )
                )
        if problems:
            raise _invalid(problems)
        assert isinstance(url, str)
        draft = ConnectionDraft(
            "Zapier hook", None, Secrets(), api=ApiConfig(hook_settings(url.strip(), campaigns))
        )
        try:
            _, config, _ = await validated(draft, self._egress, prefix="")
        except InvalidArgumentError as exc:
            renamed = [
                FieldProblem("target_url", p.code, p.message)
                if p.field in ("api.url", "api.test_url")
                else p
                for p in exc.problems
            ]
            raise _invalid(renamed) from exc
        assert isinstance(config, ApiConfig)
        return config

    async def subscribe(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/zapier/subscriptions {target_url, event, campaign_ids?}: 201 with the
        subscription's id; from now on each new referral of the scope is POSTed there."""
        account = caller_account()
        Params(request.query, ()).done()
        body = await _json_object(request)
        problems = [
            FieldProblem(str(k)[:100], "UNKNOWN", "is not a field of a subscription")
            for k in sorted(set(body) - {"target_url", "event", "campaign_ids"})
        ]
        event = body.get("event", EVENTS[0])
        if event not in EVENTS:
            problems.append(FieldProblem("event", "INVALID_VALUE", f"one of {', '.join(EVENTS)}"))
        campaigns = _campaign_ids(body, problems)
        config = await self._hook_config(account, body.get("target_url"), campaigns, problems)
        made = await self._store.subscribe(
            uuid.uuid4(), account, config, str(event), campaigns, caller().credential_id
        )
        if made is None:  # a fresh random id was taken: practically never
            raise AlreadyExistsError("try again")
        return web.json_response(
            made.document(),
            status=201,
            headers={"Location": f"{PREFIX}/subscriptions/{made.id}"},
        )

    async def list_subscriptions(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/zapier/subscriptions: newest first, active and removed (when, why)."""
        account = caller_account()
        return await newest_first(
            request, lambda before, limit: self._store.page(account, before, limit),
            lambda s: s.document(),
        )  # fmt: skip

    async def get(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/zapier/subscriptions/{id}."""
        account = caller_account()
        Params(request.query, ()).done()
        wanted = _path_id(request, "subscription_id")
        found = await self._store.get(account, wanted)
        if found is None:
            raise NotFoundError(f"subscription {wanted} does not exist")
        return web.json_response(found.document())

    async def unsubscribe(self, request: web.Request) -> web.StreamResponse:
        """DELETE /v1/zapier/subscriptions/{id}: 204, also when it was removed already
        (a 410 may have ended it before Zapier unsubscribes)."""
        account = caller_account()
        Params(request.query, ()).done()
        wanted = _path_id(request, "subscription_id")
        removed = await self._store.unsubscribe(account, wanted, UNSUBSCRIBED)
        if not removed and await self._store.get(account, wanted) is None:
            raise NotFoundError(f"subscription {wanted} does not exist")
        return web.Response(status=204)

    async def poll(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/zapier/referrals?campaign_id=…: the newest referrals (at most 50),
        newest first, each exactly the body the hook sends, as a JSON array."""
        account = caller_account()
        params = Params(request.query, ("campaign_id",))
        if "" in request.query.getall("campaign_id", []):  # not "every campaign": a mistake
            params.refuse("campaign_id", "INVALID_FORMAT", "must be a campaign id")
        campaigns = params.uuids("campaign_id")
        params.done()
        unknown = await self._referrals.unknown_campaigns(account, campaigns)
        if unknown:
            raise NotFoundError(f"campaign_id: campaign {unknown[0]} does not exist")
        rows = await self._store.latest_rows(account, campaigns or None, POLL_LIMIT)
        body = BodyValues(hook_settings("", None), {}, await self._store.render_context(account))
        items = [json.loads(body.template.render(v)) for v in body.values(rows)]
        return web.json_response(items)

    async def catch_hook(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/zapier/catch-hooks {url, name?, campaign_ids?}: an API connection to a
        "Webhooks by Zapier" Catch Hook URL sending the hook body; 201 with its id. It is
        then a connection like any other (test, disable, replay through the connection
        and live APIs)."""
        account = caller_account()
        Params(request.query, ()).done()
        body = await _json_object(request)
        problems = [
            FieldProblem(str(k)[:100], "UNKNOWN", "is not a field of a Catch Hook")
            for k in sorted(set(body) - {"url", "name", "campaign_ids"})
        ]
        connection_id = uuid.uuid4()
        name = body.get("name", f"Zapier Catch Hook {connection_id.hex[:8]}")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            problems.append(FieldProblem("name", "INVALID_FORMAT", "1-200 characters"))
        campaigns = _campaign_ids(body, problems)
        try:
            config = await self._hook_config(account, body.get("url"), campaigns, problems)
        except InvalidArgumentError as exc:
            renamed = [
                FieldProblem("url", p.code, p.message) if p.field == "target_url" else p
                for p in exc.problems
            ]
            raise _invalid(renamed) from exc
        if not await self._store.add_connection(connection_id, account, name.strip(), config):
            raise AlreadyExistsError(f"the account has a connection named {name!r} already")
        return web.json_response(
            {"connection_id": str(connection_id), "name": name.strip(),
             "url": config.settings.url,
             "campaign_ids": [str(c) for c in campaigns] if campaigns is not None else None},
            status=201,
        )  # fmt: skip

    async def audience_choices(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/zapier/audiences: the account's audiences (newest first, at most 200)
        as the action's dropdown reads them: a JSON array of {id, name, ...}."""
        account = caller_account()
        Params(request.query, ()).done()
        found = await self._audiences.page(account, None, MAX_DROPDOWN)
        return web.json_response(
            [
                {"id": str(a.id), "name": a.name, "kind": a.kind,
                 "member_count": a.member_count, "state": a.state}
                for a in found
            ]
        )  # fmt: skip

    async def add_members(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/zapier/audiences/{id}/members {email} or {emails: [...]}: added (append)
        through the upload's import, normalised and hashed the same way; all or nothing:
        one bad value refuses the call and adds none."""
        account = caller_account()
        Params(request.query, ()).done()
        audience_id = _path_id(request, "audience_id")
        values = _member_values(await _json_object(request, MAX_MEMBERS_JSON_BYTES))
        if await self._audiences.get(account, audience_id) is None:
            raise NotFoundError(f"audience {audience_id} does not exist")
        reader, rows, problems = LineReader(csv_body=False), [], []
        for place, value in values:
            member = reader.read(value.encode())
            if member is None:  # a value read as a header ("email"): not an address
                problems.append(FieldProblem(place, "NOT_AN_EMAIL", "is not an email address"))
            elif isinstance(member, LineError):
                problems.append(FieldProblem(place, member.code, member.reason))
            else:
                rows.append((reader.number, member.sha256, member.md5))
        if problems:
            raise _invalid(problems)
        done = await self._audiences.import_members(
            account, audience_id, _one_batch(rows), replace=False
        )
        if done is None:  # deleted meanwhile
            raise NotFoundError(f"audience {audience_id} does not exist")
        audience, counts = done
        return web.json_response(
            {
                "accepted": counts.people,
                "duplicates": counts.valid - counts.people,
                "member_count": audience.member_count,
                "state": audience.state,
                "state_reason": audience.refusal(),
                "audience": audience.document(),
            }
        )


def _member_values(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, value) of each email (or hash) the action sent."""
    problems = [
        FieldProblem(str(k)[:100], "UNKNOWN", "send email or emails")
        for k in sorted(set(body) - {"email", "emails"})
    ]
    if ("email" in body) == ("emails" in body):
        problems.append(FieldProblem("email", "REQUIRED", "send email or emails (one of them)"))
    values: list[tuple[str, str]] = []
    if isinstance(body.get("email"), str):
        values.append(("email", body["email"]))
    elif "email" in body:
        problems.append(FieldProblem("email", "INVALID_FORMAT", "a string"))
    emails = body.get("emails")
    if "emails" in body:
        if not isinstance(emails, list) or not 1 <= len(emails) <= MAX_MEMBERS:
            problems.append(
                FieldProblem("emails", "INVALID_FORMAT", f"a list of 1-{MAX_MEMBERS} strings")
            )
        else:
            for i, value in enumerate(emails):
                if isinstance(value, str):
                    values.append((f"emails[{i}]", value))
                else:
                    problems.append(FieldProblem(f"emails[{i}]", "INVALID_FORMAT", "a string"))
    if problems:
        raise _invalid(problems)
    return values


async def _one_batch(rows: list[StagedRow]) -> AsyncIterator[list[StagedRow]]:
    if rows:
        yield rows

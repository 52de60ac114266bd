"""A Mailchimp Marketing API v3 on loopback, close enough to the real one to catch
mistakes: HTTP basic auth (any user, the key as password), one data centre per key (the
fake serves every data centre under a path prefix, `/{dc}/3.0/…`, so the base-URL setting
`http://127.0.0.1:<port>/{dc}/3.0` reaches the key's own), subscriber hashes checked
against md5(lower(email)), merge-field names checked against the list's, at most 500
members a batch, per-member errors in a 200, pages of at most 1,000, and — on demand —
429s, bare (throttling) 403s, revoked keys and disabled accounts. It counts the
concurrent requests per key (and answers 429 beyond 10, as Mailchimp does) and stores
members for tests to read.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BATCH = 500
MAX_PAGE = 1000
MAX_CONNECTIONS = 10
_FAKE_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")


def problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
    """A Mailchimp error answer (application/problem+json)."""
    body = {
        "type": "https://mailchimp.com/developer/marketing/docs/errors/",
        "title": title, "status": status, "detail": detail, "instance": "fake", **extra,
    }  # fmt: skip
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/problem+json"
    )


def _merge_errors(unknown: list[str]) -> list[dict[str, str]]:
    return [{"field": f"merge_fields.{t}", "message": "not a merge field"} for t in unknown]


def md5(email: str) -> str:
    return hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()


@dataclass
class FakeList:
    """One audience: its merge tags and members by subscriber hash."""

    id: str
    name: str
    merge_tags: set[str]
    members: dict[str, dict[str, Any]] = field(default_factory=dict)

    def by_email(self, email: str) -> dict[str, Any] | None:
        return self.members.get(md5(email))


@dataclass
class Mailchimp:
    """The fake's state; `base_url` is what a connection's base_url setting names."""

    base_url: str = ""
    keys: dict[str, str] = field(default_factory=dict)  # key -> data centre
    revoked: set[str] = field(default_factory=set)
    disabled: set[str] = field(default_factory=set)  # keys of disabled accounts
    lists: dict[str, FakeList] = field(default_factory=dict)
    # Canned answers for the next requests: "429", "403" (bare), "500".
    answers: list[str] = field(default_factory=list)
    # Emails a batch answers "please try again" for, this many more times.
    flaky: Counter[str] = field(default_factory=Counter)
    latency_s: float = 0.0  # each request takes at least this long
    in_flight: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)  # per key
    over_limit: int = 0  # requests refused for exceeding 10 at once
    calls: Counter[str] = field(default_factory=Counter)  # "METHOD /lists/{id}..." shapes
    auth_seen: list[str] = field(default_factory=list)  # Authorization values seen

    def add_key(self, key: str) -> str:
        """Accept `key` (its data centre is the suffix after '-')."""
        self.keys[key] = key.rsplit("-", 1)[1]
        return key

    def add_list(
        self, list_id: str, merge_tags: set[str] | None = None, name: str = ""
    ) -> FakeList:
        found = FakeList(
            list_id, name or f"list {list_id}", {"FNAME", "LNAME"} | (merge_tags or set())
        )
        self.lists[list_id] = found
        return found

    def member(self, list_id: str, email: str) -> dict[str, Any] | None:
        return self.lists[list_id].by_email(email)


def _key_of(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        user_password = base64.b64decode(header[6:]).decode()
    except ValueError:
        return None
    return user_password.partition(":")[2] or None


def _application(state: Mailchimp) -> web.Application:
    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        state.auth_seen.append(request.headers.get("Authorization", ""))
        key = _key_of(request)
        dc = request.match_info.get("dc", "")
        if key is None:
            return problem(401, "API Key Missing", "Your request did not include an API key.")
        if key not in state.keys or key in state.revoked or state.keys[key] != dc:
            return problem(
                401, "API Key Invalid",
                "Your API key may be invalid, or you've attempted to access the wrong "
                "datacenter.",
            )  # fmt: skip
        if key in state.disabled:
            return problem(403, "User Disabled", "This account has been disabled.")
        state.in_flight[key] += 1
        try:
            if state.in_flight[key] > MAX_CONNECTIONS:
                state.over_limit += 1
                return problem(
                    429,
                    "Too Many Requests",
                    "You have exceeded the limit of 10 simultaneous connections.",
                )
            state.peak[key] = max(state.peak[key], state.in_flight[key])
            if state.latency_s:
                await asyncio.sleep(state.latency_s)
            if state.answers:
                canned = state.answers.pop(0)
                if canned == "429":
                    return problem(
                        429,
                        "Too Many Requests",
                        "You have exceeded the limit of 10 simultaneous connections.",
                    )
                if canned == "403":
                    return web.Response(status=403, text="")  # bare: throttling
                return problem(500, "Internal Server Error", "An unexpected error occurred.")
            return await handler(request)
        finally:
            state.in_flight[key] -= 1

    def audience(request: web.Request) -> FakeList | web.Response:
        found = state.lists.get(request.match_info["list_id"])
        if found is None:
            return problem(404, "Resource Not Found", "The requested resource could not be found.")
        return found

    async def get_list(request: web.Request) -> web.StreamResponse:
        state.calls["GET /lists/{id}"] += 1
        found = audience(request)
        if isinstance(found, web.Response):
            return found
        return web.json_response(
            {"id": found.id, "name": found.name, "stats": {"member_count": len(found.members)}}
        )

    def page_of(request: web.Request) -> tuple[int, int] | web.Response:
        try:
            count = int(request.query.get("count", "10"))
            offset = int(request.query.get("offset", "0"))
        except ValueError:
            return problem(400, "Invalid Resource", "count and offset are numbers")
        if not 1 <= count <= MAX_PAGE or offset < 0:
            return problem(400, "Invalid Resource", f"count is 1-{MAX_PAGE}")
        return count, offset

    async def merge_fields(request: web.Request) -> web.StreamResponse:
        state.calls["GET /lists/{id}/merge-fields"] += 1
        found, paged = audience(request), page_of(request)
        if isinstance(found, web.Response):
            return found
        if isinstance(paged, web.Response):
            return paged
        count, offset = paged
        tags = sorted(found.merge_tags)
        return web.json_response(
            {"merge_fields": [{"tag": t} for t in tags[offset : offset + count]],
             "total_items": len(tags)}
        )  # fmt: skip

    async def members(request: web.Request) -> web.StreamResponse:
        state.calls["GET /lists/{id}/members"] += 1
        found, paged = audience(request), page_of(request)
        if isinstance(found, web.Response):
            return found
        if isinstance(paged, web.Response):
            return paged
        count, offset = paged
        rows = list(found.members.values())[offset : offset + count]
        wanted = request.query.get("fields", "")
        shown = [
            {k: v for k, v in m.items() if not wanted or f"members.{k}" in wanted} for m in rows
        ]
        return web.json_response({"members": shown, "total_items": len(found.members)})

    def member_problem(found: FakeList, body: dict[str, Any]) -> str:
        """Why one member is refused ('' if it is not)."""
        email = str(body.get("email_address", ""))
        if not _FAKE_EMAIL.match(email) or email.endswith(".invalid"):
            return f"{email} looks fake or invalid, please enter a real email address."
        return ""

    def unknown_merge(found: FakeList, body: dict[str, Any]) -> list[str]:
        return sorted(set(body.get("merge_fields") or {}) - found.merge_tags)

    def upsert(found: FakeList, body: dict[str, Any], status: str) -> tuple[dict[str, Any], bool]:
        email = str(body["email_address"])
        current = found.by_email(email)
        new = current is None
        if current is None:
            current = {"email_address": email, "status": status, "merge_fields": {}, "tags": []}
            found.members[md5(email)] = current
        current["merge_fields"].update(body.get("merge_fields") or {})
        for tag in body.get("tags") or ():
            if tag not in current["tags"]:
                current["tags"].append(tag)
        current["updates"] = current.get("updates", 0) + (0 if new else 1)
        return current, new

    async def put_member(request: web.Request) -> web.StreamResponse:
        state.calls["PUT /lists/{id}/members/{hash}"] += 1
        found = audience(request)
        if isinstance(found, web.Response):
            return found
        try:
            body = await request.json()
        except ValueError:
            return problem(400, "Invalid Resource", "The request body is not JSON.")
        email = str(body.get("email_address", ""))
        if md5(email) != request.match_info["hash"]:
            return problem(
                400, "Invalid Resource",
                "The resource submitted could not be validated: the subscriber hash does "
                "not match the email address.",
            )  # fmt: skip
        unknown = unknown_merge(found, body)
        if unknown:
            return problem(
                400, "Invalid Resource", "Your merge fields were invalid.",
                errors=_merge_errors(unknown),
            )  # fmt: skip
        refused = member_problem(found, body)
        if refused:
            return problem(400, "Invalid Resource", refused)
        if (
            found.by_email(email) is None
            and not body.get("status_if_new")
            and not body.get("status")
        ):
            return problem(400, "Invalid Resource", "status_if_new is required for a new member")
        current, _ = upsert(found, body, str(body.get("status_if_new") or body.get("status")))
        return web.json_response({**current, "id": md5(email), "list_id": found.id})

    async def batch(request: web.Request) -> web.StreamResponse:
        state.calls["POST /lists/{id}"] += 1
        found = audience(request)
        if isinstance(found, web.Response):
            return found
        body = await request.json()
        given = body.get("members") or []
        if len(given) > MAX_BATCH:
            return problem(
                400, "Invalid Resource",
                f"The batch has {len(given)} members: at most {MAX_BATCH} are allowed.",
            )  # fmt: skip
        unknown = sorted({t for m in given for t in unknown_merge(found, m)})
        if unknown:
            return problem(
                400, "Invalid Resource", "Your merge fields were invalid.",
                errors=_merge_errors(unknown),
            )  # fmt: skip
        created: list[dict[str, Any]] = []
        updated: list[dict[str, Any]] = []
        errors: list[dict[str, str]] = []
        for m in given:
            email = str(m.get("email_address", ""))
            refused = member_problem(found, m)
            if refused:
                errors.append(
                    {"email_address": email, "error": refused, "error_code": "ERROR_GENERIC"}
                )
                continue
            if state.flaky[email.lower()] > 0:
                state.flaky[email.lower()] -= 1
                errors.append({"email_address": email, "error_code": "ERROR_GENERIC",
                               "error": "Temporarily unavailable, please try again."})  # fmt: skip
                continue
            if found.by_email(email) is not None and not body.get("update_existing"):
                errors.append({"email_address": email, "error_code": "ERROR_CONTACT_EXISTS",
                               "error": f"{email} is already a list member."})  # fmt: skip
                continue
            current, new = upsert(found, m, str(m.get("status") or "subscribed"))
            (created if new else updated).append({**current, "id": md5(email)})
        return web.json_response(
            {"new_members": created, "updated_members": updated, "errors": errors,
             "total_created": len(created), "total_updated": len(updated),
             "error_count": len(errors)}
        )  # fmt: skip

    app = web.Application(middlewares=[gate])
    prefix = "/{dc}/3.0/lists/{list_id}"
    app.router.add_get(prefix, get_list)
    app.router.add_post(prefix, batch)
    app.router.add_get(prefix + "/merge-fields", merge_fields)
    app.router.add_get(prefix + "/members", members)
    app.router.add_put(prefix + "/members/{hash}", put_member)
    return app


@asynccontextmanager
async def mailchimp_fake() -> AsyncIterator[Mailchimp]:
    """The fake on a free loopback port."""
    state = Mailchimp()
    runner = web.AppRunner(_application(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.base_url = f"http://127.0.0.1:{port}/{{dc}}/3.0"
    try:
        yield state
    finally:
        await runner.cleanup()

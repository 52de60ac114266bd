"""A Sailthru API on loopback, close enough to the documented behaviour to catch mistakes.

It verifies every request's signature (MD5 of the secret and the sorted parameter values)
and `api_key`, and answers Sailthru's error codes: 2 missing parameter, 3 invalid API key,
5 authentication failed, 11 invalid email, 15 unknown list, 99 other, 1 unsupported method.
Every answer carries `X-Rate-Limit-Limit/-Remaining/-Reset` (epoch seconds) for its
endpoint and method; once a configurable number of requests in the window is spent, it
answers 429 with error 43 until the window resets.

`POST /user` upserts a profile (id = the email, `key: "email"`, vars merged, lists set or
removed). `POST /job` with `job=import`, `list` and a multipart `file` (CSV, email first)
starts an import that stays `pending` for a few `GET /job?job_id=` polls and then
completes — storing the list's members and their profiles — or, when told to, ends in
`error`; an optional `postback_url` then gets the job's result, signed. `GET /list?list=`
describes a list.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import io
import itertools
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
ENDPOINTS = {"user": ("GET", "POST"), "job": ("GET", "POST"), "list": ("GET", "POST", "DELETE")}


def sailthru_sig(secret: str, params: dict[str, str]) -> str:
    """The signature as Sailthru's docs define it, written here on its own (not Handoff's
    code) so that a mistake there is caught: MD5 hex of the secret and the sorted values."""
    values = sorted(v for k, v in params.items() if k != "sig")
    return hashlib.md5((secret + "".join(values)).encode(), usedforsecurity=False).hexdigest()


@dataclass
class Profile:
    """A user profile the fake holds."""

    id: str
    vars: dict[str, Any] = field(default_factory=dict)
    lists: dict[str, int] = field(default_factory=dict)


@dataclass
class Job:
    """An import job: its list, the uploaded CSV, and how many polls it stays pending."""

    job_id: str
    list: str
    csv_text: str
    polls_left: int
    fail_with: str = ""
    postback_url: str = ""
    status: str = "pending"
    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class Received:
    """One request as the fake saw it (after the signature check)."""

    method: str
    endpoint: str
    params: dict[str, str]
    payload: Any
    status: int
    at: float


@dataclass
class _Window:
    start: float
    used: int = 0


@dataclass
class FakeSailthru:
    """The fake's state; tests read and steer it."""

    api_key: str = "test-key"
    secret: str = "test-secret"
    lists: set[str] = field(default_factory=lambda: {"Referrals"})
    # Requests allowed per window, by "METHOD /endpoint" (others: `default_limit`).
    limits: dict[str, int] = field(default_factory=dict)
    default_limit: int = 1000
    window_s: float = 60.0
    pending_polls: int = 2  # polls a job answers `pending` before it finishes
    fail_jobs_with: str = ""  # when set, jobs end in `error` with this message
    url: str = ""
    profiles: dict[str, Profile] = field(default_factory=dict)
    members: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)  # list → email
    jobs: dict[str, Job] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    # Answers to give instead of handling, in order, by "METHOD /endpoint": (status, body).
    scripted: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    postbacks: list[dict[str, str]] = field(default_factory=list)  # what was posted back
    uploads: list[bytes] = field(default_factory=list)  # each job file, as received
    _windows: dict[str, _Window] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def calls(self, key: str) -> list[Received]:
        """The requests received for "METHOD /endpoint"."""
        return [r for r in self.received if f"{r.method} /{r.endpoint}" == key]

    def _rate_headers(self, key: str, spend: bool) -> tuple[dict[str, str], bool]:
        now = time.time()
        window = self._windows.get(key)
        if window is None or now >= window.start + self.window_s:
            window = self._windows[key] = _Window(now)
        limit = self.limits.get(key, self.default_limit)
        over = window.used >= limit
        if spend and not over:
            window.used += 1
        headers = {
            "X-Rate-Limit-Limit": str(limit),
            "X-Rate-Limit-Remaining": str(max(0, limit - window.used)),
            "X-Rate-Limit-Reset": str(int(window.start + self.window_s + 0.999)),
        }
        return headers, over


def _error(status: int, code: int, message: str, headers: dict[str, str]) -> web.Response:
    return web.json_response({"error": code, "errormsg": message}, status=status, headers=headers)


async def _params(request: web.Request, fake: FakeSailthru) -> dict[str, str]:
    if request.method == "GET" or request.method == "DELETE":
        return dict(request.query)
    if request.content_type.startswith("multipart/"):
        params: dict[str, str] = {}
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
                continue
            if part.filename is not None:
                data = bytes(await part.read())
                fake.uploads.append(data)
                params[f"@{part.name}"] = data.decode("utf-8", "replace")
            else:
                params[part.name] = await part.text()
        return params
    return {k: str(v) for k, v in (await request.post()).items()}


def _handler(fake: FakeSailthru) -> Any:
    async def handle(request: web.Request) -> web.StreamResponse:
        endpoint = request.match_info["endpoint"]
        key = f"{request.method} /{endpoint}"
        headers, over = fake._rate_headers(key, spend=False)
        if endpoint not in ENDPOINTS:
            return _error(404, 99, f"unknown endpoint {endpoint}", headers)
        if request.method not in ENDPOINTS[endpoint]:
            return _error(405, 1, "Unsupported HTTP method", headers)
        raw = await _params(request, fake)
        signed = {k: v for k, v in raw.items() if not k.startswith("@")}
        if "api_key" not in signed or "sig" not in signed:
            return _error(400, 2, "Missing required parameter: api_key and sig", headers)
        if signed["api_key"] != fake.api_key:
            return _error(401, 3, "Invalid API key", headers)
        if not hmac.compare_digest(signed["sig"], sailthru_sig(fake.secret, signed)):
            return _error(401, 5, "Authentication failed", headers)
        try:
            payload = json.loads(signed.get("json", "{}"))
        except ValueError:
            return _error(400, 99, "json is not JSON", headers)
        if signed.get("format", "json") != "json" or not isinstance(payload, dict):
            return _error(400, 99, "format=json with a json object is required", headers)
        headers, over = fake._rate_headers(key, spend=True)
        status, body = (429, {"error": 43, "errormsg": "Too many requests (per minute)"})
        if not over:
            queue = fake.scripted.get(key)
            if queue:
                status, body = queue.pop(0)
            else:
                status, body = await _answer(fake, request.method, endpoint, payload, raw)
        fake.received.append(
            Received(request.method, endpoint, signed, payload, status, time.monotonic())
        )
        return web.json_response(body, status=status, headers=headers)

    return handle


async def _answer(
    fake: FakeSailthru, method: str, endpoint: str, payload: dict[str, Any], raw: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    if endpoint == "user" and method == "POST":
        return _post_user(fake, payload)
    if endpoint == "user":
        profile = fake.profiles.get(str(payload.get("id", "")).lower())
        if profile is None:
            return 404, {"error": 99, "errormsg": "User not found"}
        return 200, {"keys": {"email": profile.id}, "vars": profile.vars, "lists": profile.lists}
    if endpoint == "job" and method == "POST":
        return _post_job(fake, payload, raw)
    if endpoint == "job":
        return await _get_job(fake, payload)
    name = str(payload.get("list", ""))
    if method == "GET" and name in fake.lists:
        return 200, {"list": name, "type": "normal", "email_count": len(fake.members.get(name, {}))}
    if method == "GET" and name == "":
        return 200, {"lists": [{"name": n} for n in sorted(fake.lists)]}
    return 400, {"error": 15, "errormsg": f"Unknown list: {name}"}


def _post_user(fake: FakeSailthru, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    user_id = payload.get("id")
    if not isinstance(user_id, str) or not user_id:
        return 400, {"error": 2, "errormsg": "Missing required parameter: id"}
    if payload.get("key", "sid") != "email":
        return 400, {"error": 99, "errormsg": "key must be email for an email id"}
    if not _EMAIL.fullmatch(user_id):
        return 400, {"error": 11, "errormsg": f"Invalid email: {user_id}"}
    lists = payload.get("lists") or {}
    user_vars = payload.get("vars") or {}
    if not isinstance(lists, dict) or not isinstance(user_vars, dict):
        return 400, {"error": 99, "errormsg": "vars and lists are objects"}
    for name in lists:
        if name not in fake.lists:
            return 400, {"error": 15, "errormsg": f"Unknown list: {name}"}
    profile = fake.profiles.setdefault(user_id.lower(), Profile(user_id))
    profile.vars.update(user_vars)
    for name, flag in lists.items():
        if flag:
            profile.lists[name] = 1
            fake.members.setdefault(name, {})[user_id.lower()] = {
                k: str(v) for k, v in profile.vars.items()
            }
        else:
            profile.lists.pop(name, None)
            fake.members.get(name, {}).pop(user_id.lower(), None)
    return 200, {"keys": {"email": user_id}, "vars": profile.vars, "lists": profile.lists}


def _post_job(
    fake: FakeSailthru, payload: dict[str, Any], raw: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    if payload.get("job") != "import":
        return 400, {"error": 99, "errormsg": f"unsupported job {payload.get('job')!r}"}
    name = payload.get("list")
    if not isinstance(name, str) or not name:
        return 400, {"error": 2, "errormsg": "Missing required parameter: list"}
    if name not in fake.lists:
        return 400, {"error": 15, "errormsg": f"Unknown list: {name}"}
    if "@file" not in raw:
        return 400, {"error": 2, "errormsg": "Missing required parameter: file"}
    job = Job(
        f"job{next(fake._ids):08d}",
        name,
        raw["@file"],
        fake.pending_polls,
        fake.fail_jobs_with,
        str(payload.get("postback_url", "")),
    )
    fake.jobs[job.job_id] = job
    return 200, {"job_id": job.job_id, "name": "List Import", "status": "pending"}


def _run_import(fake: FakeSailthru, job: Job) -> dict[str, Any]:
    rows = list(csv.reader(io.StringIO(job.csv_text)))
    if not rows or not rows[0] or rows[0][0].strip().lower() != "email":
        raise ValueError("the file's first column must be email")
    header = [h.strip() for h in rows[0]]
    imported = invalid = 0
    for row in rows[1:]:
        if not row:
            continue
        email = row[0].strip()
        if not _EMAIL.fullmatch(email):
            invalid += 1
            continue
        values = dict(zip(header[1:], row[1:], strict=False))
        profile = fake.profiles.setdefault(email.lower(), Profile(email))
        profile.vars.update(values)
        profile.lists[job.list] = 1
        fake.members.setdefault(job.list, {})[email.lower()] = values
        imported += 1
    return {"list": job.list, "imported": imported, "invalid": invalid, "total": imported + invalid}


async def _get_job(fake: FakeSailthru, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    job = fake.jobs.get(str(payload.get("job_id", "")))
    if job is None:
        return 404, {"error": 99, "errormsg": "Unknown job_id"}
    if job.status == "pending":
        if job.polls_left > 0:
            job.polls_left -= 1
        else:
            try:
                if job.fail_with:
                    raise ValueError(job.fail_with)
                job.result = _run_import(fake, job)
                job.status = "completed"
            except ValueError as exc:
                job.status, job.result = "error", {"errormsg": str(exc)}
            if job.postback_url:
                await _post_back(fake, job)
    body = {"job_id": job.job_id, "name": "List Import", "status": job.status, **job.result}
    return 200, body


async def _post_back(fake: FakeSailthru, job: Job) -> None:
    """POST the job's result to its postback URL with api_key and sig, as Sailthru does."""
    form = {"job_id": job.job_id, "status": job.status, "api_key": fake.api_key}
    form |= {k: str(v) for k, v in job.result.items()}
    form["sig"] = sailthru_sig(fake.secret, form)
    fake.postbacks.append(form)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(job.postback_url, data=form) as answer,
        ):
            await answer.read()
    except aiohttp.ClientError:
        pass  # Sailthru does not retry a postback either (as far as documented)


@asynccontextmanager
async def sailthru_fake(fake: FakeSailthru | None = None) -> AsyncIterator[FakeSailthru]:
    """Run `fake` (or a new one) on a loopback port; `fake.url` is its base URL."""
    state = fake or FakeSailthru()
    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{endpoint}", _handler(state))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()
        await asyncio.sleep(0)

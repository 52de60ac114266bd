"""Calls to one Mailchimp account over the shared HTTP session (egress-checked, TLS,
timeouts), each inside one of the key's concurrency slots when a `KeySlots` is given.

How answers are read (the verdicts the live loop and the batch transport act on):
- 2xx: accepted.
- 429, and a 403 whose body is not an account problem (a bare 403, or one that says
  "too many requests"/throttled/"try again"): throttled — back off (Mailchimp sends no
  rate-limit headers, so the client sets its own growing hold: 1 s, 2 s, 4 s … ≤ 60 s).
- 401, and any other 403 (invalid or revoked key, a disabled account, no permission):
  permanent — the connection needs attention.
- 404: the audience is gone — permanent.
- 400: the member is refused (an invalid or fake address, a compliance state) — rejected;
  but a 400 about merge fields is the connection's mapping — permanent.
- 5xx, 408, no answer: retry.
The API key never reaches a log or a recorded exchange (Authorization is redacted).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp

from services.common.egress import EgressPolicy
from services.delivery.key_slots import KeySlots, key_digest
from services.delivery.transports.http.client import (
    REDACTED,
    Exchange,
    HttpSession,
    basic_auth,
    read_answer,
)
from services.delivery.transports.http.responses import THROTTLED, Outcome, Verdict
from services.delivery.transports.mailchimp.settings import (
    CONNECTIONS_PER_KEY,
    ApiKeyError,
    MailchimpSettings,
    data_centre,
)

MAX_BATCH_ANSWER = 8 * 1024 * 1024  # a 500-member answer lists every member it touched
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_THROTTLE_WORDS = ("too many", "throttl", "rate limit", "try again", "slow down")
_HOLD_FIRST_S, _HOLD_MAX_S = 1.0, 60.0
PAGE_TRIES = 6  # a page that keeps failing (throttled, 5xx, no answer) ends the read


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 hex of the lower-cased address."""
    return hashlib.md5(email.strip().lower().encode(), usedforsecurity=False).hexdigest()


def usable_email(value: str) -> bool:
    """An address Mailchimp could take (the rest is its own check)."""
    return len(value) <= 254 and _EMAIL.match(value) is not None


def problem_text(head: bytes) -> str:
    """`title: detail` of a Mailchimp problem answer ('' when it is none)."""
    try:
        problem = json.loads(head)
    except ValueError:
        return ""
    if not isinstance(problem, dict):
        return ""
    title, detail = str(problem.get("title", "")), str(problem.get("detail", ""))
    errors = problem.get("errors")
    if isinstance(errors, list) and errors:
        detail += " " + "; ".join(
            f"{e.get('field', '')}: {e.get('message', '')}" for e in errors if isinstance(e, dict)
        )
    return f"{title}: {detail}".strip(": ")


def is_throttling(head: bytes) -> bool:
    """Whether a 403's body says slow down rather than no (a bare 403 does)."""
    text = problem_text(head).lower()
    return not text or any(word in text for word in _THROTTLE_WORDS)


def decide(status: int, head: bytes) -> Verdict:
    """The verdict of one Mailchimp answer (see the module's docstring)."""
    if 200 <= status < 300:
        return Verdict(Outcome.ACCEPTED, "accepted")
    if status == 429 or (status == 403 and is_throttling(head)):
        return Verdict(Outcome.RETRY, THROTTLED)
    if status in (401, 403):
        return Verdict(Outcome.DISABLE, "key refused" if status == 401 else "forbidden")
    if status == 404:
        return Verdict(Outcome.DISABLE, "audience not found")
    if status == 400:
        if "merge" in problem_text(head).lower():
            return Verdict(Outcome.DISABLE, "merge fields")
        return Verdict(Outcome.REJECTED, "member refused")
    if status >= 500 or status == 408:
        return Verdict(Outcome.RETRY, "server error")
    return Verdict(Outcome.REJECTED, f"answered {status}")


class MailchimpClient:
    """One account's API (base URL from the key's data centre)."""

    def __init__(
        self,
        settings: MailchimpSettings,
        api_key: str,
        egress: EgressPolicy,
        *,
        slots: KeySlots | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self._key = api_key.strip()
        try:
            self.dc = data_centre(self._key)
        except ApiKeyError:
            self.dc = ""
        self.base = settings.api_base(self.dc or "invalid")
        self._slots = slots
        self.digest = key_digest("mailchimp", self._key)
        self._now = now or (lambda: datetime.now(UTC))
        self.http = HttpSession(egress, timeout_s=settings.timeout_s, limit=CONNECTIONS_PER_KEY)
        self._throttled = 0  # throttled answers in a row
        self._rng = random.Random()

    async def close(self) -> None:
        """Close the session."""
        await self.http.close()

    def _slot(self) -> AbstractAsyncContextManager[Any]:
        if self._slots is None:
            return nullcontext()
        return self._slots.hold(self.digest, CONNECTIONS_PER_KEY)

    async def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        query: Mapping[str, str | int] | None = None,
        limit: int | None = None,
        test: bool = False,
    ) -> Exchange:
        """One call; the exchange with its verdict (never raises for a network failure).
        A throttled answer carries the hold to wait in `retry_after_s`."""
        url = self.base + path + (f"?{urlencode(dict(query))}" if query else "")
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        headers = {
            "Authorization": basic_auth("handoff", self._key),
            "Accept": "application/json",
        }
        if data:
            headers["Content-Type"] = "application/json"
        exchange = Exchange(method, url, {}, data)
        if not self.dc:
            exchange.error = "the API key has no data centre suffix (…-us6)"
            exchange.verdict = Verdict(Outcome.DISABLE, "key refused")
            return exchange

        async def perform(session: aiohttp.ClientSession) -> None:
            if test:
                exchange.request_headers = {**headers, "Authorization": REDACTED}
            async with (
                self._slot(),
                session.request(
                    method, url, data=data or None, headers=headers, allow_redirects=False
                ) as answer,
            ):
                await read_answer(answer, exchange, decide, self._now(), test=test, limit=limit)

        await self.http.exchange(exchange, url, perform)
        if exchange.verdict.rule == THROTTLED:
            exchange.retry_after_s = self._hold()
        elif exchange.status is not None:
            self._throttled = 0
        if exchange.status is not None and exchange.verdict.outcome is not Outcome.ACCEPTED:
            said = problem_text(exchange.response_head)
            exchange.error = exchange.error or (said[:500] if said else "")
        return exchange

    def _hold(self) -> float:
        held = min(_HOLD_MAX_S, _HOLD_FIRST_S * float(1 << min(self._throttled, 10)))
        self._throttled += 1
        return held * self._rng.uniform(0.8, 1.2)

    async def pages(
        self, path: str, fields: str, items: str, count: int = 1000
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every item of a paged collection (`count` ≤ 1000 a page, by offset), a page at
        a time. A page that fails retryably is asked again after a hold (up to
        PAGE_TRIES times); other failures raise MailchimpCallError."""
        offset = tries = 0
        while True:
            exchange = await self.request(
                "GET", path, query={"count": count, "offset": offset, "fields": fields},
                limit=MAX_BATCH_ANSWER,
            )  # fmt: skip
            if exchange.verdict.outcome is Outcome.RETRY:
                tries += 1
                if tries > PAGE_TRIES:
                    raise MailchimpCallError(exchange)
                await asyncio.sleep(exchange.retry_after_s or _HOLD_FIRST_S * tries)
                continue
            tries = 0
            if exchange.verdict.outcome is not Outcome.ACCEPTED:
                raise MailchimpCallError(exchange)
            answer = json.loads(exchange.response_head)
            page = list(answer.get(items) or [])
            if page:
                yield page
            offset += len(page)
            if not page or offset >= int(answer.get("total_items", 0)):
                return


class MailchimpCallError(Exception):
    """A call that did not succeed, with its exchange."""

    def __init__(self, exchange: Exchange) -> None:
        super().__init__(exchange.error or f"answered {exchange.status} ({exchange.verdict.rule})")
        self.exchange = exchange

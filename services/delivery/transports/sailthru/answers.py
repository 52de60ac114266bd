"""How Sailthru's answers read: the verdict on one request, and its rate-limit headers.

Errors come as JSON `{"error": <code>, "errormsg": "..."}` beside an HTTP status. The
documented codes (Sailthru's "API Response Errors") sort into:

- **retry**: 9 internal error, 43 too many requests (and any HTTP 429 or 5xx, 408);
- **attention** (the connection is wrong until a person fixes it; live connections are
  disabled, scheduled deliveries dead): 1 unsupported method, 3 invalid API key,
  4 disallowed IP, 5 authentication failed (a bad signature: the secret is wrong),
  15 unknown list; an HTTP 401 or 403 without a code reads the same;
- **rejected** (that referral only): 2 missing parameter, 6 invalid UTF-8, 11 invalid
  email, 99 other error, and any other 4xx.

Limits are per endpoint and method, per minute; every answer carries
`X-Rate-Limit-Limit`, `X-Rate-Limit-Remaining` and `X-Rate-Limit-Reset` (epoch seconds).
Once the window is spent, or after a 429, sends to that endpoint wait for the reset.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from services.delivery.transports.base import Diagnosis
from services.delivery.transports.http.responses import Outcome

RATE_LIMITED = 43
RETRY_CODES: Mapping[int, str] = {9: "internal error", RATE_LIMITED: "too many requests"}
ATTENTION_CODES: Mapping[int, tuple[Diagnosis, str]] = {
    1: (Diagnosis.CONFIG, "unsupported HTTP method"),
    3: (Diagnosis.AUTH, "invalid API key"),
    4: (Diagnosis.AUTH, "this address is not allowed by the account's API settings"),
    5: (Diagnosis.AUTH, "authentication failed: the signature does not match (check the secret)"),
    15: (Diagnosis.CONFIG, "unknown list"),
}
REJECTED_CODES: Mapping[int, str] = {
    2: "missing parameter",
    6: "invalid UTF-8",
    11: "invalid email",
    99: "other error",
}
# A reset further away than this is not a per-minute window: hold at most this long.
MAX_HOLD_S = 120.0
# A 429 without usable headers holds this long (the windows are per minute).
DEFAULT_HOLD_S = 60.0


@dataclass(frozen=True)
class Reading:
    """One answer, read: the outcome, why, and the problem to name when it is not accepted."""

    outcome: Outcome
    rule: str
    diagnosis: Diagnosis | None = None
    error_code: int | None = None
    message: str = ""
    document: Any = None  # the answer's JSON (None when it is not JSON)


def _document(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def read_answer(status: int, body: bytes) -> Reading:
    """The verdict on one answer (`body` may be capped: an unreadable one reads by status)."""
    document = _document(body)
    code: int | None = None
    message = ""
    if isinstance(document, dict) and "error" in document:
        raw = document.get("error")
        code = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
        message = str(document.get("errormsg", ""))[:300]

    def reading(outcome: Outcome, rule: str, diagnosis: Diagnosis | None = None) -> Reading:
        return Reading(outcome, rule, diagnosis, code, message, document)

    if status == 429 or code == RATE_LIMITED:
        return reading(Outcome.RETRY, "sailthru: rate limit (43/429)")
    if code in RETRY_CODES or status >= 500 or status == 408:
        return reading(Outcome.RETRY, f"sailthru: {RETRY_CODES.get(code or 0, status)}")
    if code is not None and code in ATTENTION_CODES:
        diagnosis, why = ATTENTION_CODES[code]
        return reading(Outcome.DISABLE, f"sailthru error {code}: {why}", diagnosis)
    if code is not None and code in REJECTED_CODES:
        return reading(Outcome.REJECTED, f"sailthru error {code}: {REJECTED_CODES[code]}")
    if 200 <= status < 300 and code is None and isinstance(document, dict):
        return reading(Outcome.ACCEPTED, "sailthru: 2xx")
    if status in (401, 403):
        return reading(Outcome.DISABLE, f"sailthru: {status} refused", Diagnosis.AUTH)
    if 300 <= status < 400:
        return reading(Outcome.RETRY, f"sailthru: {status} (redirects are not followed)")
    if code is not None:
        return reading(Outcome.REJECTED, f"sailthru error {code}")
    if 200 <= status < 300:
        return reading(Outcome.RETRY, "sailthru: 2xx that is not a JSON object", Diagnosis.PROTOCOL)
    return reading(Outcome.REJECTED, f"sailthru: {status}")


@dataclass(frozen=True)
class RateLimit:
    """One endpoint's window as the last answer told it."""

    limit: int
    remaining: int
    reset_at: float  # epoch seconds


def rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    """The window from an answer's headers, or None when they are missing or unreadable."""
    try:
        return RateLimit(
            int(headers["X-Rate-Limit-Limit"]),
            int(headers["X-Rate-Limit-Remaining"]),
            float(headers["X-Rate-Limit-Reset"]),
        )
    except (KeyError, ValueError):
        return None


class RateLimitGate:
    """Holds sends to an endpoint (`"POST /user"`) while its window is spent. One per
    client: the windows are Sailthru's per API key, so every sender of a key should share
    one (per process; two replicas each learn the window from their own answers)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._windows: dict[str, RateLimit] = {}
        self.held_s = 0.0  # total time sends waited (tests, metrics)

    def observe(self, endpoint: str, status: int, headers: Mapping[str, str]) -> None:
        """Learn the window from an answer; a 429 spends it whatever the headers say."""
        window = rate_limit(headers)
        if status == 429:
            reset = window.reset_at if window else self._clock() + DEFAULT_HOLD_S
            window = RateLimit(window.limit if window else 0, 0, reset)
        if window is not None:
            self._windows[endpoint] = window

    def hold_s(self, endpoint: str) -> float:
        """How long a send to `endpoint` must wait now (0 when it may go)."""
        window = self._windows.get(endpoint)
        if window is None or window.remaining > 0:
            return 0.0
        return min(MAX_HOLD_S, max(0.0, window.reset_at - self._clock()))

    def take(self, endpoint: str) -> None:
        """Count a send against the known window (so concurrent sends do not overshoot)."""
        window = self._windows.get(endpoint)
        if window is not None and window.remaining > 0:
            self._windows[endpoint] = RateLimit(window.limit, window.remaining - 1, window.reset_at)

    async def wait(self, endpoint: str) -> None:
        """Wait until `endpoint` may be sent to, then count the send."""
        hold = self.hold_s(endpoint)
        if hold > 0:
            self.held_s += hold
            await self._sleep(hold)
            # The window has reset (or was held as long as any may be): the next answer
            # tells the new one.
            self._windows.pop(endpoint, None)
        self.take(endpoint)

"""The Sailthru client: signed requests over the shared HTTP session, the rate-limit
gate, the list import job (upload, then a bounded, backing-off poll) and the test call.

Safety as for every HTTP destination (`HttpSession`): names resolve through the egress
policy (the connection goes to the checked address), TLS is verified, plain http only to
loopback, redirects are never followed, answers are read up to a cap. Secrets never reach a record:
an exchange records the request's `json` parameter only — never `api_key` or `sig`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from services.common.egress import EgressPolicy
from services.delivery.transports.base import Diagnosis, PermanentError, RetryableError
from services.delivery.transports.http.client import HEAD_KEPT, MAX_ANSWER, Exchange, HttpSession
from services.delivery.transports.http.responses import Outcome, Verdict
from services.delivery.transports.http.settings import plaintext_allowed
from services.delivery.transports.sailthru.answers import RateLimitGate, Reading, read_answer
from services.delivery.transports.sailthru.payloads import (
    JobState,
    JobStatus,
    import_job,
    job_status,
)
from services.delivery.transports.sailthru.signing import signed_params

DEFAULT_BASE_URL = "https://api.sailthru.com"
# How often a 429 on one job call is waited out before the attempt gives up (retryable).
RATE_LIMITED_TRIES = 3
# How many polls in a row may fail (no answer, 5xx) before the attempt gives up.
POLL_MISSES = 5


_GATES: dict[str, RateLimitGate] = {}


def shared_gate(api_key: str) -> RateLimitGate:
    """The process's one gate for an API key (Sailthru's windows are per key: the live
    loop and scheduled imports of every connection with that key share them); keyed by a
    digest, so the key itself is not kept here."""
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    return _GATES.setdefault(digest, RateLimitGate())


@dataclass(frozen=True)
class JobPolling:
    """How a job is polled: the first wait, growing by `factor` up to `max_s`, for at
    most `deadline_s` in all (then the attempt fails, retryable: the engine retries)."""

    first_s: float = 2.0
    factor: float = 1.5
    max_s: float = 60.0
    deadline_s: float = 3600.0


@dataclass(frozen=True)
class Answer:
    """One request's exchange (as recorded) and its reading (None: no answer came)."""

    exchange: Exchange
    reading: Reading | None


def base_url_problem(url: str) -> str | None:
    """Why `url` cannot be a Sailthru base URL, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "an https:// URL"
    if not plaintext_allowed(url):
        return "TLS is required: plain http:// only to loopback (a test server)"
    if parts.query or parts.fragment:
        return "a base URL without query or fragment"
    return None


class SailthruClient:
    """Calls one Sailthru account (an API key and its secret) at `base_url`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        secret: str,
        egress: EgressPolicy,
        *,
        timeout_s: float = 30.0,
        concurrency: int = 4,
        gate: RateLimitGate | None = None,
        polling: JobPolling | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._secret = secret
        self._timeout_s = timeout_s
        self.gate = gate or RateLimitGate(sleep=sleep)
        self._polling = polling or JobPolling()
        self._sleep = sleep
        self._http = HttpSession(egress, timeout_s=timeout_s, limit=concurrency + 2)

    async def __aenter__(self) -> SailthruClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session and its connections."""
        await self._http.close()

    async def request(
        self,
        method: str,
        endpoint: str,
        payload: Mapping[str, Any],
        *,
        file: Path | None = None,
    ) -> Answer:
        """One signed request, once the endpoint's rate-limit window allows it (never
        raises for a network failure: that is an answer without a reading, its exchange
        naming the diagnosis)."""
        params = signed_params(self._api_key, self._secret, payload)
        url = f"{self.base_url}/{endpoint}"
        exchange = Exchange(method, url, {}, params["json"].encode())
        gate_key = f"{method} /{endpoint}"
        readings: list[Reading] = []

        async def perform(session: aiohttp.ClientSession) -> None:
            if method == "GET":
                call: Any = session.get(url, params=params, allow_redirects=False)
            elif file is None:
                call = session.post(url, data=params, allow_redirects=False)
            else:
                call = self._upload(session, url, params, file)
            async with call as answer:
                head = await answer.content.read(MAX_ANSWER)
                self.gate.observe(gate_key, answer.status, answer.headers)
                reading = read_answer(answer.status, head)
                readings.append(reading)
                exchange.status = answer.status
                exchange.response_head = head[:HEAD_KEPT]
                exchange.verdict = Verdict(reading.outcome, reading.rule)
                exchange.diagnosis = reading.diagnosis
                if reading.outcome is not Outcome.ACCEPTED:
                    said = f" (Sailthru: {reading.message})" if reading.message else ""
                    exchange.error = reading.rule + said
                if reading.outcome is Outcome.RETRY:
                    exchange.retry_after_s = self.gate.hold_s(gate_key) or None

        await self.gate.wait(gate_key)
        await self._http.exchange(exchange, url, perform)
        return Answer(exchange, readings[0] if readings else None)

    def _upload(
        self, session: aiohttp.ClientSession, url: str, params: Mapping[str, str], file: Path
    ) -> Any:
        """A multipart POST: the signed parameters, then the file, read from disk in
        chunks by aiohttp (never held whole); no total timeout for a large file."""
        form = aiohttp.FormData()
        for name, value in params.items():
            form.add_field(name, value)
        handle = file.open("rb")
        form.add_field("file", handle, filename=file.name, content_type="text/csv")
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout_s, sock_read=self._timeout_s
        )
        return _ClosingCall(
            session.post(url, data=form, allow_redirects=False, timeout=timeout), handle
        )

    async def _job_call(
        self, method: str, payload: Mapping[str, Any], file: Path | None = None
    ) -> Answer:
        """A job call whose rate limit is waited out a few times; raises TransportError
        for anything but an accepted answer."""
        for _ in range(RATE_LIMITED_TRIES):
            answer = await self.request(method, "job", payload, file=file)
            reading = answer.reading
            if reading is not None and reading.outcome is Outcome.ACCEPTED:
                return answer
            if (
                reading is not None
                and reading.outcome is Outcome.RETRY
                and (answer.exchange.status == 429 or reading.error_code == 43)
            ):
                continue  # the gate holds the next call until the window resets
            raise _as_error(answer)
        raise RetryableError(
            Diagnosis.PROTOCOL, f"Sailthru kept answering 429 ({RATE_LIMITED_TRIES} windows)"
        )

    async def start_import(self, list_name: str, file: Path, postback_url: str = "") -> str:
        """Upload `file` as a list import job; its job_id."""
        answer = await self._job_call("POST", import_job(list_name, postback_url), file)
        try:
            return job_status(answer.reading.document if answer.reading else None).job_id
        except ValueError as exc:
            raise RetryableError(Diagnosis.PROTOCOL, f"POST /job: {exc}") from None

    async def wait_for_job(self, job_id: str) -> JobStatus:
        """Poll the job until it completes (its status) or ends in error (RetryableError:
        the import may work next time; the engine's window decides), backing off, for at
        most the polling deadline."""
        polling = self._polling
        delay = polling.first_s
        deadline = time.monotonic() + polling.deadline_s
        missed = 0
        while True:
            await self._sleep(delay)
            try:
                answer = await self._job_call("GET", {"job_id": job_id})
            except RetryableError:
                # A poll lost on the way is asked again (the job runs on at Sailthru):
                # only a run of failures fails the attempt, which then imports again.
                missed += 1
                if missed >= POLL_MISSES or time.monotonic() + delay > deadline:
                    raise
                delay = min(polling.max_s, delay * polling.factor)
                continue
            missed = 0
            try:
                status = job_status(answer.reading.document if answer.reading else None)
            except ValueError as exc:
                raise RetryableError(Diagnosis.PROTOCOL, f"GET /job: {exc}") from None
            if status.state is JobState.COMPLETED:
                return status
            if status.state is JobState.ERROR:
                raise RetryableError(
                    Diagnosis.PROTOCOL,
                    f"the import job {job_id} ended in error: {status.message or 'no reason'}",
                )
            if time.monotonic() + delay > deadline:
                raise RetryableError(
                    Diagnosis.TIMEOUT,
                    f"the import job {job_id} was still pending after {polling.deadline_s:g} s",
                )
            delay = min(polling.max_s, delay * polling.factor)

    async def import_file(self, list_name: str, file: Path, postback_url: str = "") -> JobStatus:
        """Import `file` into `list_name` and wait for the job to finish."""
        job_id = await self.start_import(list_name, file, postback_url)
        return await self.wait_for_job(job_id)

    async def probe(self, list_name: str) -> list[str]:
        """A signed, harmless call proving the key, the secret and the list: `GET /list`."""
        answer = await self.request("GET", "list", {"list": list_name})
        reading = answer.reading
        if reading is None or reading.outcome is not Outcome.ACCEPTED:
            raise _as_error(answer)
        return [
            f"{self.base_url}: signed request accepted (API key and secret)",
            f"list {list_name!r} exists",
        ]


def _as_error(answer: Answer) -> RetryableError | PermanentError:
    """The error an unaccepted answer is, for callers that raise."""
    exchange, reading = answer.exchange, answer.reading
    where = f"{exchange.method} {urlsplit(exchange.url).path}"
    if reading is None:
        diagnosis = exchange.diagnosis or Diagnosis.CONNECTION_LOST
        message = f"{where}: {exchange.error}"
        permanent = diagnosis in (Diagnosis.EGRESS, Diagnosis.TLS, Diagnosis.CONFIG)
        return (
            PermanentError(diagnosis, message) if permanent else RetryableError(diagnosis, message)
        )
    message = f"{where}: {reading.rule}" + (f" ({reading.message})" if reading.message else "")
    if reading.outcome is Outcome.RETRY:
        return RetryableError(reading.diagnosis or Diagnosis.PROTOCOL, message)
    return PermanentError(reading.diagnosis or Diagnosis.CONFIG, message)


class _ClosingCall:
    """An aiohttp request context that also closes the uploaded file."""

    def __init__(self, call: Any, handle: Any) -> None:
        self._call = call
        self._handle = handle

    async def __aenter__(self) -> aiohttp.ClientResponse:
        try:
            response: aiohttp.ClientResponse = await self._call.__aenter__()
        except BaseException:
            self._handle.close()
            raise
        return response

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self._call.__aexit__(*exc)
        finally:
            self._handle.close()

"""One connection's live loop (an API connection, or a vendor's in real-time mode): new
referrals up to the safe watermark are sent the moment they commit, one request each
(built and read by the kind's record sender, see `senders.py`), bounded by the
connection's concurrency and rate; failures wait in `live_messages` for their retry
without holding back the others (unless the connection asks for strict order); the cursor
moves past a referral once it has an outcome or a waiting row, in one transaction with its
attempts.

A crash between a send and the flush that records it means the next owner sends that
referral again, with the same `webhook-id` / `Idempotency-Key`: delivery is at-least-once
with a stable key, so a receiver that honours the key sees it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from opentelemetry import metrics

from services.common.audiences.targets import AudienceSplit, look_up, suppressed_seqs
from services.common.egress import EgressPolicy
from services.common.layouts.codec import custom_field_from_json
from services.common.secrets import SecretBox, SecretError, open_connection_secrets
from services.delivery.live.render import LiveValues
from services.delivery.live.schedule import RetrySchedule, disable_reason
from services.delivery.live.senders import SENDERS, SenderFactory
from services.delivery.live.store import Flush, LiveConnection, LiveStorePg, LostLeaseError, Parked
from services.delivery.transports.http.client import HEAD_KEPT, Exchange
from services.delivery.transports.http.responses import THROTTLED, Outcome

log = logging.getLogger(__name__)
_meter = metrics.get_meter("handoff.delivery")
_sent = _meter.create_counter(
    "handoff.live.attempts", unit="{attempt}", description="API calls by outcome"
)
_latency = _meter.create_histogram(
    "handoff.live.latency", unit="s", description="API call time, request to answer"
)
PAGE = 500  # referrals read per query
FLUSH_EVERY_S = 0.05
POLL_S = 1.0  # a loop looks for due retries at least this often without a wake-up
Now = Callable[[], datetime]


def message_id(connection_id: UUID, seq: int) -> str:
    """The stable id of one referral's message to one connection: `webhook-id` and
    `Idempotency-Key` of every attempt, and of a replay."""
    return f"msg_{connection_id.hex}_{seq}"


@dataclass
class _Item:
    seq: int
    values: dict[str, str]
    attempt: int  # this attempt's number (1 = first)
    waiting: bool  # it has a live_messages row (a retry or a replay)
    first_failed_at: datetime | None = None


class _RateLimit:
    """Requests spaced to at most `per_s` a second (0: no limit)."""

    def __init__(self, per_s: float) -> None:
        self._interval = 1.0 / per_s if per_s > 0 else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        at = max(now, self._next)
        self._next = at + self._interval
        if at > now:
            await asyncio.sleep(at - now)


class ConnectionLoop:
    """Runs one connection while this replica holds its lease."""

    def __init__(
        self,
        connection: LiveConnection,
        store: LiveStorePg,
        box: SecretBox,
        egress: EgressPolicy,
        owner: str,
        *,
        now: Now = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        senders: Mapping[str, SenderFactory] | None = None,
    ) -> None:
        self.connection = connection
        self.id = connection.id
        self._store = store
        self._owner = owner
        self._now = now
        self._rng = rng or random.Random()
        factory = (senders or SENDERS)[connection.kind]
        self._sender = factory(connection, self._open_secrets(box), egress, now)
        self.policy = policy = self._sender.policy
        self._schedule = RetrySchedule(policy.retry_schedule_s)
        self._campaigns = (
            None if policy.campaign_ids is None else [UUID(c) for c in policy.campaign_ids]
        )
        self._wake = asyncio.Event()
        self._stop = False
        self._slots = asyncio.Semaphore(1 if policy.strict_order else policy.concurrency)
        self._rate = _RateLimit(policy.rate_limit_per_s)
        self._hold_until = 0.0  # monotonic: a 429's Retry-After holds every send
        self._pending = Flush()
        self._window: deque[list[Any]] = deque()  # [seq, done] of new referrals, in order
        self._read_through = connection.delivered_seq or 0
        self._inflight: set[asyncio.Task[None]] = set()
        self._retrying: set[int] = set()
        self._disabled: str | None = None
        self._gone = False  # a 410: a Zapier subscription owning the connection ends
        self._flushing = True
        self._flushed_cursor: int | None = None
        self._held = False  # a retry not flushed yet (strict order waits for it)
        self._watermark = 0  # the safe watermark, as the supervisor last computed it
        self._check_due = True  # look for due retries and replays at the next step
        self._next_due_at: datetime | None = None  # the earliest retry parked since
        self._audiences = AudienceSplit()

    def _open_secrets(self, box: SecretBox) -> dict[str, str]:
        try:
            return open_connection_secrets(box, self.id, self.connection.sealed)
        except SecretError:
            log.error("a connection's secrets do not open", extra={"connection": str(self.id)})
            return {}

    @property
    def account_id(self) -> UUID:
        """The account whose referrals it sends."""
        return self.connection.account_id

    def advance(self, watermark: int, *, wake: bool = True) -> None:
        """The safe watermark moved (the supervisor computes it once for every loop);
        `wake` when this account has referrals below it."""
        if watermark > self._watermark:
            self._watermark = watermark
            if wake:
                self._wake.set()

    def wake(self) -> None:
        """Something changed in `live_messages` (a replay, a re-enable): look at once."""
        self._check_due = True
        self._wake.set()

    def stop(self) -> None:
        """Stop after the current step (the lease is gone or the replica stops)."""
        self._stop = True
        self._wake.set()

    async def _prepare(self) -> None:
        account = self.connection.account_id
        context = await self._store.render_context(account)
        customs = {
            name: custom_field_from_json(name, description, definition)
            for name, description, definition in await self._store.custom_fields(account)
        }
        columns = await self._sender.prepare(self._store, account, customs)
        self._body = LiveValues(columns, self.policy.filters, customs, context)
        found = await look_up(
            self._store.pool, account, self.connection.audience_ids, "connection.audience_ids"
        )
        self._audiences = found.split
        if found.problems or found.refusals:  # deleted, or an include list below the minimum
            reasons = [p.message for p in found.problems] + list(found.refusals)
            self._disabled = "the connection's audiences: " + "; ".join(reasons)
            if await self._store.disable(self.id, self._now(), self._disabled, "config"):
                log.warning("API connection disabled", extra={"connection": str(self.id)})

    def values(self, rows: Sequence[Sequence[str]]) -> list[dict[str, str]]:
        """Each row's values as the sender names them (and its filters' fields)."""
        return self._body.values(rows)

    async def run(self) -> None:
        """Until stopped, the lease is lost or the endpoint is disabled."""
        try:
            await self._prepare()
            self._watermark = max(self._watermark, await self._store.watermark())
            if self.connection.delivered_seq is None:
                placed = await self._store.place_cursor(self.id, self._owner, self._watermark)
                if placed is None:
                    fresh = await self._store.connection(self.id)
                    placed = fresh.delivered_seq if fresh and fresh.delivered_seq else 0
                self._read_through = placed
            flusher = asyncio.create_task(self._flusher())
            try:
                while not self._stop and self._disabled is None and not flusher.done():
                    self._wake.clear()
                    busy = await self._step()
                    if not busy:
                        await self._idle()
            finally:
                await self._drain()
                self._flushing = False  # the flusher ends after its current write
                await flusher  # raises what stopped it (a lost lease)
                await self._flush()
        except LostLeaseError:
            log.info("live loop lost its lease", extra={"connection": str(self.id)})
        finally:
            await self._sender.close()

    async def _idle(self) -> None:
        """Wait for a wake-up, the next parked retry, or the poll: an idle loop runs no
        query (the supervisor watches the watermark for every loop)."""
        timeout = POLL_S
        if self._next_due_at is not None:
            timeout = min(timeout, max(0.0, (self._next_due_at - self._now()).total_seconds()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _due_now(self) -> bool:
        if self._check_due:
            return True
        return self._next_due_at is not None and self._next_due_at <= self._now()

    async def _due(self) -> list[Any]:
        """Due retries and replays not in flight; learns when the next one is due."""
        self._check_due = False
        now = self._now()
        due = await self._store.due(self.id, now, PAGE)
        self._next_due_at, _ = await self._store.next_due(self.id, now)
        if len(due) == PAGE:
            self._check_due = True  # more are due than one page
        return [r for r in due if r["seq"] not in self._retrying]

    async def _step(self) -> bool:
        """Dispatch what is due; whether anything was."""
        hold = self._hold_until - time.monotonic()
        if hold > 0:
            await asyncio.sleep(min(hold, POLL_S))
            return True
        busy = False
        due = await self._due() if self._due_now() else []
        if due:
            rows = await self._store.rows_by_seq(
                self.connection.account_id, [r["seq"] for r in due]
            )
            known = {r["seq"]: r for r in due}
            for row, values in zip(rows, self.values(rows), strict=True):
                seq = int(row[0])
                info = known[seq]
                self._retrying.add(seq)
                await self._dispatch(
                    _Item(seq, values, info["attempts"] + 1, True, info["first_failed_at"])
                )
            busy = True
        if self.policy.strict_order:
            if self._inflight or self._held:
                return busy  # the one in flight, or a retry not yet recorded, goes first
            _, waiting = await self._store.next_due(self.id, self._now())
            if waiting:
                return busy
        if len(self._window) >= PAGE * 4:
            await asyncio.sleep(0.005)  # the window is full: let outcomes come back
            return True
        watermark = self._watermark
        if watermark <= self._read_through:
            return busy
        rows = await self._store.rows(
            self.connection.account_id, self._read_through, watermark, self._campaigns, PAGE,
            self.connection.starts_at,
        )  # fmt: skip
        through = watermark if len(rows) < PAGE else int(rows[-1][0])
        held = await suppressed_seqs(
            self._store.pool, self.connection.account_id, [int(r[0]) for r in rows],
            self._audiences,
        )  # fmt: skip
        for row, values in zip(rows, self.values(rows), strict=True):
            seq = int(row[0])
            entry = [seq, False]
            self._window.append(entry)
            if not all(f.matches(values.get(f.field, "")) for f in self.policy.filters):
                entry[1] = True  # out of the connection's scope: done without a call
                continue
            if seq in held:
                entry[1] = True  # held back by an audience: counted, done without a call
                self._pending.suppressed += 1
                continue
            task = await self._dispatch(_Item(seq, values, 1, False), entry)
            if self.policy.strict_order:
                await task  # one at a time; a retry holds back every later referral
                if self._held:
                    through = seq
                    break
        self._read_through = through
        return busy or bool(rows)

    async def _dispatch(self, item: _Item, entry: list[Any] | None = None) -> asyncio.Task[None]:
        await self._slots.acquire()
        task = asyncio.create_task(self._send(item, entry))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return task

    async def _send(self, item: _Item, entry: list[Any] | None) -> None:
        try:
            while (hold := self._hold_until - time.monotonic()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(hold)  # a 429's Retry-After: a time, not an event
            await self._rate.wait()
            exchange = await self._sender.send(item.values, message_id(self.id, item.seq))
            self._record(item, exchange)
        except Exception:  # never lose an outcome: an unexpected error is a retry
            log.exception("live send failed unexpectedly", extra={"connection": str(self.id)})
            self._record(item, None)
        finally:
            if entry is not None:
                entry[1] = True
            self._slots.release()

    def _record(self, item: _Item, exchange: Exchange | None) -> None:
        now = self._now()
        if exchange is None:
            outcome, rule, status, error, head, latency = (
                Outcome.RETRY,
                "internal",
                None,
                "",
                b"",
                0.0,
            )
            error = "internal error (logged)"
            retry_after = None
        else:
            outcome, rule = exchange.verdict.outcome, exchange.verdict.rule
            status, error, head = exchange.status, exchange.error, exchange.response_head
            latency, retry_after = exchange.latency_s, exchange.retry_after_s
        recorded = outcome.value
        batch = self._pending
        if outcome is Outcome.ACCEPTED:
            batch.success_at = max(batch.success_at or now, now)
            if item.waiting:
                batch.done.append(item.seq)
        else:
            batch.failure_at = batch.failure_at or now
            first_failed = item.first_failed_at or now
            if outcome is Outcome.REJECTED:
                batch.parked.append(
                    Parked(item.seq, "rejected", item.attempt, None, first_failed, now, status,
                           error or rule)
                )  # fmt: skip
            else:
                at = self._schedule.next_attempt(item.attempt, now, self._rng)
                if outcome is Outcome.DISABLE:
                    at = now
                    said = error or f"it is gone ({rule})"
                    self._disabled = (
                        said if status is None else f"the endpoint answered {status}: {said}"
                    )
                    self._gone = self._gone or status == 410
                elif retry_after is not None and (status in (429, 503) or rule == THROTTLED):
                    self._hold_until = time.monotonic() + retry_after
                    if at is not None:
                        at = max(at, now + timedelta(seconds=retry_after))
                state = "retrying" if at is not None else "dead"
                self._held = self._held or state == "retrying"
                if at is None:
                    recorded = "dead"
                batch.parked.append(
                    Parked(item.seq, state, item.attempt, at, first_failed, now, status,
                           error or f"answered {status} ({rule})")
                )  # fmt: skip
        batch.attempts.append(
            (now, self.id, self.connection.account_id, item.seq, item.attempt, status,
             latency * 1000, recorded, rule,
             head[:HEAD_KEPT].decode("utf-8", "replace") if head else None, error or None)
        )  # fmt: skip
        _sent.add(1, {"outcome": recorded})
        if exchange is not None and exchange.status is not None:
            _latency.record(latency)

    def _advance_window(self) -> int | None:
        while self._window and self._window[0][1]:
            self._window.popleft()
        if self._window:
            return int(self._window[0][0]) - 1
        return self._read_through

    async def _flusher(self) -> None:
        while self._flushing:
            await asyncio.sleep(FLUSH_EVERY_S)
            await self._flush()

    async def _flush(self) -> None:
        cursor = self._advance_window()
        pending = self._pending
        if not (pending.attempts or pending.parked or pending.done or pending.suppressed) and (
            cursor == self._flushed_cursor or self._disabled
        ):
            return  # nothing happened: an idle loop writes nothing
        batch, self._pending = pending, Flush()
        batch.cursor = cursor
        retried = [p.seq for p in batch.parked] + batch.done
        failing = await self._store.flush(self.id, self.connection.account_id, self._owner, batch)
        self._flushed_cursor = cursor
        self._retrying.difference_update(retried)
        self._held = self._held and self._pending.failure_at is not None
        parked = [p.next_at for p in batch.parked if p.next_at is not None]
        if parked:
            soonest = min(parked)
            if self._next_due_at is None or soonest < self._next_due_at:
                self._next_due_at = soonest
            self._wake.set()
        reason = self._disabled or disable_reason(failing, self._now(), self.policy.disable_after_s)
        if reason is not None:
            self._disabled = reason
            later = self._pending
            if later.attempts or later.parked or later.done:
                # Outcomes recorded while this flush ran (the one that disables among them)
                # go first: disabling gives the lease up, and a flush without it is lost.
                self._wake.set()
                return
            if await self._store.disable(self.id, self._now(), reason, "disabled"):
                log.warning("live connection disabled", extra={"connection": str(self.id)})
            if self._gone and await self._store.endpoint_gone(self.id, self._now(), reason):
                log.info("Zapier subscription removed", extra={"connection": str(self.id)})
            self._wake.set()

    async def _drain(self) -> None:
        if self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

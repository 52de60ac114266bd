"""Runs deliveries: lease, render, send, record — and retry, trace and count, once for
every transport.

A delivery is claimed under a lease (one attempt at a time across replicas), kept alive
by a heartbeat, and streamed from PostgreSQL through the layout renderer straight into
the transport: memory holds one block of rows and one output chunk, whatever the size.
The first attempt fixes the layout it renders (`deliveries.layout`), so every retry and
resend writes the same bytes under the same names. Success moves a scheduled delivery's
task cursor in the same transaction; a retryable failure comes back after a backoff with
jitter; a permanent one, or a retryable one past the retry window, is dead and the task
needs attention (an attention event tells the account).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

from opentelemetry import metrics, trace

from services.common.audiences.targets import look_up
from services.common.egress import EgressPolicy
from services.common.errors import FailedPreconditionError, NotFoundError
from services.common.file_names import file_name
from services.common.layouts.catalog import ROW_INDEX
from services.common.layouts.codec import (
    layout_to_json,
)
from services.common.layouts.compiler import CompiledLayout
from services.common.layouts.defaults import DEFAULT_LAYOUT, DEFAULT_LAYOUT_VERSION
from services.common.layouts.render import render_columns
from services.common.referral_rows import ColumnBatch, ReferralRowReader
from services.common.secrets import SecretBox, SecretError, open_connection_secrets
from services.delivery.openpgp import OpenPgpError, encrypted
from services.delivery.parts import RowCount, counted, manifest, manifest_name, parts
from services.delivery.rendering import delivery_rows, rendering
from services.delivery.store import Claimed, DeliveryContext, DeliveryStorePg
from services.delivery.transports.base import (
    Diagnosis,
    FileContext,
    ItemResult,
    ItemStatus,
    OutgoingFile,
    OutgoingValues,
    PermanentError,
    RecordTransport,
    RetryableError,
    Transport,
    TransportError,
)
from services.delivery.transports.ftps import FtpsTransport, ftps_settings
from services.delivery.transports.sftp import SftpSecrets, SftpTransport, sftp_settings

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("handoff.delivery")
_meter = metrics.get_meter("handoff.delivery")
_outcomes = _meter.create_counter(
    "handoff.delivery.outcomes",
    unit="{attempt}",
    description="Delivery attempts by transport and outcome",
)
_rows_sent = _meter.create_counter(
    "handoff.delivery.rows", unit="{referral}", description="Referrals delivered"
)
_durations = _meter.create_histogram(
    "handoff.delivery.duration", unit="s", description="Delivery attempt time"
)

TransportFactory = Callable[
    [dict[str, Any], dict[str, str], EgressPolicy], Transport | RecordTransport
]
_SEQ = ROW_INDEX["seq"]


def sftp_transport(
    settings: dict[str, Any], secrets: dict[str, str], egress: EgressPolicy
) -> Transport:
    """The SFTP transport for a connection's settings and plain secrets."""
    credentials = SftpSecrets(
        secrets.get("password", ""), secrets.get("private_key", ""), secrets.get("passphrase", "")
    )
    return SftpTransport(sftp_settings(settings), credentials, egress)


def ftps_transport(
    settings: dict[str, Any], secrets: dict[str, str], egress: EgressPolicy
) -> Transport:
    """The FTPS transport for a connection's settings and plain secrets."""
    return FtpsTransport(ftps_settings(settings), secrets.get("password", ""), egress)


TRANSPORTS: dict[str, TransportFactory] = {"sftp": sftp_transport, "ftps": ftps_transport}
# Kinds whose transport the service builds with its own resources (the spool):
# "email" and "sailthru", added in services/delivery/__main__.py.


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, inside a window counted from the reservation."""

    first_s: float = 30.0
    factor: float = 2.0
    max_s: float = 3600.0
    window_s: float = 24 * 3600.0
    jitter: float = 0.2  # +- this share of the delay

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number `attempt` (1 = the first)."""
        base = min(self.max_s, self.first_s * self.factor ** max(0, attempt - 1))
        return base * (1 + rng.uniform(-self.jitter, self.jitter))


@dataclass(frozen=True)
class Started:
    """The answer to a start request."""

    outcome: str  # started, running, not_due, finished
    attempt: int = 0


class DeliveryEngine:
    """Starts deliveries on request and runs them in owned, bounded background tasks."""

    def __init__(
        self,
        store: DeliveryStorePg,
        rows: ReferralRowReader,
        box: SecretBox,
        egress: EgressPolicy,
        *,
        lease_s: float = 30.0,
        max_running: int = 8,
        per_host: int = 2,
        retry: RetryPolicy | None = None,
        transports: dict[str, TransportFactory] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._rows = rows
        self._box = box
        self._egress = egress
        self._lease_s = lease_s
        self._running = asyncio.Semaphore(max_running)
        self._per_host = per_host
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._retry = retry or RetryPolicy()
        self._transports = transports or TRANSPORTS
        self._now = now
        self._rng = random.Random()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, delivery_id: UUID, after_seq: int, through_seq: int) -> Started:
        """Claim the delivery and run the attempt in the background."""
        state = await self._store.state(delivery_id)
        if state is None:
            raise NotFoundError(f"delivery {delivery_id} does not exist")
        if (state["after_seq"], state["through_seq"]) != (after_seq, through_seq):
            raise FailedPreconditionError(
                f"delivery {delivery_id} covers ({state['after_seq']}, {state['through_seq']}], "
                f"not ({after_seq}, {through_seq}]"
            )
        if state["state"] in ("succeeded", "dead"):
            return Started("finished")
        claimed = await self._store.claim(delivery_id, self._lease_s)
        if claimed is None:
            return Started("running" if state["state"] == "running" else "not_due")
        task = asyncio.create_task(self._attempt(claimed), name=f"delivery {delivery_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return Started("started", claimed.attempt)

    async def wait_idle(self) -> None:
        """Wait until no attempt runs (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Cancel running attempts: their leases lapse and another replica resumes them."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _heartbeat(self, claimed: Claimed) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            try:
                await self._store.heartbeat(claimed, self._lease_s)
            except Exception:  # a missed beat is retried; the lease has room
                log.warning("lease heartbeat failed", extra={"delivery_id": str(claimed.id)})

    async def _attempt(self, claimed: Claimed) -> None:
        beat = asyncio.create_task(self._heartbeat(claimed))
        started = time.monotonic()
        kind = "unknown"  # until the connection is read
        try:
            with _tracer.start_as_current_span(
                "delivery",
                attributes={
                    "handoff.delivery_id": str(claimed.id),
                    "handoff.attempt": claimed.attempt,
                },
            ):
                async with self._running:
                    context = await self._store.context(claimed.task_id)
                    if context is None:
                        raise PermanentError(Diagnosis.CONFIG, "the task no longer exists")
                    kind = context.kind
                    if kind not in self._transports:
                        raise PermanentError(
                            Diagnosis.CONFIG, f"no transport delivers {kind!r} connections"
                        )
                    # Bounded per file server (host) and for the one SMTP relay (email);
                    # a vendor's connections are capped per key by their transport, so
                    # they do not share one queue here.
                    host = str(context.settings.get("host") or "")
                    if not host and kind != "email":
                        host = f"{kind}:{context.connection_id}"
                    async with self._hosts.setdefault(host, asyncio.Semaphore(self._per_host)):
                        rows, size, files = await self._deliver(claimed, context, kind)
            if await self._store.succeed(claimed, rows, size, files):
                _outcomes.add(1, {"transport": kind, "outcome": "succeeded"})
                _rows_sent.add(rows, {"transport": kind})
        except TransportError as error:
            await self._failed(claimed, error, kind)
        except OpenPgpError as error:
            await self._failed(claimed, PermanentError(Diagnosis.CONFIG, f"OpenPGP: {error}"), kind)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception(
                "delivery attempt failed unexpectedly", extra={"delivery_id": str(claimed.id)}
            )
            await self._failed(
                claimed, RetryableError(Diagnosis.PROTOCOL, f"internal error: {exc}"), kind
            )
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            _durations.record(time.monotonic() - started, {"transport": kind})

    async def _failed(self, claimed: Claimed, error: TransportError, kind: str) -> None:
        now = self._now()
        past_window = now - claimed.reserved_at > timedelta(seconds=self._retry.window_s)
        if error.retryable and not past_window:
            at = now + timedelta(seconds=self._retry.delay(claimed.attempt, self._rng))
            await self._store.retry_later(claimed, at, error.message, error.diagnosis.value)
            _outcomes.add(1, {"transport": kind, "outcome": "retrying"})
            log.warning(
                "delivery attempt failed, will retry",
                extra={
                    "delivery_id": str(claimed.id),
                    "diagnosis": error.diagnosis.value,
                    "retry_at": at.isoformat(),
                },
            )
            return
        why = (
            error.message
            if not error.retryable
            else f"gave up after the retry window: {error.message}"
        )
        await self._store.give_up(claimed, error.message, error.diagnosis.value, why)
        _outcomes.add(1, {"transport": kind, "outcome": "dead"})
        log.error(
            "delivery dead: the task needs attention",
            extra={"delivery_id": str(claimed.id), "diagnosis": error.diagnosis.value},
        )

    async def _layout(self, claimed: Claimed, context: DeliveryContext) -> dict[str, Any]:
        if claimed.layout is not None:
            return claimed.layout
        saved, customs = await self._store.layout_definitions(claimed.account_id, context.layout_id)
        if saved is None and context.layout_id is not None:
            raise PermanentError(Diagnosis.CONFIG, f"the task's layout {context.layout_id} is gone")
        snapshot = {
            "layout_id": None if saved is None else saved["id"],
            "layout_version": DEFAULT_LAYOUT_VERSION if saved is None else saved["version"],
            "layout": layout_to_json(DEFAULT_LAYOUT) if saved is None else saved["definition"],
            "custom_fields": customs,
            "format": context.format,
        }
        if claimed.purpose != "resend" and context.audience_ids:
            snapshot["audiences"] = await self._audiences(claimed, context)
        return await self._store.keep_layout(claimed, snapshot)

    async def _audiences(self, claimed: Claimed, context: DeliveryContext) -> dict[str, Any]:
        """The task's audiences, split by kind, as the first attempt fixes them; one that
        was deleted or cannot be used (an include audience below the minimum) stops the
        delivery for a person to look at."""
        found = await look_up(
            self._store.pool, claimed.account_id, context.audience_ids, "task.audience_ids"
        )
        if found.problems or found.refusals:
            reasons = [p.message for p in found.problems] + list(found.refusals)
            raise PermanentError(Diagnosis.CONFIG, "the task's audiences: " + "; ".join(reasons))
        return found.split.to_json()

    def _secrets(self, context: DeliveryContext) -> dict[str, str]:
        try:
            return open_connection_secrets(self._box, context.connection_id, context.sealed)
        except SecretError as exc:
            raise PermanentError(
                Diagnosis.CONFIG, f"the connection's secrets do not open: {exc}"
            ) from exc

    async def _deliver(
        self, claimed: Claimed, context: DeliveryContext, kind: str
    ) -> tuple[int, int, list[dict[str, Any]]]:
        snapshot = await self._layout(claimed, context)
        recorded = await self._store.suppressions_recorded(claimed, snapshot)
        # The first render leaves out what the audiences hold back, and records it.
        held = partial(self._store.record_suppressions, claimed.names_from)
        plan = rendering(claimed, context, snapshot, recorded=recorded)
        layout, fmt, names, template = plan.layout, plan.fmt, plan.names, plan.template
        settings = context.settings
        batches = delivery_rows(self._rows, claimed, plan, held)
        max_rows = int(settings.get("max_rows_per_file") or 0)
        public_key = str(settings.get("pgp_public_key") or "")
        expected = (
            await self._store.original_files(claimed.names_from)
            if claimed.purpose == "resend" and not public_key
            else {}
        )
        files: list[dict[str, Any]] = []
        total_rows = total_bytes = 0
        transport = self._transports[kind](settings, self._secrets(context), self._egress)
        if isinstance(transport, RecordTransport):
            await batches.aclose()  # never started: the records read only their columns
            plan = rendering(claimed, context, snapshot, transport.headers, recorded=recorded)
            batches = delivery_rows(self._rows, claimed, plan, held)
            sent = await self._deliver_records(claimed, plan.layout, batches, transport)
            return sent, 0, files
        async with contextlib.aclosing(batches), transport:
            index = 0
            async for part in parts(batches, max_rows):
                index += 1
                count = RowCount()
                chunks: AsyncIterator[bytes] = render_columns(layout, counted(part, count), fmt)
                if public_key:
                    chunks = encrypted(chunks, public_key)
                name = file_name(template, names, index if max_rows else None)
                with _tracer.start_as_current_span(
                    "transport.send_file", attributes={"handoff.file": name}
                ):
                    about = FileContext(
                        str(claimed.id), context.task_name, claimed.reserved_at,
                        context.time_zone, partial(getattr, count, "rows"),
                    )  # fmt: skip
                    outgoing = OutgoingFile(name, expected.get(name, ""), about)
                    receipt = await transport.send_file(outgoing, chunks)
                if outgoing.expected_sha256 and receipt.sha256 != outgoing.expected_sha256:
                    # A transport that writes in place (direct mode) could not refuse first.
                    raise PermanentError(
                        Diagnosis.MISMATCH,
                        f"{name} was sent with SHA-256 {receipt.sha256}, not the original's "
                        f"{outgoing.expected_sha256}",
                    )
                entry: dict[str, Any] = {
                    "path": receipt.path,
                    "rows": count.rows,
                    "bytes": receipt.size,
                    "sha256": receipt.sha256,
                    # A re-download must know: encrypted bytes cannot be repeated.
                    "encrypted": bool(public_key),
                }
                if receipt.remote:  # what a vendor's import reported (its job, counts)
                    entry["remote"] = dict(receipt.remote)
                files.append(entry)
                total_rows += count.rows
                total_bytes += receipt.size
                if settings.get("manifest"):
                    body = manifest(
                        name, count.rows, receipt.size, receipt.sha256, str(claimed.names_from),
                        claimed.after_seq, claimed.through_seq, index if max_rows else None,
                    )  # fmt: skip
                    await transport.send_file(OutgoingFile(manifest_name(name)), _one(body))
        return total_rows, total_bytes, files

    async def _deliver_records(
        self,
        claimed: Claimed,
        layout: CompiledLayout,
        batches: AsyncGenerator[ColumnBatch, None],
        transport: RecordTransport,
    ) -> int:
        """Render the range into records, send them in batches, record each referral's
        outcome; the accepted count. Any RETRY item makes the attempt retryable (after
        every batch was sent: the next attempt resends the range, idempotently)."""
        headers = layout.headers
        await self._store.reset_items(claimed)
        accepted = 0
        retry: list[ItemResult] = []
        pending: list[OutgoingValues] = []

        async def send(chunk: Sequence[OutgoingValues]) -> None:
            nonlocal accepted
            with _tracer.start_as_current_span(
                "transport.send_batch", attributes={"handoff.records": len(chunk)}
            ):
                results = {r.key: r for r in await transport.send_batch(chunk)}
            failed: list[tuple[int, ItemResult]] = []
            for record in chunk:
                result = results.get(str(record.seq))
                if result is None or result.status is ItemStatus.ACCEPTED:
                    accepted += 1
                else:
                    failed.append((record.seq, result))
                    if result.status is ItemStatus.RETRY:
                        retry.append(result)
            if failed:
                await self._store.record_items(claimed, failed)

        # One batch in flight while the next is rendered (never two at once: batches
        # arrive in seq order, so a later referral's values win).
        in_flight: asyncio.Task[None] | None = None

        async def hand_over(chunk: Sequence[OutgoingValues]) -> None:
            nonlocal in_flight
            if in_flight is not None:
                await in_flight
            in_flight = asyncio.create_task(send(chunk))

        async with contextlib.aclosing(batches), transport:
            size = max(1, transport.batch_size)
            try:
                async for batch in batches:
                    cells = layout.cell_columns(batch)
                    seqs = batch[_SEQ]
                    for i, row in enumerate(zip(*cells, strict=True)):
                        pending.append(
                            OutgoingValues(int(seqs[i]), dict(zip(headers, row, strict=True)))
                        )
                    while len(pending) >= size:
                        chunk, pending = pending[:size], pending[size:]
                        await hand_over(chunk)
                if pending:
                    await hand_over(pending)
                if in_flight is not None:
                    await in_flight
            finally:
                if in_flight is not None and not in_flight.done():
                    in_flight.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await in_flight
        if retry:
            said = "; ".join(f"{r.key}: {r.detail}" for r in retry[:3])
            raise RetryableError(
                Diagnosis.PROTOCOL,
                f"{len(retry)} referral(s) will be tried again ({said}); the range is resent "
                "(an upsert: accepted ones are not duplicated)",
            )
        return accepted


async def _one(body: bytes) -> AsyncIterator[bytes]:
    yield body

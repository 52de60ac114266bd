"""The audience refresher: pulls due audience sources, one replica per source at a time.

Each tick leases up to `concurrency` due sources (`FOR UPDATE SKIP LOCKED`, a lease
token and a lease that a crashed replica's lets lapse), and pulls each: the source's
reader streams members into the same all-or-nothing import an upload uses, replacing the
audience with what the source holds now. While a pull runs its lease is renewed; a lease
lost (taken over after a stall) cancels the pull, which then merges nothing; a source
stays due while leased, so a replica that dies mid-pull leaves it to the next once its
lease lapses. The outcome — counts, per-file results, or the error and its diagnosis —
is recorded with the next due time: an interval after the pull started, or sooner after
a failure that may pass (backing off from RETRY_FIRST_S), or at once when a refresh was
asked for while it ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from uuid import UUID

from services.common.audiences.sources import (
    CONNECTION_KINDS,
    AudienceSource,
    PullContext,
    PullError,
    PullOutcome,
    PullReport,
    SourceReader,
)
from services.common.audiences.staging import StagedRow
from services.common.audiences.store import AudienceStorePg, PullStorePg
from services.common.egress import EgressPolicy
from services.common.secrets import SecretBox, SecretError, open_connection_secrets
from services.delivery.transports.base import TransportError

log = logging.getLogger(__name__)
RETRY_FIRST_S = 300.0


class SourceFailedError(Exception):
    """A reader's failure, carried past the store (which reads an OSError as its own)."""


class LeaseLostError(Exception):
    """Another replica holds the source's lease now."""


async def _guarded(batches: AsyncIterator[list[StagedRow]]) -> AsyncIterator[list[StagedRow]]:
    try:
        async for batch in batches:
            yield batch
    except Exception as exc:
        raise SourceFailedError(str(exc)) from exc


class AudienceRefresher:
    """Runs ticks of due pulls until told to stop."""

    def __init__(
        self,
        pulls: PullStorePg,
        audiences: AudienceStorePg,
        box: SecretBox,
        egress: EgressPolicy,
        readers: Mapping[str, SourceReader],
        *,
        tick_s: float = 5.0,
        lease_s: float = 60.0,
        concurrency: int = 2,
        retry_first_s: float = RETRY_FIRST_S,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pulls = pulls
        self._audiences = audiences
        self._box = box
        self._egress = egress
        self._readers = readers
        self._tick_s = tick_s
        self._lease_s = lease_s
        self._concurrency = concurrency
        self._retry_first_s = retry_first_s
        self._now = now

    async def tick(self) -> list[PullOutcome]:
        """Lease the due sources (at most `concurrency`) and pull them; their outcomes."""
        token = uuid.uuid4()
        due = await self._pulls.claim_due(self._now(), self._concurrency, token, self._lease_s)
        outcomes = await asyncio.gather(
            *(self._pull(source, token) for source in due), return_exceptions=True
        )
        for source, outcome in zip(due, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.error("audience %s: pull failed", source.audience_id, exc_info=outcome)
        return [o for o in outcomes if isinstance(o, PullOutcome)]

    async def _pull(self, source: AudienceSource, token: UUID) -> PullOutcome | None:
        report = PullReport()
        pulling = asyncio.ensure_future(self._outcome(source, report))
        keeping = asyncio.ensure_future(self._keep_lease(source.audience_id, token))
        try:
            await asyncio.wait({pulling, keeping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost = keeping.done()
            for task in (keeping, pulling):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if lost and not pulling.done():
            log.warning("audience %s: lease lost during a pull; nothing merged", source.audience_id)
            return None
        outcome = pulling.result()  # the database failing: raised, the lease lapses
        # Success: an interval after this pull started ("every hour" does not drift).
        start = source.last_started_at if outcome.ok and source.last_started_at else None
        next_due = (start or outcome.finished_at) + self._wait_after(source, outcome)
        if not await self._pulls.finish(source.audience_id, token, outcome, next_due):
            log.warning(
                "audience %s: lease lost before the outcome was recorded", source.audience_id
            )
        if outcome.ok:
            log.info(
                "audience %s pulled from %s: %d people", source.audience_id, source.kind,
                outcome.member_count,
            )  # fmt: skip
        else:
            log.warning(
                "audience %s: pull from %s failed (%s): %s", source.audience_id, source.kind,
                outcome.diagnosis, outcome.error,
            )  # fmt: skip
        return outcome

    def _wait_after(self, source: AudienceSource, outcome: PullOutcome) -> timedelta:
        interval = timedelta(seconds=source.interval_s)
        if outcome.ok or not outcome.retryable:
            return interval
        backoff = timedelta(seconds=self._retry_first_s * 2 ** min(source.failures, 10))
        return min(interval, backoff)

    async def _keep_lease(self, audience_id: UUID, token: UUID) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            until = self._now() + timedelta(seconds=self._lease_s)
            if not await self._pulls.renew(audience_id, token, until):
                raise LeaseLostError(str(audience_id))

    def _failed(
        self, report: PullReport, diagnosis: str, error: str, *, retryable: bool = False
    ) -> PullOutcome:
        return PullOutcome(
            False, self._now(), report, error=error, diagnosis=diagnosis, retryable=retryable
        )

    async def _outcome(self, source: AudienceSource, report: PullReport) -> PullOutcome:
        """Pull one source: the outcome (a failure is an outcome, not an exception)."""
        wanted = CONNECTION_KINDS[source.kind]
        found = None
        if source.connection_id is not None:
            found = await self._pulls.connection(source.account_id, source.connection_id)
        if found is None or source.connection_id is None:
            return self._failed(
                report, "config", f"the source's {wanted} connection was deleted: give the "
                "audience another one, or delete it"
            )  # fmt: skip
        if found.kind != wanted:
            return self._failed(report, "config", f"the source's connection is {found.kind}, "
                                f"not {wanted}")  # fmt: skip
        reader = self._readers.get(source.kind)
        if reader is None:
            return self._failed(report, "unavailable", f"no reader for {source.kind} sources")
        assert source.connection_id is not None
        try:
            secrets = open_connection_secrets(self._box, source.connection_id, found.sealed)
        except SecretError as exc:
            return self._failed(report, "config", f"the connection's secrets: {exc}")
        context = PullContext(source, found.settings, secrets, self._egress, report)
        try:
            done = await self._audiences.import_members(
                source.account_id, source.audience_id, _guarded(reader(context)), replace=True
            )
        except SourceFailedError as exc:
            return self._failure(report, exc.__cause__)
        if done is None:  # deleted meanwhile: its source row went with it
            return self._failed(report, "missing", "the audience was deleted")
        audience, counts = done
        return PullOutcome(
            True, self._now(), report, accepted=counts.people,
            member_count=audience.member_count,
        )  # fmt: skip

    def _failure(self, report: PullReport, cause: BaseException | None) -> PullOutcome:
        if isinstance(cause, TransportError):
            return self._failed(
                report, cause.diagnosis.value, cause.message, retryable=cause.retryable
            )
        if isinstance(cause, PullError):
            return self._failed(report, cause.diagnosis, cause.message, retryable=cause.retryable)
        # Not a message made for users (it might quote anything): its type only.
        log.error("audience pull failed unexpectedly", exc_info=cause)
        return self._failed(
            report, "internal", f"the pull failed ({type(cause).__name__})", retryable=True
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every tick_s until `stop` is set; a failed tick is logged and retried."""
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("audience refresh tick failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._tick_s)

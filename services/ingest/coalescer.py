"""Groups concurrent single-referral calls into shared batch inserts.

One INSERT per unary call would cap ingest at a few thousand calls a second; callers that
arrive while a batch is in flight wait for the next one instead, so a busy server writes
a few large batches rather than many tiny transactions. Validation runs per batch too,
where the columnar fast path is cheapest. An idle server still writes a lone referral at
once; a busy one lingers a moment before each batch so that it fills.

The batches run as tasks the coalescer owns: it is an async context manager, entered in
the service's exit stack; leaving it lets running batches finish (for a bounded time),
and `failed()` raises as soon as one of them dies unexpectedly, so that the process
stops instead of leaving callers waiting on a coalescer that no longer drains.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Generic, TypeVar

from services.common.errors import UnavailableError
from services.ingest.intake import ReferralStore, ingest_rows
from services.ingest.model import ReferralInput, ReferralRow, RowResult

log = logging.getLogger(__name__)
Message = TypeVar("Message")
Prepare = Callable[[Sequence[Message], datetime], list[ReferralInput | ReferralRow]]


class UnaryCoalescer(Generic[Message]):
    """Runs at most `max_flushes` batches at once, each of up to `max_batch` calls."""

    def __init__(
        self,
        store: ReferralStore,
        clock: Callable[[], datetime],
        prepare: Prepare[Message],
        *,
        max_batch: int = 500,
        max_flushes: int = 1,
        linger_s: float = 0.002,
        close_timeout_s: float = 10.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._prepare = prepare
        self._max_batch = max_batch
        self._max_flushes = max_flushes
        self._linger_s = linger_s
        self._close_timeout_s = close_timeout_s
        self._pending: list[tuple[Message, asyncio.Future[RowResult]]] = []
        self._flushing = 0
        self._last_flush_end = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: set[asyncio.Future[RowResult]] = set()  # callers of running batches
        self._open = False
        self._failure: asyncio.Future[None] | None = None

    async def __aenter__(self) -> UnaryCoalescer[Message]:
        self._open = True
        self._failure = asyncio.get_running_loop().create_future()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Refuse new calls; let running batches finish, then cancel what is left."""
        self._open = False
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self._close_timeout_s)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._fail_pending(UnavailableError("ingest is shutting down"))
        if self._failure is not None and not self._failure.done():
            self._failure.cancel()

    async def failed(self) -> None:
        """Raise what a batch task died of; wait until one does (or the coalescer closes)."""
        if self._failure is None:
            raise RuntimeError("enter the coalescer (async with) before watching it")
        await asyncio.shield(self._failure)

    async def submit(self, message: Message) -> RowResult:
        """Store one referral with whatever else is waiting; return its result."""
        if not self._open:
            raise UnavailableError("ingest is not accepting calls (starting or stopping)")
        future: asyncio.Future[RowResult] = asyncio.get_running_loop().create_future()
        self._pending.append((message, future))
        if self._flushing < self._max_flushes:
            self._flushing += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        return await future

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        log.error("a coalescer batch task died", exc_info=error)
        # Nobody is left to drain: the waiting callers learn it, and so does the process.
        self._fail_pending(UnavailableError("ingest stopped draining unary calls"))
        if self._failure is not None and not self._failure.done():
            self._failure.set_exception(error)

    def _fail_pending(self, error: BaseException) -> None:
        """Fail every caller still waiting: queued, or in a batch that will not finish."""
        waiting = [future for _, future in self._pending] + list(self._in_flight)
        self._pending, self._in_flight = [], set()
        for future in waiting:
            if not future.done():
                future.set_exception(error)

    async def _drain(self) -> None:
        try:
            # Under load (a batch ended moments ago) wait briefly so the next one fills;
            # otherwise only let callers that are already runnable join.
            busy = time.monotonic() - self._last_flush_end < 10 * self._linger_s
            await asyncio.sleep(self._linger_s if busy else 0)
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                # Until the batch is done, closing or a dying task must answer its callers.
                self._in_flight.update(future for _, future in batch)
                await self._flush(batch)
                self._in_flight.difference_update(future for _, future in batch)
                self._last_flush_end = time.monotonic()
        finally:
            self._flushing -= 1

    async def _flush(self, batch: list[tuple[Message, asyncio.Future[RowResult]]]) -> None:
        try:
            now = self._clock()
            rows = self._prepare([message for message, _ in batch], now)
            # Repeats answer like the first occurrence: two callers sending the same
            # partner id at once both learn its one seq, as if they had come in turn.
            results = await ingest_rows(self._store, rows, now, repeats_are_duplicates=True)
        except BaseException as exc:
            # A cancelled batch (the coalescer closing) is not the callers' fault.
            error = exc if isinstance(exc, Exception) else UnavailableError("ingest stopped")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # the caller may have gone (deadline, cancel)
                future.set_result(result)

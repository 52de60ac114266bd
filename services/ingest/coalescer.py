"""Groups concurrent single-referral calls into shared batch inserts.

One INSERT per unary call would cap ingest at a few thousand calls a second; callers that
arrive while a batch is in flight wait for the next one instead, so a busy server writes
a few large batches rather than many tiny transactions. Validation runs per batch too,
where the columnar fast path is cheapest. An idle server still writes a lone referral at
once; a busy one lingers a moment before each batch so that it fills.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Generic, TypeVar

from services.ingest.intake import ReferralStore, ingest_rows
from services.ingest.model import ReferralInput, ReferralRow, RowResult

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
    ) -> None:
        self._store = store
        self._clock = clock
        self._prepare = prepare
        self._max_batch = max_batch
        self._max_flushes = max_flushes
        self._linger_s = linger_s
        self._pending: list[tuple[Message, asyncio.Future[RowResult]]] = []
        self._flushing = 0
        self._last_flush_end = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, message: Message) -> RowResult:
        """Store one referral with whatever else is waiting; return its result."""
        future: asyncio.Future[RowResult] = asyncio.get_running_loop().create_future()
        self._pending.append((message, future))
        if self._flushing < self._max_flushes:
            self._flushing += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            # Under load (a batch ended moments ago) wait briefly so the next one fills;
            # otherwise only let callers that are already runnable join.
            busy = time.monotonic() - self._last_flush_end < 10 * self._linger_s
            await asyncio.sleep(self._linger_s if busy else 0)
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._flush(batch)
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
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # the caller may have gone (deadline, cancel)
                future.set_result(result)

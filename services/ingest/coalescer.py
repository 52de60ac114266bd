"""Groups concurrent single-referral calls into shared batch inserts.

One INSERT per unary call would cap ingest at a few thousand calls a second on one
pool; callers that arrive while a batch is in flight wait for the next one instead, so
a busy server writes a few large batches rather than many tiny transactions, and an idle
one still writes a lone referral at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from services.ingest.intake import ReferralStore, ingest_rows
from services.ingest.model import ReferralInput, ReferralRow, RowResult

Pending = tuple[ReferralInput | ReferralRow, "asyncio.Future[RowResult]"]


class UnaryCoalescer:
    """Runs at most `max_flushes` batches at once, each of up to `max_batch` calls."""

    def __init__(
        self,
        store: ReferralStore,
        clock: Callable[[], datetime],
        *,
        max_batch: int = 500,
        max_flushes: int = 1,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_batch = max_batch
        self._max_flushes = max_flushes
        self._pending: list[Pending] = []
        self._flushing = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, row: ReferralInput | ReferralRow) -> RowResult:
        """Store one referral with whatever else is waiting; return its result."""
        future: asyncio.Future[RowResult] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        if self._flushing < self._max_flushes:
            self._flushing += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # let callers that are already runnable join this batch
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._flush(batch)
        finally:
            self._flushing -= 1

    async def _flush(self, batch: list[Pending]) -> None:
        try:
            # Repeats answer like the first occurrence: two callers sending the same
            # partner id at once both learn its one seq, as if they had come in turn.
            results = await ingest_rows(
                self._store, [row for row, _ in batch], self._clock(), repeats_are_duplicates=True
            )
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

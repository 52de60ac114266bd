"""How many exports and downloads one export process streams at once.

Each stream holds a database connection (its COPY) and a few MiB of buffers for as long
as the client reads, so the process bounds them: a request that finds every slot taken
waits a little for one, then is answered 503 with Retry-After rather than queueing
without end (or taking the connection pins, browsing and the audit log need).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.common.errors import UnavailableError

WAIT_S = 5.0  # how long a request waits for a slot


class StreamSlots:
    """A bounded number of concurrent streams."""

    def __init__(self, limit: int, wait_s: float = WAIT_S) -> None:
        if limit < 1:
            raise ValueError("a stream limit must be at least 1")
        self.limit = limit
        self._wait_s = wait_s
        self._free = asyncio.Semaphore(limit)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the block; UnavailableError when none frees up in time."""
        try:
            async with asyncio.timeout(self._wait_s):
                await self._free.acquire()
        except TimeoutError as exc:
            raise UnavailableError(
                f"all {self.limit} export streams of this process are busy"
            ) from exc
        try:
            yield
        finally:
            self._free.release()


def stream_limit(pool_max: int) -> int:
    """The default: every pooled connection but one (pins, pages and the audit log)."""
    return max(1, pool_max - 1)

"""How many exports and downloads one export process streams at once.

Each stream holds a database connection (its COPY) and a few MiB of buffers for as long
as the client reads, so the process bounds them: a request that finds every slot taken
waits a little for one, then is answered 503 with Retry-After rather than queueing
without end (or taking the connection pins, browsing and the audit log need).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from services.common.errors import UnavailableError

WAIT_S = 5.0  # how long a request waits for a slot

log = logging.getLogger(__name__)


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


async def send_stream(
    request: web.Request,
    response: web.StreamResponse,
    chunks: AsyncGenerator[bytes, None],
    before_end: Callable[[int], Awaitable[None]],
) -> tuple[str, int]:
    """Send `chunks` as the body of `response`: (outcome, bytes sent), the outcome
    `completed`, `aborted` (the client hung up) or `failed`.

    The first chunk is read before the headers go out, so a failure at the start is still
    answered as a problem document (raised). `before_end(sent)` is awaited before the end
    of the body goes out (a client that has it all finds, say, its audit entry finished).
    A failure mid-stream cuts the connection before the body's end: the client sees an
    incomplete transfer, never a short body as a whole one. Closing `chunks` stops their
    query whatever happens.
    """
    sent = 0
    try:
        async with contextlib.aclosing(chunks):
            first = await anext(chunks, b"")
            await response.prepare(request)
            if first:
                await response.write(first)
                sent += len(first)
            async for chunk in chunks:
                await response.write(chunk)
                sent += len(chunk)
        await before_end(sent)
        await response.write_eof()
    except (ConnectionError, OSError):
        return "aborted", sent
    except Exception:
        if not response.prepared:
            raise
        log.exception("stream failed after %d bytes", sent)
        if request.transport is not None:
            request.transport.abort()
        return "failed", sent
    return "completed", sent

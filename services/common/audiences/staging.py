"""A file's byte chunks to batches of staged members, in constant memory: the one pipeline
an upload and a pulled file both go through (Unpacker, LineSplitter, LineReader), with a
tally of refused lines beside it.

Errors of the file itself (BodyTooLargeError, BadGzipError from `lines`) and of the chunk
source propagate: the caller decides what they mean (a 413 for an upload, a failed pull
for a source), and the all-or-nothing import then changes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.common.audiences.lines import LineError, LineReader, LineSplitter, Unpacker

ERRORS_SHOWN = 100
MAX_FILE_BYTES = 512 * 2**20  # uncompressed, per file
BATCH_ROWS = 10_000
StagedRow = tuple[int, bytes | None, bytes | None]  # (line, sha256, md5)


class LineTally:
    """The refused lines of one file and the first reasons, as they are read."""

    def __init__(self, shown: int = ERRORS_SHOWN) -> None:
        self.rejected = 0
        self.errors: list[LineError] = []
        self._shown = shown

    def reject(self, error: LineError) -> None:
        """Count a refused line (its reason kept for the first `shown`)."""
        self.rejected += 1
        if len(self.errors) < self._shown:
            self.errors.append(error)


async def staged_batches(
    chunks: AsyncIterator[bytes], unpacker: Unpacker, reader: LineReader, tally: LineTally
) -> AsyncIterator[list[StagedRow]]:
    """The members of a file in batches of about BATCH_ROWS, read chunk by chunk."""
    splitter = LineSplitter()
    batch: list[StagedRow] = []

    def take(raw: bytes | None) -> None:
        found = reader.read(raw)
        if isinstance(found, LineError):
            tally.reject(found)
        elif found is not None:
            batch.append((reader.number, found.sha256, found.md5))

    async for chunk in chunks:
        for data in unpacker.feed(chunk):  # at most 1 MiB each, gzip or not
            for raw in splitter.feed(data):
                take(raw)
            if len(batch) >= BATCH_ROWS:
                yield batch
                batch = []
    for data in unpacker.finish():
        for raw in splitter.feed(data):
            take(raw)
    for raw in splitter.finish():
        take(raw)
    if batch:
        yield batch

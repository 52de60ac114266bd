"""Streaming helpers of a delivery: split a range into parts, count rows as they pass,
keep only some campaigns, and the manifest written beside each file."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

ColumnBatch = Sequence[Sequence[str]]


@dataclass
class RowCount:
    """Rows that went through a counted stream."""

    rows: int = 0


async def counted(
    batches: AsyncIterator[ColumnBatch], count: RowCount
) -> AsyncIterator[ColumnBatch]:
    """The same batches, counting their rows into `count`."""
    async for batch in batches:
        count.rows += len(batch[0]) if batch else 0
        yield batch


class _Parts:
    """Hands out one part after another over a single stream of batches."""

    def __init__(self, batches: AsyncIterator[ColumnBatch], max_rows: int) -> None:
        self._batches = batches
        self._max = max_rows
        self._pending: ColumnBatch | None = None
        self.exhausted = False

    async def _next(self) -> ColumnBatch | None:
        if self._pending is not None:
            batch, self._pending = self._pending, None
            return batch
        try:
            return await anext(self._batches)
        except StopAsyncIteration:
            self.exhausted = True
            return None

    async def has_more(self) -> bool:
        """Whether another row is waiting (peeks one batch)."""
        if self._pending is None and not self.exhausted:
            self._pending = await self._next()
        return self._pending is not None

    async def part(self) -> AsyncIterator[ColumnBatch]:
        """The next part: at most max_rows rows (all of them when max_rows is 0)."""
        taken = 0
        while (batch := await self._next()) is not None:
            size = len(batch[0]) if batch else 0
            room = self._max - taken if self._max else size
            if size <= room:
                taken += size
                yield batch
            else:
                yield [values[:room] for values in batch]
                self._pending = [values[room:] for values in batch]
                taken += room
            if self._max and taken >= self._max:
                return


async def parts(
    batches: AsyncIterator[ColumnBatch], max_rows: int
) -> AsyncIterator[AsyncIterator[ColumnBatch]]:
    """The range as consecutive parts; always at least one (empty when there is no row).

    Each part must be consumed before the next is asked for.
    """
    splitter = _Parts(batches, max_rows)
    yield splitter.part()
    while await splitter.has_more():
        yield splitter.part()


async def nth_part(
    batches: AsyncIterator[ColumnBatch], max_rows: int, index: int
) -> AsyncIterator[ColumnBatch]:
    """Only part `index` (0 = the first) of what `parts` cuts: earlier parts are read and
    dropped, so the rows are those the same cut put in that part."""
    seen = 0
    async for part in parts(batches, max_rows):
        if seen == index:
            async for batch in part:
                yield batch
            return
        async for _ in part:
            pass
        seen += 1


def manifest_name(file_name: str) -> str:
    """Where a file's manifest goes."""
    return f"{file_name}.manifest.json"


def manifest(
    file_name: str, rows: int, size: int, sha256: str, delivery_id: str, after_seq: int,
    through_seq: int, part: int | None,
) -> bytes:  # fmt: skip
    """The manifest written after a file: enough to check it arrived whole."""
    return (
        json.dumps(
            {
                "file": file_name,
                "rows": rows,
                "bytes": size,
                "sha256": sha256,
                "delivery_id": delivery_id,
                "after_seq": after_seq,
                "through_seq": through_seq,
                "part": part,
            },
            indent=2,
        ).encode()
        + b"\n"
    )

"""Streaming render: rows in (an async iterator), byte chunks out, optionally gzip.

Memory stays bounded by one batch of rows plus one output chunk, whatever the delivery's
size. gzip output is deterministic (no timestamp or name in the header), so a retried
delivery produces the same bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import Any

from services.common.layouts.compiler import CompiledLayout, transpose
from services.common.layouts.formats import Encoder, encoder_for, json_object
from services.common.layouts.model import OutputFormat

CHUNK_CHARS = 64 * 1024
BATCH_ROWS = 500
GZIP_LEVEL = 6

Row = Sequence[str]
ColumnBatch = Sequence[Sequence[str]]  # ROW_WIDTH columns of equal length


class _ByteSink:
    """UTF-8 encodes text and, when asked, gzip-compresses it incrementally."""

    def __init__(self, gzip: bool) -> None:
        # wbits 31 = gzip container; zlib writes mtime 0 and no file name.
        self._compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if gzip else None

    def feed(self, text: str) -> bytes:
        data = text.encode("utf-8")
        return self._compressor.compress(data) if self._compressor else data

    def finish(self) -> bytes:
        return self._compressor.flush() if self._compressor else b""


def _encoder(layout: CompiledLayout, fmt: OutputFormat | None) -> tuple[Encoder, OutputFormat]:
    chosen = fmt or layout.spec.format
    return encoder_for(chosen, layout.spec.formula_guard, layout.headers), chosen


async def render_columns(
    layout: CompiledLayout,
    batches: AsyncIterable[ColumnBatch],
    fmt: OutputFormat | None = None,
) -> AsyncGenerator[bytes, None]:
    """Render batches given column-wise (the fastest form) into byte chunks."""
    encoder, chosen = _encoder(layout, fmt)
    sink = _ByteSink(chosen.gzip)
    pending: list[str] = [encoder.start()]
    size = len(pending[0])
    async for columns in batches:
        text = encoder.encode(layout.cell_columns(columns))
        pending.append(text)
        size += len(text)
        if size >= CHUNK_CHARS:
            chunk = sink.feed("".join(pending))
            pending, size = [], 0
            if chunk:
                yield chunk
    pending.append(encoder.end())
    chunk = sink.feed("".join(pending)) + sink.finish()
    if chunk:
        yield chunk


async def _columns_of(batches: AsyncIterable[Sequence[Row]]) -> AsyncIterator[ColumnBatch]:
    async for batch in batches:
        yield transpose(batch)


def render_batches(
    layout: CompiledLayout,
    batches: AsyncIterable[Sequence[Row]],
    fmt: OutputFormat | None = None,
) -> AsyncGenerator[bytes, None]:
    """Render batches of rows into byte chunks."""
    return render_columns(layout, _columns_of(batches), fmt)


async def batched(rows: AsyncIterable[Row], size: int = BATCH_ROWS) -> AsyncIterator[list[Row]]:
    """Group an async iterator of rows into lists of at most `size`."""
    batch: list[Row] = []
    async for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def render_rows(
    layout: CompiledLayout, rows: AsyncIterable[Row], fmt: OutputFormat | None = None
) -> AsyncGenerator[bytes, None]:
    """Render an async iterator of single rows into byte chunks."""
    return render_batches(layout, batched(rows), fmt)


_BUDGET_STEP = 10  # rows rendered between budget checks


class OutputTooLargeError(ValueError):
    """Rendering would exceed the caller's budget of cell characters."""


def render_table(
    layout: CompiledLayout,
    rows: Iterable[Row],
    fmt: OutputFormat | None = None,
    *,
    max_chars: int | None = None,
) -> tuple[bytes, list[tuple[str, ...]]]:
    """Render a small set of rows at once, returning the output and the cells as a table.

    With `max_chars`, rows are rendered a few at a time and OutputTooLargeError is raised as
    soon as the cells hold more characters than that (wide layouts of long values).
    """
    encoder, chosen = _encoder(layout, fmt)
    materialised = list(rows)
    if max_chars is None or not materialised:
        columns = layout.cell_columns(transpose(materialised))
    else:
        gathered: list[list[Any]] = [[] for _ in layout.headers]
        used = 0
        for start in range(0, len(materialised), _BUDGET_STEP):
            part = layout.cell_columns(transpose(materialised[start : start + _BUDGET_STEP]))
            used += sum(sum(map(len, column)) for column in part)
            if used > max_chars:
                raise OutputTooLargeError(
                    f"the cells would hold more than {max_chars:,} characters"
                )
            for column, more in zip(gathered, part, strict=True):
                column.extend(more)
        columns = list(gathered)
    sink = _ByteSink(chosen.gzip)
    text = encoder.start() + encoder.encode(columns) + encoder.end()
    return sink.feed(text) + sink.finish(), list(zip(*columns, strict=True))


def render_bytes(
    layout: CompiledLayout, rows: Iterable[Row], fmt: OutputFormat | None = None
) -> bytes:
    """Render a small, in-memory set of rows at once (previews, tests, API bodies)."""
    encoder, chosen = _encoder(layout, fmt)
    sink = _ByteSink(chosen.gzip)
    text = encoder.start() + encoder.encode(layout.cell_columns(transpose(rows))) + encoder.end()
    return sink.feed(text) + sink.finish()


def render_objects(
    layout: CompiledLayout, rows: Iterable[Row], *, empty_as_null: bool = False
) -> list[dict[str, str | None]]:
    """Each row as an object keyed by header: the body of a real-time API call."""
    headers = layout.headers
    return [
        json_object(headers, cells, empty_as_null=empty_as_null) for cells in layout.cells(rows)
    ]

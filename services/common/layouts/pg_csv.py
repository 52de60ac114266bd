"""CSV rendered by PostgreSQL for layouts of standard and context fields: the bytes the
Python renderer writes, at close to the speed of a plain COPY.

The query wraps the row reader's own `referral_rows_in_range`, so the selection, the order
and every field's text are the ones the Python path renders. Around it PostgreSQL builds
each cell as the compiler would (ISO timestamps, campaign and partner names, delivery
constants) and applies the formula guard; COPY's CSV mode then quotes exactly as
CsvEncoder does (a cell holding the delimiter, a quote, CR or LF, quotes doubled; or every
cell). Python adds only what COPY cannot: the BOM and header (CsvEncoder.start(), one source
of truth), CRLF record ends, and one exception COPY makes (see CopyCsvFinisher).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from services.common.db import driver_errors
from services.common.layouts.catalog import ROW_FIELDS, TIMESTAMP_FIELDS
from services.common.layouts.compiler import (
    DELIVERY_FIELDS,
    RenderContext,
    compile_layout,
    delivery_value,
)
from services.common.layouts.formats import FORMULA_TRIGGERS, PLAIN_NUMBER, CsvEncoder
from services.common.layouts.model import (
    CsvFormat,
    CustomFieldSpec,
    FormulaGuard,
    LayoutSpec,
    OutputFormat,
    Quoting,
)
from services.common.referral_rows import QUERIES, TimeFrame, copy_blocks, range_arguments

# Cells are built from these fragments only, keyed by catalog names (never a user's text);
# `{x}` is a cell's text. `s` is the row query's output (each field as text, NULL as in
# the table) and `k` the render context's values ($14-$18).
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
_ROW_TEXT = "coalesce(s.{name}::text, '')"  # the row reader's text, NULL as ''
# A timestamp's cell, as the compiler's _iso_column: s[:10] + 'T' + s[11:19] + 'Z' when
# len(s) >= 19, else s; {short} is s guarded. PostgreSQL writes timestamps in ASCII, so
# octet_length is len (and cheaper). The long form needs no guard: DateStyle ISO puts the
# year first, in at least four digits, so it starts with a digit; only 'infinity' and
# '-infinity' are shorter. (Guarding it would compute it twice: a sixth of the render.)
_ISO_CELL = (
    "CASE WHEN octet_length({t}) >= 19 THEN left({t}, 10) || 'T' || substr({t}, 12, 8) || 'Z' "
    "ELSE {short} END"
)
_CONTEXT_TEXT = {
    "campaign_name": "coalesce(k.campaign_names ->> {campaign_id}, '')",
    "partner_name": "coalesce(k.partner_names ->> {partner_id}, {partner_id})",
    "delivery_id": "k.delivery_id",
    "delivery_time": "k.delivery_time",
}
_CONTEXT = (
    "(SELECT $14::text::jsonb AS campaign_names, $15::text::jsonb AS partner_names, "
    "$16::text AS delivery_id, $17::text AS delivery_time, $18::text AS plain_number) k"
)
# Triggers that may start a plain number (+ and -): ALLOW_NUMBERS tests only those.
_NUMBER_TRIGGERS = frozenset(t for t in FORMULA_TRIGGERS if PLAIN_NUMBER.fullmatch(t + "1"))
_PLAIN_NUMBER_SQL = f"^(?:{PLAIN_NUMBER.pattern})$"  # PostgreSQL's ARE reads it the same way
CHUNK_BYTES = 256 * 1024


def _cell_texts() -> dict[str, str]:
    """SQL for the text of every field PostgreSQL can render, by field name."""
    row = {}
    for name in ROW_FIELDS:
        if not _IDENTIFIER.fullmatch(name):  # catalog names are column names
            raise ValueError(f"not a column name: {name!r}")
        row[name] = _ROW_TEXT.format(name=name)
    texts = dict(row)
    for name, fragment in _CONTEXT_TEXT.items():
        texts[name] = fragment.format(campaign_id=row["campaign_id"], partner_id=row["partner_id"])
    return texts


_CELL_TEXT = _cell_texts()
if set(DELIVERY_FIELDS) - _CELL_TEXT.keys():
    raise ValueError("a delivery field has no SQL text")


def _cell(name: str, guard: FormulaGuard, empty: str) -> str:
    """SQL for the cell of field `name`: its text, guarded, '' written as `empty`."""
    text = _CELL_TEXT[name]
    if name in TIMESTAMP_FIELDS:
        return _ISO_CELL.format(t=text, short=_guarded(text, guard, empty))
    return _guarded(text, guard, empty)


def _guarded(text: str, guard: FormulaGuard, empty: str) -> str:
    """SQL for a cell: `text` with the formula guard applied, '' written as `empty`."""
    if guard is FormulaGuard.OFF:
        return text if empty == "''" else f"nullif({text}, '')"
    branches = [f"WHEN 0 THEN {empty}"]  # ascii('') is 0; no text holds a NUL
    for trigger in sorted(FORMULA_TRIGGERS):
        marked = f"'''' || {text}"
        if guard is FormulaGuard.ALLOW_NUMBERS and trigger in _NUMBER_TRIGGERS:
            marked = f"CASE WHEN {text} ~ k.plain_number THEN {text} ELSE {marked} END"
        branches.append(f"WHEN {ord(trigger)} THEN {marked}")
    return f"CASE ascii({text}) {' '.join(branches)} ELSE {text} END"


@dataclass(frozen=True, slots=True)
class PgCsvPlan:
    """A layout PostgreSQL renders: the query, its COPY options and the text before it."""

    query: str  # $1-$13 as referral_rows_in_range, $14-$18 the context (see _CONTEXT)
    fields: tuple[str, ...]  # the row fields the query reads ($5)
    csv: CsvFormat
    columns: int
    head: bytes  # BOM and header


def _copyable(fmt: CsvFormat) -> bool:
    """Whether COPY can write this dialect: a one-byte delimiter other than NUL, CR, LF or
    the quote, and CRLF or LF."""
    delimiter = fmt.delimiter
    return (
        len(delimiter) == 1
        and "\x01" <= delimiter <= "\x7f"
        and delimiter not in '"\r\n'
        and fmt.line_ending in ("\r\n", "\n")
    )


def pg_csv_plan(
    spec: LayoutSpec,
    fmt: OutputFormat | None,
    custom_fields: Mapping[str, CustomFieldSpec],
) -> PgCsvPlan | None:
    """How PostgreSQL renders `spec` in `fmt` (None: the layout's own), or None when it
    cannot do so byte for byte: a custom or extra.<key> field, JSON, gzip, a delimiter
    COPY refuses (not ASCII, NUL, CR, LF, the quote), a layout without columns."""
    chosen = fmt or spec.format
    body = chosen.body
    if not isinstance(body, CsvFormat) or chosen.gzip or not _copyable(body):
        return None
    names = [column.field for column in spec.columns]
    # A standard or context name wins over a custom field of that name, as in the compiler.
    if not names or any(name not in _CELL_TEXT for name in names):
        return None
    fields = compile_layout(spec, custom_fields).row_fields
    # COPY writes NULL unquoted and '' as "": '' becomes NULL where CsvEncoder leaves an
    # empty cell bare, and stays '' where it quotes it (a lone column, or quoting ALL).
    bare = body.quoting is Quoting.MINIMAL and len(names) > 1
    empty = "NULL" if bare else "''"
    cells = ", ".join(_cell(name, spec.formula_guard, empty) for name in names)
    # Only fixed fragments (above) and the named row query: no user text reaches the SQL.
    # (The row query keeps its comments: the line break ends any last one before the `)`.)
    rows = QUERIES["referral_rows_in_range"]
    query = f"SELECT {cells}\n  FROM ({rows}\n) s,\n       {_CONTEXT}\n ORDER BY s.seq"  # noqa: S608
    headers = [column.header for column in spec.columns]
    head = CsvEncoder(body, spec.formula_guard, headers).start().encode("utf-8")
    return PgCsvPlan(query, fields, body, len(names), head)


_LONE_BACKSLASH_DOT = re.compile(rb'(?:^|(?<=\n))"\\\."(?=\n)')


class CopyCsvFinisher:
    r"""Turns the CSV that COPY writes into the layout's bytes, block by block.

    COPY ends every record with LF. For CRLF, each LF outside a quoted cell becomes CRLF (an
    LF inside one is data); quote parity tells them apart, since a quoted cell is quoted as
    a whole and its own quotes are doubled, so every quote steps in or out. And in a
    one-column file COPY quotes a cell that is exactly `\.` (lest it read as its
    end-of-data marker) where CsvEncoder does not; such records are unquoted again.
    """

    def __init__(self, fmt: CsvFormat, columns: int) -> None:
        self._crlf = fmt.line_ending == "\r\n"
        self._single = columns == 1 and fmt.quoting is Quoting.MINIMAL
        self._quoted = False  # the bytes so far end inside a quoted cell
        self._tail = b""  # one column: the bytes after the last LF, held back
        self.records = 0  # the records finished so far (LFs outside quoted cells)

    def feed(self, data: bytes) -> bytes:
        """The finished bytes of the next block of COPY output (possibly none yet)."""
        if self._single:
            # Whole lines only, so that a record `"\."` is never cut in two; a block then
            # starts after an LF, and inside a quoted cell an LF is never followed by `"\`.
            data = self._tail + data
            cut = data.rfind(b"\n") + 1
            data, self._tail = data[:cut], data[cut:]
            if b'"\\."' in data:
                data = _LONE_BACKSLASH_DOT.sub(rb"\\.", data)
        if b'"' not in data:
            if self._quoted:
                return data
            self.records += data.count(b"\n")
            return data.replace(b"\n", b"\r\n") if self._crlf else data
        parts = data.split(b'"')
        outside = 1 if self._quoted else 0
        self.records += sum(part.count(b"\n") for part in parts[outside::2])
        self._quoted ^= len(parts) % 2 == 0  # an odd number of quotes
        if not self._crlf:
            return data
        parts[outside::2] = [part.replace(b"\n", b"\r\n") for part in parts[outside::2]]
        return b'"'.join(parts)

    def close(self) -> None:
        """Check that the output ended with a whole record."""
        if self._tail or self._quoted:
            raise ValueError("COPY output ended inside a record")


def _context_arguments(context: RenderContext) -> tuple[str, str, str, str, str]:
    return (
        json.dumps(dict(context.campaign_names), ensure_ascii=False),
        json.dumps(dict(context.partner_names), ensure_ascii=False),
        delivery_value(context, "delivery_id"),
        delivery_value(context, "delivery_time"),
        _PLAIN_NUMBER_SQL,
    )


async def pg_csv_chunks(
    pool: asyncpg.Pool,
    plan: PgCsvPlan,
    context: RenderContext,
    account_id: UUID,
    after_seq: int,
    through_seq: int,
    campaign_ids: Sequence[UUID] | None,
    frame: TimeFrame | None,
    finisher: CopyCsvFinisher | None = None,
    suppressions: UUID | None = None,
) -> AsyncGenerator[bytes, None]:
    """The CSV of the account's referrals with seq in (after_seq, through_seq] (of
    `campaign_ids`, in `frame`, without those delivery `suppressions` held back, when
    given) in chunks of CHUNK_BYTES (the last shorter):
    exactly the bytes the Python renderer writes for the same layout, format, context and
    selection. Memory stays bounded by a few chunks.

    Closing the generator early cancels the COPY and leaves the connection usable. A
    `finisher` passed in (`CopyCsvFinisher(plan.csv, plan.columns)`) counts the records.
    """
    csv = plan.csv
    arguments = (
        *range_arguments(
            account_id, after_seq, through_seq, campaign_ids, plan.fields, frame, suppressions
        ),
        *_context_arguments(context),
    )
    finisher = finisher or CopyCsvFinisher(csv, plan.columns)
    # asyncpg hands over what it has read, at times far more than a chunk: cut evenly.
    pending = bytearray(plan.head)
    with driver_errors("render CSV in PostgreSQL"):
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute(QUERIES["render_session"])
            await conn.execute(QUERIES["quick_start"])
            blocks = copy_blocks(
                conn,
                plan.query,
                *arguments,
                block_bytes=CHUNK_BYTES,
                format="csv",
                delimiter=csv.delimiter,
                force_quote=True if csv.quoting is Quoting.ALL else None,
            )
            async with contextlib.aclosing(blocks):
                async for block in blocks:
                    pending += finisher.feed(block)
                    while len(pending) >= CHUNK_BYTES:
                        yield bytes(pending[:CHUNK_BYTES])
                        del pending[:CHUNK_BYTES]
    finisher.close()
    if pending:
        yield bytes(pending)

"""Output formats: RFC 4180 CSV (with the formula guard), JSON Lines and JSON.

Encoders work on a batch's cell columns, so that whole columns are checked for quoting
and formula triggers at C speed and only the columns that need it are touched cell by cell.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Protocol

from services.common.layouts.model import (
    CsvFormat,
    FormulaGuard,
    JsonArrayFormat,
    JsonLinesFormat,
    OutputFormat,
    Quoting,
)

BYTE_ORDER_MARK = "\ufeff"
FORMULA_TRIGGERS = frozenset("=+-@\t\r")
# A plain number stays unguarded under ALLOW_NUMBERS. ASCII digits only: Python's \d also
# matches other scripts' digits, which spreadsheets read as text, so "-٣" could still be a
# formula. pg_csv.py hands the same pattern to PostgreSQL.
PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SEPARATOR = "\x1f"
# A cell (each one preceded by the separator) starting with a formula trigger.
_TRIGGER_AT_START = re.compile("\x1f[=+\\-@\t\r]")

CellColumns = Sequence[Sequence[str]]


class Encoder(Protocol):
    """Turns cell columns into text: a start, any number of batches, an end."""

    def start(self) -> str:
        """Text before the first row (BOM, header, opening bracket)."""
        ...

    def encode(self, columns: CellColumns) -> str:
        """Text for a batch, given as the layout's columns of cells."""
        ...

    def end(self) -> str:
        """Text after the last row."""
        ...


def neutralise_formula(cell: str, guard: FormulaGuard) -> str:
    """The cell with a leading ' when a spreadsheet would run it as a formula (OWASP)."""
    if guard is FormulaGuard.OFF or not cell or cell[0] not in FORMULA_TRIGGERS:
        return cell
    if guard is FormulaGuard.ALLOW_NUMBERS and PLAIN_NUMBER.fullmatch(cell):
        return cell
    return "'" + cell


class CsvEncoder:
    """RFC 4180 CSV: a cell holding the delimiter, a quote, CR or LF is quoted (quotes
    doubled), whatever the line ending; with Quoting.ALL every cell is quoted."""

    def __init__(self, fmt: CsvFormat, guard: FormulaGuard, headers: Sequence[str]) -> None:
        self._fmt = fmt
        self._guard = guard
        self._headers = tuple(headers)
        specials = "".join(sorted({fmt.delimiter, '"', "\r", "\n"}))
        self._specials = tuple(specials)
        self._needs_quotes = re.compile("[" + re.escape(specials) + "]")
        self._quote_all = fmt.quoting is Quoting.ALL

    def start(self) -> str:
        """BOM (when asked for) and the header line (unless turned off)."""
        head = BYTE_ORDER_MARK if self._fmt.byte_order_mark else ""
        if self._fmt.header:
            head += self.encode([[h] for h in self._headers])
        return head

    def _prepared(self, column: Sequence[str]) -> Sequence[str]:
        joined = _SEPARATOR.join(column)
        guard = self._guard
        if guard is not FormulaGuard.OFF and _TRIGGER_AT_START.search(_SEPARATOR + joined):
            if guard is FormulaGuard.STRICT:
                triggers = FORMULA_TRIGGERS
                column = ["'" + c if c[:1] in triggers else c for c in column]
            else:
                column = [neutralise_formula(c, guard) for c in column]
        if self._quote_all:
            if '"' in joined:
                return [c.replace('"', '""') for c in column]
            return column
        if any(ch in joined for ch in self._specials):
            needs = self._needs_quotes.search
            return ['"' + c.replace('"', '""') + '"' if needs(c) else c for c in column]
        return column

    def encode(self, columns: CellColumns) -> str:
        """CSV lines for the batch."""
        if not columns or not columns[0]:
            return ""
        prepared = [self._prepared(c) for c in columns]
        end, delimiter = self._fmt.line_ending, self._fmt.delimiter
        if self._quote_all:
            inner = '"' + delimiter + '"'
            lines = ['"' + inner.join(row) + '"' for row in zip(*prepared, strict=True)]
            return end.join(lines) + end
        if len(prepared) == 1:  # a lone empty cell would be an empty line: quote it
            return end.join(c or '""' for c in prepared[0]) + end
        return end.join(map(delimiter.join, zip(*prepared, strict=True))) + end

    def end(self) -> str:
        """Nothing: CSV has no trailer."""
        return ""


def json_object(
    headers: Sequence[str], cells: Sequence[str], *, empty_as_null: bool = False
) -> dict[str, str | None]:
    """One row as a JSON-ready object keyed by header (for API bodies)."""
    if empty_as_null:
        return {h: (c or None) for h, c in zip(headers, cells, strict=True)}
    return dict(zip(headers, cells, strict=True))


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class JsonLinesEncoder:
    """One JSON object per line, LF-terminated, keys are the headers."""

    def __init__(self, fmt: JsonLinesFormat, headers: Sequence[str]) -> None:
        self._headers = tuple(headers)
        self._null = fmt.empty_as_null

    def start(self) -> str:
        """Nothing before the first line."""
        return ""

    def objects(self, columns: CellColumns) -> list[str]:
        """Each row as JSON text."""
        headers, null, dump = self._headers, self._null, _JSON.encode
        return [
            dump(json_object(headers, row, empty_as_null=null))
            for row in zip(*columns, strict=True)
        ]

    def encode(self, columns: CellColumns) -> str:
        """One line per row."""
        objects = self.objects(columns)
        return "\n".join(objects) + "\n" if objects else ""

    def end(self) -> str:
        """Nothing after the last line."""
        return ""


class JsonArrayEncoder:
    """A JSON array of objects, one per line, streamed."""

    def __init__(self, fmt: JsonArrayFormat, headers: Sequence[str]) -> None:
        self._lines = JsonLinesEncoder(JsonLinesFormat(fmt.empty_as_null), headers)
        self._first = True

    def start(self) -> str:
        """The opening bracket."""
        return "["

    def encode(self, columns: CellColumns) -> str:
        """Objects separated by commas."""
        objects = self._lines.objects(columns)
        if not objects:
            return ""
        lead = "\n" if self._first else ",\n"
        self._first = False
        return lead + ",\n".join(objects)

    def end(self) -> str:
        """The closing bracket."""
        return "]\n" if self._first else "\n]\n"


def encoder_for(fmt: OutputFormat, guard: FormulaGuard, headers: Sequence[str]) -> Encoder:
    """The encoder for an output format."""
    body = fmt.body
    if isinstance(body, CsvFormat):
        return CsvEncoder(body, guard, headers)
    if isinstance(body, JsonLinesFormat):
        return JsonLinesEncoder(body, headers)
    return JsonArrayEncoder(body, headers)


def media_type(fmt: OutputFormat) -> str:
    """The MIME type of the (uncompressed) output."""
    if isinstance(fmt.body, CsvFormat):
        return "text/csv; charset=utf-8"
    if isinstance(fmt.body, JsonLinesFormat):
        return "application/x-ndjson"
    return "application/json"


def file_extension(fmt: OutputFormat) -> str:
    """The usual file name ending, e.g. '.csv.gz'."""
    if isinstance(fmt.body, CsvFormat):
        base = ".csv"
    elif isinstance(fmt.body, JsonLinesFormat):
        base = ".jsonl"
    else:
        base = ".json"
    return base + (".gz" if fmt.gzip else "")

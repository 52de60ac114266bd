"""Reading an uploaded audience file: bytes (maybe gzip) to lines, lines to hashes.

Pure logic, no server or driver: `Unpacker` turns body chunks into decompressed bytes
(counting them against a limit, so a gzip bomb stops at the limit), `LineSplitter` cuts
bytes into lines with universal newlines (\\n, \\r\\n, \\r) in constant memory, and
`LineReader` turns each line into a `Member` (the SHA-256 and/or MD5 of the normalised
email) or a `LineError` saying why not. Plain emails exist only inside `member_of`.
"""

from __future__ import annotations

import csv
import hashlib
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
INFLATE_STEP = 1 << 20
MAX_LINE_BYTES = 4096  # no email or hash line needs more
MAX_EMAIL_CHARS = 254  # RFC 5321's path limit, less the angle brackets
MAX_LOCAL_CHARS = 64
HEADER_NAMES = {
    "email": "email", "e-mail": "email", "email_address": "email",
    "sha256": "sha256", "email_sha256": "sha256", "md5": "md5", "email_md5": "md5",
}  # fmt: skip
_EOL = re.compile(rb"\r\n|\r|\n")
_HEX = re.compile(r"[0-9a-fA-F]+")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


class BodyTooLargeError(Exception):
    """The (decompressed) body passed the limit."""


class BadGzipError(Exception):
    """The body starts like gzip but is not valid gzip."""


@dataclass(frozen=True, slots=True)
class Member:
    """One person of an upload as stored: the hashes it brings (None: not given)."""

    sha256: bytes | None
    md5: bytes | None


@dataclass(frozen=True, slots=True)
class LineError:
    """Why a line was refused (1-based physical line number)."""

    line: int
    code: str  # EMPTY, NOT_AN_EMAIL, BAD_HASH, TOO_LONG, NOT_UTF8
    reason: str

    def document(self) -> dict[str, object]:
        """The error as the API shows it."""
        return {"line": self.line, "code": self.code, "reason": self.reason}


class Unpacker:
    """Body chunks to plain bytes: gunzips a body that is gzip (said by the caller, or
    seen by its magic bytes), counting what comes out against `limit`."""

    def __init__(self, limit: int, *, gzip: bool = False) -> None:
        self._limit = limit
        self._seen = 0
        self._gzip: bool | None = True if gzip else None  # None: not known yet
        self._head = b""
        self._inflate = zlib.decompressobj(wbits=31)

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        """The plain bytes this chunk gives (none until the first two bytes are known)."""
        if self._gzip is None:
            self._head += chunk
            if len(self._head) < len(GZIP_MAGIC):
                return
            self._gzip = self._head.startswith(GZIP_MAGIC)
            chunk, self._head = self._head, b""
        if not self._gzip:
            yield self._counted(chunk)
            return
        yield from self._gunzip(chunk)

    def finish(self) -> Iterator[bytes]:
        """What is left at the end of the body."""
        if self._gzip is None:
            if self._head:
                yield self._counted(self._head)
            return
        if self._gzip and not self._inflate.eof:
            raise BadGzipError("the body is not valid gzip (it ends early)")

    def _gunzip(self, chunk: bytes) -> Iterator[bytes]:
        full = False
        try:
            while chunk or full:
                if self._inflate.eof:  # another gzip member follows
                    self._inflate = zlib.decompressobj(wbits=31)
                # Bounded output per call: a bomb never inflates past 1 MiB at once.
                out = self._inflate.decompress(chunk, INFLATE_STEP)
                full = len(out) == INFLATE_STEP
                if out:
                    yield self._counted(out)
                inflate = self._inflate
                chunk = inflate.unused_data if inflate.eof else inflate.unconsumed_tail
        except zlib.error as exc:
            raise BadGzipError(f"the body is not valid gzip ({exc})") from exc

    def _counted(self, data: bytes) -> bytes:
        self._seen += len(data)
        if self._seen > self._limit:
            raise BodyTooLargeError(f"the body is over {self._limit} bytes uncompressed")
        return data


class LineSplitter:
    """Bytes to lines (without their ends), \\n, \\r\\n and \\r alike; a line longer
    than MAX_LINE_BYTES is dropped as it comes and given as None (so memory stays flat)."""

    def __init__(self) -> None:
        self._rest = b""
        self._overlong = False
        self._first = True

    def feed(self, data: bytes) -> Iterator[bytes | None]:
        """The lines completed by `data`."""
        buffer = self._rest + data
        if self._first and len(buffer) >= len(BOM):
            buffer = buffer.removeprefix(BOM)
            self._first = False
        # A \r at the very end may be the first half of \r\n: keep it for the next chunk.
        held = b"\r" if buffer.endswith(b"\r") else b""
        parts = _EOL.split(buffer[: len(buffer) - len(held)])
        self._rest = parts.pop() + held
        for part in parts:
            yield None if self._overlong or len(part) > MAX_LINE_BYTES else part
            self._overlong = False
        if len(self._rest) > MAX_LINE_BYTES:
            self._overlong, self._rest = True, b""

    def finish(self) -> Iterator[bytes | None]:
        """The last line, when the body does not end with a line end."""
        rest = self._rest.removeprefix(BOM) if self._first else self._rest
        rest = rest.removesuffix(b"\r")
        if self._overlong or len(rest) > MAX_LINE_BYTES:
            yield None
        elif rest:
            yield rest


def _cells(text: str, csv_body: bool) -> list[str]:
    if not csv_body:
        return [text]
    if '"' not in text:
        return text.split(",")
    return next(csv.reader([text]), [""])


def _hex_hash(value: str, kind: str) -> bytes | tuple[str, str]:
    """The hash as bytes, or the reason it is not one of `kind`."""
    size = 64 if kind == "sha256" else 32
    if len(value) != size:
        return ("BAD_HASH", f"a {kind} hash has {size} hex digits, this has {len(value)}")
    if not _HEX.fullmatch(value):
        return ("BAD_HASH", f"a {kind} hash has hex digits only")
    return bytes.fromhex(value)


def member_of(value: str, column: str) -> Member | tuple[str, str]:
    """The member one cell stands for, or (code, reason) it is refused for. `column` is
    'email', 'sha256', 'md5', or 'auto' (64 hex: SHA-256, 32 hex: MD5, else an email)."""
    value = value.strip()
    if not value:
        return ("EMPTY", "no value")
    if column == "auto" and _HEX.fullmatch(value) and len(value) in (32, 64):
        column = "sha256" if len(value) == 64 else "md5"
    if column in ("sha256", "md5"):
        found = _hex_hash(value, column)
        if isinstance(found, tuple):
            return found
        return Member(found, None) if column == "sha256" else Member(None, found)
    if len(value) > MAX_EMAIL_CHARS:
        return ("TOO_LONG", f"an email has at most {MAX_EMAIL_CHARS} characters")
    if not _EMAIL.fullmatch(value) or len(value.partition("@")[0]) > MAX_LOCAL_CHARS:
        if column == "auto" and _HEX.fullmatch(value):
            return ("BAD_HASH", f"{len(value)} hex digits (SHA-256 has 64, MD5 32)")
        return ("NOT_AN_EMAIL", "not an email address")
    plain = value.lower().encode()
    return Member(
        hashlib.sha256(plain).digest(), hashlib.md5(plain, usedforsecurity=False).digest()
    )


class LineReader:
    """Lines of one file to members: finds the column on the first line (a header
    naming email, sha256 or md5 — with `column` given, the one naming that kind; else the
    first column, read as `column`: by content when 'auto') and numbers lines."""

    def __init__(self, *, csv_body: bool, column: str = "auto") -> None:
        self._csv = csv_body
        self._column = column  # auto, email, sha256 or md5
        self._wanted = column  # a header must name this kind ("auto": any)
        self._index = 0
        self.number = 0  # physical lines read, the header included
        self.header = False
        self.failure: LineError | None = None  # a header without the wanted column

    def read(self, raw: bytes | None) -> Member | LineError | None:
        """The member of one line, its error, or None for the header."""
        self.number += 1
        if raw is None:
            return LineError(self.number, "TOO_LONG", f"a line has at most {MAX_LINE_BYTES} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return LineError(self.number, "NOT_UTF8", "the line is not UTF-8")
        if not text.strip():
            return LineError(self.number, "EMPTY", "the line is empty")
        cells = _cells(text, self._csv)
        if self.number == 1:
            names = [HEADER_NAMES.get(c.strip().strip('"').lower()) for c in cells]
            if any(names):
                self.header = True
                wanted = [i for i, n in enumerate(names) if n and self._wanted in ("auto", n)]
                if not wanted:
                    self.failure = LineError(
                        1, "NO_COLUMN", f"the header names no {self._wanted} column"
                    )
                    return self.failure
                self._index = wanted[0]
                self._column = names[self._index] or "auto"
                return None
        if self._index >= len(cells):
            return LineError(self.number, "EMPTY", f"no column {self._index + 1}")
        found = member_of(cells[self._index], self._column)
        return LineError(self.number, *found) if isinstance(found, tuple) else found

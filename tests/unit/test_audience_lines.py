"""Reading audience files without a server: line ends split across any chunk boundary,
gzip inflated in bounded steps and counted against the limit, cells to hashes."""

from __future__ import annotations

import gzip
import hashlib

import pytest

from services.common.audiences.lines import (
    MAX_LINE_BYTES,
    BadGzipError,
    BodyTooLargeError,
    LineError,
    LineReader,
    LineSplitter,
    Member,
    Unpacker,
    member_of,
)

BODY = b"\xef\xbb\xbfemail\r\nann@example.com\rbob@example.com\n\ncat@example.com\r\n" + (
    b"x" * (MAX_LINE_BYTES + 10) + b"\nlast@example.com"
)
LINES = [b"email", b"ann@example.com", b"bob@example.com", b"", b"cat@example.com", None,
         b"last@example.com"]  # fmt: skip


def _split(body: bytes, step: int) -> list[bytes | None]:
    splitter = LineSplitter()
    found = [line for i in range(0, len(body), step) for line in splitter.feed(body[i : i + step])]
    return found + list(splitter.finish())


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 4096, 1 << 20])
def test_lines_are_the_same_whatever_the_chunks(step: int) -> None:
    assert _split(BODY, step) == LINES


def test_a_trailing_cr_ends_the_last_line() -> None:
    assert _split(b"a@b.co\r", 1) == [b"a@b.co"]


@pytest.mark.parametrize("step", [1, 5, 1 << 16])
def test_gzip_members_are_inflated_in_order(step: int) -> None:
    data = gzip.compress(b"ann@example.com\n") + gzip.compress(b"bob@example.com\n")
    unpacker = Unpacker(1 << 20)
    out = b"".join(x for i in range(0, len(data), step) for x in unpacker.feed(data[i : i + step]))
    assert out + b"".join(unpacker.finish()) == b"ann@example.com\nbob@example.com\n"


def test_plain_bytes_pass_through_and_are_counted() -> None:
    unpacker = Unpacker(10)
    assert b"".join(unpacker.feed(b"a")) + b"".join(unpacker.finish()) == b"a"
    with pytest.raises(BodyTooLargeError):
        list(Unpacker(10).feed(b"x" * 11))


def test_a_gzip_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))
    with pytest.raises(BodyTooLargeError):
        list(Unpacker(4 << 20).feed(bomb))


def test_broken_or_short_gzip_is_refused() -> None:
    with pytest.raises(BadGzipError):
        list(Unpacker(1 << 20).feed(b"\x1f\x8bnot gzip at all"))
    unpacker = Unpacker(1 << 20)
    list(unpacker.feed(gzip.compress(b"ann@example.com\n")[:-8]))
    with pytest.raises(BadGzipError):
        list(unpacker.finish())


def test_emails_are_normalised_then_hashed_with_both_kinds() -> None:
    found = member_of("  Ann@Example.COM ", "auto")
    plain = b"ann@example.com"
    assert found == Member(hashlib.sha256(plain).digest(), hashlib.md5(plain).digest())


@pytest.mark.parametrize(
    ("cell", "column", "code"),
    [
        ("", "auto", "EMPTY"), ("ann", "auto", "NOT_AN_EMAIL"), ("a@b", "auto", "NOT_AN_EMAIL"),
        ("a@@b.co", "auto", "NOT_AN_EMAIL"), ("a" * 40, "auto", "BAD_HASH"),
        ("a" * 32, "sha256", "BAD_HASH"), ("z" * 64, "sha256", "BAD_HASH"),
        ("a" * 65 + "@b.co", "email", "NOT_AN_EMAIL"),
        ("a@" + "b" * 260 + ".co", "auto", "TOO_LONG"),
    ],
)  # fmt: skip
def test_bad_cells_say_why(cell: str, column: str, code: str) -> None:
    found = member_of(cell, column)
    assert isinstance(found, tuple)
    assert found[0] == code


def test_a_header_names_the_column_and_lines_are_numbered() -> None:
    reader = LineReader(csv_body=True)
    assert reader.read(b'id,"Email"') is None
    found = reader.read(b"7,ann@example.com")
    assert isinstance(found, Member)
    assert reader.read(b"8") == LineError(3, "EMPTY", "no column 2")
    assert reader.header


def test_without_a_header_the_first_column_is_read_by_its_content() -> None:
    reader = LineReader(csv_body=True)
    first = reader.read(b"a" * 32 + b",ignored")
    assert first == Member(None, bytes.fromhex("a" * 32))
    assert not reader.header

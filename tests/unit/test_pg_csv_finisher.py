"""CopyCsvFinisher: CRLF record ends by quote parity and the lone `\\.`, however COPY's
output is cut into blocks."""

from __future__ import annotations

import itertools

import pytest

from services.common.layouts.model import CsvFormat, Quoting
from services.common.layouts.pg_csv import CopyCsvFinisher

# As COPY writes it: LF after each record; quoted cells may hold LF, CR and doubled quotes.
SEVERAL = b'1,"a\nb",c\n2,"say ""hi""\n",\n3,"\\.",x\n4,,"\r\n"\n'
SEVERAL_CRLF = b'1,"a\nb",c\r\n2,"say ""hi""\n",\r\n3,"\\.",x\r\n4,,"\r\n"\r\n'
LONE = b'"\\."\n\\\\.\n"\\."\n"a\n""\\."""\n"\\.\n"\n"\\."\n'
LONE_LF = b'\\.\n\\\\.\n\\.\n"a\n""\\."""\n"\\.\n"\n\\.\n'


def _finished(data: bytes, cuts: tuple[int, ...], fmt: CsvFormat, columns: int) -> bytes:
    finisher = CopyCsvFinisher(fmt, columns)
    bounds = (0, *cuts, len(data))
    out = b"".join(finisher.feed(data[a:b]) for a, b in itertools.pairwise(bounds))
    finisher.close()
    return out


@pytest.mark.parametrize("cut", range(len(SEVERAL) + 1))
def test_crlf_record_ends_whatever_the_block_boundaries(cut: int) -> None:
    assert _finished(SEVERAL, (cut,), CsvFormat(), 3) == SEVERAL_CRLF
    assert _finished(SEVERAL, (cut,), CsvFormat(line_ending="\n"), 3) == SEVERAL


@pytest.mark.parametrize("cut", range(len(LONE) + 1))
def test_a_lone_backslash_dot_is_unquoted_in_one_column(cut: int) -> None:
    assert _finished(LONE, (cut,), CsvFormat(line_ending="\n"), 1) == LONE_LF
    crlf = _finished(LONE, (cut, min(cut + 3, len(LONE))), CsvFormat(), 1)
    assert crlf == b'\\.\r\n\\\\.\r\n\\.\r\n"a\n""\\."""\r\n"\\.\n"\r\n\\.\r\n'
    # Quoting every cell, CsvEncoder quotes it too.
    assert _finished(LONE, (cut,), CsvFormat(quoting=Quoting.ALL, line_ending="\n"), 1) == LONE


def test_output_cut_inside_a_record_is_an_error() -> None:
    finisher = CopyCsvFinisher(CsvFormat(), 2)
    finisher.feed(b'1,"open\n')
    with pytest.raises(ValueError, match="inside a record"):
        finisher.close()


@pytest.mark.parametrize("cut", range(len(SEVERAL) + 1))
@pytest.mark.parametrize("ending", ["\r\n", "\n"])
def test_records_are_counted_whatever_the_block_boundaries(cut: int, ending: str) -> None:
    for data, columns, records in ((SEVERAL, 3, 4), (LONE, 1, 6)):
        finisher = CopyCsvFinisher(CsvFormat(line_ending=ending), columns)
        finisher.feed(data[:cut])
        finisher.feed(data[cut:])
        finisher.close()
        assert finisher.records == records

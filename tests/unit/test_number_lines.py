"""Seq numbering of COPY lines: the Python version writes the expected text, C the same."""

from __future__ import annotations

import pytest

from services.ingest import native, store

SEQS = [1, 9, 10, 2**62, -5, 0]
LINES = [b"a\tb\n", b"\n", b"x\\ny\n", b"big\n", b"neg\n", b""]
NUMBERED = b"1\ta\tb\n9\t\n10\tx\\ny\n4611686018427387904\tbig\n-5\tneg\n0\t"


def test_python_numbering_puts_each_seq_and_a_tab_before_its_line() -> None:
    assert store._number_lines(SEQS, LINES) == NUMBERED


@pytest.mark.skipif(native._scan is None, reason="the extension is not built or not used")
def test_compiled_numbering_writes_the_same_bytes_and_refuses_a_length_mismatch() -> None:
    assert native._scan is not None
    assert native._scan.number_lines(SEQS, LINES) == NUMBERED
    with pytest.raises(ValueError, match="one seq per line"):
        native._scan.number_lines([1], [])

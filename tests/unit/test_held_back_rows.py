"""The reader leaves out the rows the audiences held back (their seq negated) and reports
their seqs, whatever is left of a batch."""

from __future__ import annotations

import pytest

from services.common.referral_rows import ColumnBatch, _without_held_back


@pytest.mark.parametrize(
    ("seqs", "kept", "held"),
    [
        (["1", "2", "3"], ["1", "2", "3"], []),
        (["-1", "2", "-3"], ["2"], [1, 3]),
        (["-1", "-2"], [], [1, 2]),
        (["1", "-2", "3", "-40"], ["1", "3"], [2, 40]),
    ],
)
def test_held_back_rows_are_left_out_and_reported(
    seqs: list[str], kept: list[str], held: list[int]
) -> None:
    batch: ColumnBatch = [seqs, [f"value of {s}" for s in seqs]]
    reported: list[int] = [7]
    out = _without_held_back(batch, reported)
    assert [list(column) for column in out] == [kept, [f"value of {s}" for s in kept]]
    assert reported == [7, *held]

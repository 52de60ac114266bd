"""Parts: a range split into files of at most N rows, in order, nothing lost or repeated."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from services.delivery.parts import RowCount, counted, nth_part, parts


async def _batches(sizes: Sequence[int]) -> AsyncIterator[Sequence[Sequence[str]]]:
    n = 0
    for size in sizes:
        yield [[str(n + i) for i in range(size)], ["x"] * size]
        n += size


async def _split(sizes: Sequence[int], max_rows: int) -> list[list[str]]:
    found = []
    async for part in parts(_batches(sizes), max_rows):
        rows: list[str] = []
        async for batch in part:
            rows += batch[0]
        found.append(rows)
    return found


@pytest.mark.parametrize(
    ("sizes", "max_rows", "expected"),
    [
        ([], 0, [0]),
        ([], 3, [0]),
        ([5], 0, [5]),
        ([2, 2, 2], 3, [3, 3]),
        ([7], 3, [3, 3, 1]),
        ([3, 3], 3, [3, 3]),
        ([1, 0, 4], 2, [2, 2, 1]),
    ],
)
async def test_every_row_lands_in_exactly_one_part_in_order(
    sizes: Sequence[int], max_rows: int, expected: list[int]
) -> None:
    split = await _split(sizes, max_rows)
    assert [len(p) for p in split] == expected
    assert [r for p in split for r in p] == [str(i) for i in range(sum(sizes))]


async def test_counted_counts_what_passes() -> None:
    count = RowCount()
    async for _ in counted(_batches([2, 3]), count):
        pass
    assert count.rows == 5


@pytest.mark.parametrize(("sizes", "max_rows"), [([7], 3), ([1, 0, 4, 2], 2), ([5], 0), ([], 2)])
async def test_nth_part_holds_the_rows_the_same_cut_put_in_that_part(
    sizes: Sequence[int], max_rows: int
) -> None:
    split = await _split(sizes, max_rows)
    for index, expected in enumerate([*split, []]):  # past the last part: no row
        rows: list[str] = []
        async for batch in nth_part(_batches(sizes), max_rows, index):
            rows += batch[0]
        assert rows == expected, index

"""Paging, once for every List call: one row more than the page shows, tokens, sizes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from services.common.errors import InvalidArgumentError
from services.common.paging import (
    DEFAULT_PAGE_SIZE,
    decode_token,
    encode_token,
    fetch_page,
    page_size,
)


def _source(items: list[str]) -> tuple[list[int], Callable[[int], Awaitable[list[str]]]]:
    asked: list[int] = []

    async def fetch(limit: int) -> list[str]:
        asked.append(limit)
        return items[:limit]

    return asked, fetch


async def test_a_full_page_with_more_behind_it_has_a_token_for_its_last_item() -> None:
    asked, fetch = _source(["a", "b", "c", "d"])

    page = await fetch_page(fetch, 3, str.upper)

    assert asked == [4]  # one more than the page: the peek that says there is more
    assert page.items == ["a", "b", "c"]
    assert decode_token(page.next_token) == "C"


async def test_the_last_page_has_no_token() -> None:
    _, fetch = _source(["a", "b", "c"])

    page = await fetch_page(fetch, 3, str.upper)

    assert (page.items, page.next_token) == (["a", "b", "c"], "")


def test_tokens_round_trip_any_text_and_refuse_forgeries() -> None:
    assert decode_token(encode_token("2026-01-01T00:00:00+00:00|x ü")) == (
        "2026-01-01T00:00:00+00:00|x ü"
    )
    assert decode_token("") == ""
    with pytest.raises(InvalidArgumentError, match="not a token"):
        decode_token("not-a-token")


@pytest.mark.parametrize(("requested", "size"), [(0, DEFAULT_PAGE_SIZE), (1, 1), (1000, 1000)])
def test_page_sizes(requested: int, size: int) -> None:
    assert page_size(requested) == size


@pytest.mark.parametrize("requested", [-1, 1001])
def test_page_sizes_out_of_range_are_refused(requested: int) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        page_size(requested)
    assert [(p.field, p.code) for p in caught.value.problems] == [("page_size", "OUT_OF_RANGE")]

"""Paging for every List call: the page size, one extra row to know there is more, tokens."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from services.common.errors import FieldProblem, InvalidArgumentError

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class Page(Generic[Item]):
    """One page of items and the token for the next ('' on the last page)."""

    items: list[Item]
    next_token: str


def page_size(requested: int) -> int:
    """The page size to use: the default when 0, refused when negative or too large."""
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    if not 0 < requested <= MAX_PAGE_SIZE:
        problem = FieldProblem("page_size", "OUT_OF_RANGE", f"must be 1-{MAX_PAGE_SIZE}")
        raise InvalidArgumentError(f"page_size must be 1-{MAX_PAGE_SIZE}", [problem])
    return requested


def encode_token(position: str) -> str:
    """An opaque token for the position after the one written as `position`."""
    return base64.urlsafe_b64encode(position.encode()).decode()


def invalid_token() -> InvalidArgumentError:
    """The error for a token this API did not issue."""
    problem = FieldProblem("page_token", "INVALID_FORMAT", "is not a token this API issued")
    return InvalidArgumentError(problem.message, [problem])


def decode_token(token: str) -> str:
    """The position a token stands for ('' for no token), or InvalidArgumentError."""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode() if token else ""
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise invalid_token() from exc


async def fetch_page(
    fetch: Callable[[int], Awaitable[Sequence[Item]]],
    size: int,
    position: Callable[[Item], str],
) -> Page[Item]:
    """Fetch one row more than `size` to learn whether another page follows; its token
    stands for the position of the page's last item."""
    found = await fetch(size + 1)
    if len(found) <= size:
        return Page(list(found), "")
    items = list(found[:size])
    return Page(items, encode_token(position(items[-1])))

"""Types of the compiled scanner, services/ingest/_scan.c (see there for the rules)."""

from collections.abc import Callable, Sequence
from typing import Any

def configure(
    columns: Sequence[tuple[int, int, int, int, bool]],
    countries: bytes,
    max_extra_keys: int,
    max_extra_key: int,
    max_extra_value: int,
    consumer_number: int,
    opt_in_number: int,
    /,
) -> None: ...
def scan_batch(
    data: bytes,
    earliest_s: int,
    latest_us: int,
    today: int,
    cache: dict[bytes, str | None],
    decide: Callable[[str, str, str], str | None],
    /,
) -> (
    tuple[
        int,
        bytes,
        list[int],
        list[int],
        list[str],
        list[str],
        list[str],
        list[tuple[int, bytes]],
    ]
    | None
): ...
def number_lines(seqs: list[int], lines: list[bytes], /) -> bytes: ...
def encode_results(
    results: list[Any], codes: dict[Any, int], accepted: int, duplicates: int, rejected: int, /
) -> bytes: ...

"""The phone step: libphonenumber normalisation, cached per distinct input.

Parsing and validating a number costs tens of microseconds, so results (including
"not a number") are kept in one bounded LRU cache per process, shared by every render.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from itertools import repeat

import phonenumbers

from services.common.layouts.model import PhoneFormat, PhoneStep
from services.common.layouts.problems import StepError

CACHE_SIZE = 100_000
REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)

_FORMATS = {
    PhoneFormat.E164: phonenumbers.PhoneNumberFormat.E164,
    PhoneFormat.INTERNATIONAL: phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    PhoneFormat.NATIONAL: phonenumbers.PhoneNumberFormat.NATIONAL,
}


@lru_cache(maxsize=CACHE_SIZE)
def normalise_phone(text: str, region: str, fmt: PhoneFormat, accept_possible: bool) -> str | None:
    """The formatted number; '' for empty text; None when it is no (valid) number."""
    if not text:
        return ""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    ok = (
        phonenumbers.is_possible_number(number)
        if accept_possible
        else phonenumbers.is_valid_number(number)
    )
    return phonenumbers.format_number(number, _FORMATS[fmt]) if ok else None


def phone_cache_info() -> tuple[int, int, int]:
    """(hits, misses, current size) of the shared cache."""
    info = normalise_phone.cache_info()
    return info.hits, info.misses, info.currsize


def regions_for(step: PhoneStep, countries: Sequence[str] | None, count: int) -> Sequence[str]:
    """Each row's region: its country when phone numbers know it, else the default."""
    default = step.default_country.upper()
    if countries is None:
        return [default] * count
    return [c if c in REGIONS else default for c in map(str.upper, map(str.strip, countries))]


def normalise_phones(
    step: PhoneStep, values: Sequence[str], regions: Sequence[str]
) -> list[str | None]:
    """Each value normalised (None where it is no valid number)."""
    return list(
        map(
            normalise_phone,
            map(str.strip, values),
            regions,
            repeat(step.format),
            repeat(step.accept_possible),
        )
    )


def phone_problem(value: str, region: str) -> StepError:
    """Why `value` was refused."""
    return StepError("INVALID_PHONE", f"{value.strip()[:40]!r} is not a valid number for {region}")

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
# Keep phonenumbers' compiled metadata patterns instead of re-looking them up in the re
# module's cache on every parse: about 15% off each cache miss.
phonenumbers.enable_pattern_cache()

_FORMATS = {
    PhoneFormat.E164: phonenumbers.PhoneNumberFormat.E164,
    PhoneFormat.INTERNATIONAL: phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    PhoneFormat.NATIONAL: phonenumbers.PhoneNumberFormat.NATIONAL,
}


@lru_cache(maxsize=CACHE_SIZE)
def _normalised(text: str, region: str, fmt: int, accept_possible: bool) -> str | None:
    # Plain ints and strings as the key: hashing an Enum would cost a Python call per row.
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
    return phonenumbers.format_number(number, fmt) if ok else None


def normalise_phone(
    text: str, region: str, fmt: PhoneFormat = PhoneFormat.E164, accept_possible: bool = False
) -> str | None:
    """The formatted number; '' for empty text; None when it is no (valid) number."""
    return _normalised(text.strip(), region, _FORMATS[fmt], accept_possible)


def phone_cache_info() -> tuple[int, int, int]:
    """(hits, misses, current size) of the shared cache."""
    info = _normalised.cache_info()
    return info.hits, info.misses, info.currsize


class PhoneNormaliser:
    """A compiled phone step: normalises a column, each row in its own country if known."""

    def __init__(self, step: PhoneStep) -> None:
        self._default = step.default_country.upper()
        self._fmt = _FORMATS[step.format]
        self._possible = step.accept_possible
        self._regions: dict[str, str] = {}  # a row's country as written -> region used

    def _region(self, country: str) -> str:
        region = self._regions.get(country)
        if region is None:
            code = country.strip().upper()
            region = code if code in REGIONS else self._default
            if len(self._regions) < 1000:
                self._regions[country] = region
        return region

    def regions(self, countries: Sequence[str] | None, count: int) -> list[str]:
        """Each row's region: its country when phone numbers know it, else the default."""
        if countries is None:
            return [self._default] * count
        found: list[str | None] = list(map(self._regions.get, countries))
        if None in found:  # countries not seen before (few): look them up once each
            found = list(map(self._region, countries))
        return found  # type: ignore[return-value]  # no None left

    def column(self, values: Sequence[str], countries: Sequence[str] | None) -> list[str | None]:
        """Each value normalised (None where it is no valid number)."""
        return list(
            map(
                _normalised,
                map(str.strip, values),
                self.regions(countries, len(values)),
                repeat(self._fmt),
                repeat(self._possible),
            )
        )

    def problem(self, value: str, country: str | None) -> StepError:
        """Why `value` was refused."""
        region = self._default if country is None else self._region(country)
        text = value.strip()[:40]
        return StepError("INVALID_PHONE", f"{text!r} is not a valid number for {region}")

"""Query parameters of the export API, each parsed once and refused by name.

Every parser raises InvalidArgumentError carrying one FieldProblem per bad parameter; the
problem middleware answers it as a 400 problem document whose `invalid_params` list names
each one (RFC 9457's extension example). Unknown parameters are refused too: a typo such
as `form=` must not silently export everything.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from multidict import MultiMapping

from services.common.errors import FieldProblem, InvalidArgumentError

MAX_SEQ = 2**63 - 1
MAX_VALUE_CHARS = 200  # no parameter of this API needs more


class Params:
    """The query of one request, read parameter by parameter; problems are collected and
    raised together by `done()`, so one answer names every bad parameter."""

    def __init__(self, query: MultiMapping[str], allowed: Iterable[str]) -> None:
        self._query = query
        self._problems: list[FieldProblem] = []
        known = set(allowed)
        for name in sorted(set(query) - known):
            self.refuse(name[:MAX_VALUE_CHARS], "UNKNOWN", "is not a parameter of this route")

    def refuse(self, name: str, code: str, message: str) -> None:
        """Record one bad parameter."""
        self._problems.append(FieldProblem(name, code, message))

    def done(self) -> None:
        """Raise the problems found so far, if any."""
        if self._problems:
            names = ", ".join(dict.fromkeys(p.field for p in self._problems))
            raise InvalidArgumentError(f"bad parameters: {names}", list(self._problems))

    def _one(self, name: str) -> str | None:
        values = self._query.getall(name, [])
        if not values:
            return None
        if len(values) > 1:
            self.refuse(name, "REPEATED", "may be given once")
            return None
        value = values[0]
        if len(value) > MAX_VALUE_CHARS or "\x00" in value:
            self.refuse(name, "INVALID_FORMAT", f"must be at most {MAX_VALUE_CHARS} characters")
            return None
        return value

    def text(self, name: str, default: str = "", choices: Iterable[str] | None = None) -> str:
        """A string, optionally one of `choices`."""
        value = self._one(name)
        if value is None:
            return default
        if choices is not None:
            options = tuple(choices)
            if value not in options:
                self.refuse(name, "INVALID_VALUE", f"must be one of {', '.join(options)}")
                return default
        return value

    def integer(self, name: str, *, low: int = 0, high: int = MAX_SEQ) -> int | None:
        """A whole number in [low, high], or None when absent."""
        value = self._one(name)
        if value is None:
            return None
        if not value.isascii() or not value.isdigit():
            self.refuse(name, "INVALID_FORMAT", "must be a whole number")
            return None
        number = int(value)
        if not low <= number <= high:
            self.refuse(name, "OUT_OF_RANGE", f"must be {low}-{high}")
            return None
        return number

    def uuid(self, name: str) -> UUID | None:
        """An id, or None when absent."""
        value = self._one(name)
        return None if value is None else self._parse_uuid(name, value)

    def uuids(self, name: str, *, most: int = 100) -> list[UUID]:
        """Ids given as repeated parameters or comma-separated (at most `most`)."""
        values = [v for raw in self._query.getall(name, []) for v in raw.split(",") if v]
        if len(values) > most:
            self.refuse(name, "OUT_OF_RANGE", f"at most {most} ids")
            return []
        parsed = [self._parse_uuid(name, v) for v in values]
        return [u for u in parsed if u is not None]

    def _parse_uuid(self, name: str, value: str) -> UUID | None:
        try:
            if len(value) != 36:
                raise ValueError(value)
            return UUID(value)
        except ValueError:
            self.refuse(name, "INVALID_FORMAT", "must be a UUID such as 7c1e…-…")
            return None

    def zone(self, name: str, default: str = "UTC") -> ZoneInfo:
        """An IANA time zone such as Europe/London."""
        value = self._one(name) or default
        try:
            if value.startswith(("/", ".")) or ".." in value:
                raise ValueError(value)
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            self.refuse(name, "INVALID_VALUE", "must be an IANA time zone such as Europe/London")
            return ZoneInfo("UTC")

    def instant(self, name: str, zone: ZoneInfo) -> datetime | None:
        """An ISO 8601 date or date-time; without an offset, read in `zone` (a date is its
        midnight there)."""
        value = self._one(name)
        if value is None:
            return None
        try:
            if len(value) == 10:
                parsed = datetime.combine(date.fromisoformat(value), time())
            else:
                parsed = datetime.fromisoformat(value)
        except ValueError:
            self.refuse(
                name, "INVALID_FORMAT", "must be ISO 8601, e.g. 2026-11-01 or 2026-11-01T06:00:00Z"
            )
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=zone)
        return parsed.astimezone(UTC)


@dataclass(frozen=True)
class Interval:
    """[start, end) of instants, both optional."""

    start: datetime | None
    end: datetime | None


def interval(params: Params, zone: ZoneInfo, start: str = "from", end: str = "to") -> Interval:
    """The `from` and `to` parameters: `from` must come before `to`."""
    first, last = params.instant(start, zone), params.instant(end, zone)
    if first is not None and last is not None and first >= last:
        params.refuse(start, "OUT_OF_RANGE", f"must be before {end}")
    return Interval(first, last)

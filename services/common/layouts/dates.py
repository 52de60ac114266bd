"""The date step: parse ISO 8601, Unix epochs, spreadsheet serials or a pattern, then write
the point in time in another form and time zone.

Calendar dates (no time of day) are never shifted between zones: a birthday stays the same
day everywhere. Local times without an offset are read in the input zone with PEP 495
`fold=0`: an ambiguous time (clocks going back) is its first occurrence, and a time skipped
by clocks going forward is read with the offset before the change, so it comes out shifted
forward by the gap (02:30 on a spring-forward night becomes 03:30).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from services.common.layouts.model import DateKind, DateStep
from services.common.layouts.patterns import has_time_directive
from services.common.layouts.problems import StepError
from services.common.layouts.strftime import compile_strftime

SPREADSHEET_EPOCH = datetime(1899, 12, 30)  # serial 0 in the 1900 date system (after Feb 1900)
_SERIAL_EARLY_EPOCH = datetime(1899, 12, 31)  # serials 1-59 count from here (Lotus 1-2-3 bug)
_SERIAL_LEAP_BUG = datetime(1900, 3, 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)
_ONE_MS = timedelta(milliseconds=1)

Parsed = tuple[datetime, bool]  # (value, is a calendar date without time)


def zone(name: str) -> ZoneInfo:
    """The IANA zone (raises ZoneInfoNotFoundError or ValueError when unknown)."""
    return ZoneInfo(name)


def _bad(value: str, what: str) -> StepError:
    return StepError("INVALID_DATE", f"{value[:40]!r} is not {what}")


def _parse_iso(text: str) -> Parsed:
    try:
        return datetime.fromisoformat(text), len(text) <= 10
    except ValueError:
        raise _bad(text, "an ISO 8601 date or time") from None


def _number(text: str, what: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise _bad(text, what) from None
    if not math.isfinite(number):
        raise _bad(text, what)
    return number


def _from_epoch(seconds: float, text: str) -> Parsed:
    try:
        return datetime.fromtimestamp(seconds, UTC), False
    except (OverflowError, OSError, ValueError):
        raise _bad(text, "a Unix time in range") from None


def _parse_serial(text: str) -> Parsed:
    serial = _number(text, "a spreadsheet serial date")
    if serial < 1 or serial >= 2958466:  # 1900-01-01 .. 9999-12-31
        raise _bad(text, "a spreadsheet serial date in range")
    if 60 <= serial < 61:
        raise StepError("INVALID_DATE", "serial 60 is 1900-02-29, which never existed")
    base = _SERIAL_EARLY_EPOCH if serial < 60 else SPREADSHEET_EPOCH
    days = math.floor(serial)
    micros = round((serial - days) * 86_400_000_000)
    value = base + timedelta(days=days, microseconds=micros)
    return value, micros == 0


def _parser(step: DateStep) -> Callable[[str], Parsed]:
    kind = step.input
    if kind is DateKind.UNIX_SECONDS:
        return lambda text: _from_epoch(_number(text, "a Unix time"), text)
    if kind is DateKind.UNIX_MILLISECONDS:
        return lambda text: _from_epoch(_number(text, "a Unix time") / 1000, text)
    if kind is DateKind.SPREADSHEET_SERIAL:
        return _parse_serial
    if kind is DateKind.PATTERN:
        pattern, date_only = step.input_pattern, not has_time_directive(step.input_pattern)

        def parse_pattern(text: str) -> Parsed:
            try:
                return datetime.strptime(text, pattern), date_only
            except ValueError:
                raise _bad(text, f"a date in the pattern {pattern!r}") from None

        return parse_pattern
    return _parse_iso


def _serial_text(local: datetime, date_only: bool) -> str:
    if local < datetime(1900, 1, 1):
        raise StepError("OUT_OF_RANGE", "spreadsheets have no dates before 1900-01-01")
    delta = local - (SPREADSHEET_EPOCH if local >= _SERIAL_LEAP_BUG else _SERIAL_EARLY_EPOCH)
    if date_only or (delta.seconds == 0 and delta.microseconds == 0):
        return str(delta.days)
    fraction = (delta.seconds + delta.microseconds / 1e6) / 86400
    return f"{delta.days + fraction:.8f}".rstrip("0").rstrip(".")


def _writer(step: DateStep, out_zone: ZoneInfo) -> Callable[[datetime, bool], str]:
    kind = step.output
    utc_out = out_zone.key == "UTC"
    if kind is DateKind.PATTERN:
        formatted = compile_strftime(step.output_pattern)
        return lambda value, date_only: formatted(value)
    if kind is DateKind.UNIX_SECONDS:
        return lambda value, date_only: str((_as_utc(value, date_only) - _EPOCH) // _ONE_SECOND)
    if kind is DateKind.UNIX_MILLISECONDS:
        return lambda value, date_only: str((_as_utc(value, date_only) - _EPOCH) // _ONE_MS)
    if kind is DateKind.SPREADSHEET_SERIAL:
        return lambda value, date_only: _serial_text(value.replace(tzinfo=None), date_only)

    def iso(value: datetime, date_only: bool) -> str:
        if date_only:
            return value.date().isoformat()
        text = value.isoformat(timespec="seconds")
        return text[:-6] + "Z" if utc_out and text.endswith("+00:00") else text

    return iso


def _as_utc(value: datetime, date_only: bool) -> datetime:
    # Calendar dates count from midnight UTC; local times were already placed in a zone.
    return value.replace(tzinfo=UTC) if date_only else value


def compile_date_step(
    step: DateStep, account_zone: str, *, none_on_error: bool = False
) -> Callable[[str], str | None]:
    """A function text -> text for the step; for a value it cannot read it raises StepError,
    or returns None with `none_on_error` (the fast form for whole columns)."""
    in_zone = zone(step.input_time_zone or account_zone)
    out_zone = zone(step.output_time_zone or account_zone)
    parse, write = _parser(step), _writer(step, out_zone)
    # The common case (ISO in, pattern out) skips two call layers per value.
    iso_in = step.input is DateKind.ISO_8601
    fast_out = compile_strftime(step.output_pattern) if step.output is DateKind.PATTERN else None
    from_iso = datetime.fromisoformat

    def convert(value: str) -> str:
        text = value.strip()
        if not text:
            return ""
        if iso_in:
            try:
                parsed, date_only = from_iso(text), len(text) <= 10
            except ValueError:
                raise _bad(text, "an ISO 8601 date or time") from None
        else:
            parsed, date_only = parse(text)
        if date_only:
            return write(parsed.replace(hour=0, minute=0, second=0, microsecond=0), True)
        if parsed.tzinfo is None:
            # Through UTC: astimezone() to the same zone would keep a skipped wall time.
            parsed = parsed.replace(tzinfo=in_zone).astimezone(UTC)
        try:
            local = parsed.astimezone(out_zone)
            return fast_out(local) if fast_out else write(local, False)
        except (OverflowError, ValueError):
            raise StepError("OUT_OF_RANGE", f"{text[:40]!r} is out of range") from None

    def convert_or_none(value: str) -> str | None:
        # `convert` without its error reporting, in one call: the per-value hot path.
        text = value.strip()
        if not text:
            return ""
        try:
            if iso_in:
                parsed, date_only = from_iso(text), len(text) <= 10
            else:
                parsed, date_only = parse(text)
            if date_only:
                return write(parsed.replace(hour=0, minute=0, second=0, microsecond=0), True)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=in_zone).astimezone(UTC)
            local = parsed.astimezone(out_zone)
            return fast_out(local) if fast_out else write(local, False)
        except Exception:  # StepError or whatever a strange value provokes; explained later
            return None

    return convert_or_none if none_on_error else convert

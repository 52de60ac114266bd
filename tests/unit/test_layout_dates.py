"""The date step: forms in and out, time zones across DST changes in both directions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.common.layouts.dates import compile_date_step
from services.common.layouts.model import DateKind, DateStep
from services.common.layouts.problems import StepError
from services.common.layouts.strftime import compile_strftime
from tests.unit.layout_support import run_steps, value_of

NEW_YORK = "America/New_York"


def _in(zone: str, **kw: str) -> DateStep:
    return DateStep(output_time_zone=zone, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        # Spring forward, 2024-03-10: 01:59:59 EST is followed by 03:00:00 EDT.
        (datetime(2024, 3, 10, 6, 59, 59, tzinfo=UTC), "2024-03-10T01:59:59-05:00"),
        (datetime(2024, 3, 10, 7, 0, 0, tzinfo=UTC), "2024-03-10T03:00:00-04:00"),
        # Fall back, 2024-11-03: 01:30 happens twice, first EDT then EST.
        (datetime(2024, 11, 3, 5, 30, tzinfo=UTC), "2024-11-03T01:30:00-04:00"),
        (datetime(2024, 11, 3, 6, 30, tzinfo=UTC), "2024-11-03T01:30:00-05:00"),
    ],
)
def test_instants_convert_to_local_time_across_dst_changes(
    instant: datetime, expected: str
) -> None:
    assert value_of(_in(NEW_YORK), "opted_in_at", opted_in_at=instant) == expected


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (datetime(2024, 3, 31, 0, 59, 59, tzinfo=UTC), "31/03/2024 00:59 GMT"),
        (datetime(2024, 3, 31, 1, 0, 0, tzinfo=UTC), "31/03/2024 02:00 BST"),
        (datetime(2024, 10, 27, 0, 30, tzinfo=UTC), "27/10/2024 01:30 BST"),
        (datetime(2024, 10, 27, 1, 30, tzinfo=UTC), "27/10/2024 01:30 GMT"),
    ],
)
def test_pattern_output_in_london_across_dst(instant: datetime, expected: str) -> None:
    step = DateStep(
        output=DateKind.PATTERN,
        output_pattern="%d/%m/%Y %H:%M %Z",
        output_time_zone="Europe/London",
    )
    assert value_of(step, "opted_in_at", opted_in_at=instant) == expected


def test_local_time_skipped_by_spring_forward_is_shifted_by_the_gap() -> None:
    step = DateStep(input_time_zone=NEW_YORK, output_time_zone=NEW_YORK)
    assert value_of(step, "extra.at", extra={"at": "2024-03-10 02:30"}) == (
        "2024-03-10T03:30:00-04:00"
    )
    to_utc = DateStep(input_time_zone=NEW_YORK, output_time_zone="UTC")
    assert value_of(to_utc, "extra.at", extra={"at": "2024-03-10 02:30"}) == "2024-03-10T07:30:00Z"


def test_ambiguous_local_time_at_fall_back_is_its_first_occurrence() -> None:
    step = DateStep(input_time_zone=NEW_YORK, output_time_zone="UTC")
    assert value_of(step, "extra.at", extra={"at": "2024-11-03T01:30"}) == "2024-11-03T05:30:00Z"


def test_inputs_with_an_offset_ignore_the_input_zone() -> None:
    step = DateStep(input_time_zone=NEW_YORK, output_time_zone="UTC")
    assert value_of(step, "extra.at", extra={"at": "2024-07-01T14:30:00+02:00"}) == (
        "2024-07-01T12:30:00Z"
    )


def test_calendar_dates_never_shift_between_zones() -> None:
    far_east = DateStep(
        input_time_zone="Pacific/Pago_Pago",
        output=DateKind.PATTERN,
        output_pattern="%A %-d %B %Y",
        output_time_zone="Pacific/Kiritimati",
    )
    assert value_of(far_east, "date_of_birth", date_of_birth="1990-05-17") == "Thursday 17 May 1990"
    assert value_of(_in("Pacific/Kiritimati"), "date_of_birth", date_of_birth="1990-05-17") == (
        "1990-05-17"
    )


def test_empty_output_zone_means_the_accounts_zone() -> None:
    value, _ = run_steps(DateStep(), "opted_in_at", zone="Europe/Berlin")
    assert value == "2024-07-01T14:30:00+02:00"


def test_unix_epoch_output_in_seconds_and_milliseconds() -> None:
    at = datetime(2024, 7, 1, 12, 30, tzinfo=UTC)
    seconds = DateStep(output=DateKind.UNIX_SECONDS)
    assert value_of(seconds, "opted_in_at", opted_in_at=at) == "1719837000"
    millis = DateStep(output=DateKind.UNIX_MILLISECONDS)
    assert value_of(millis, "opted_in_at", opted_in_at=at) == "1719837000000"
    assert value_of(seconds, "date_of_birth", date_of_birth="1970-01-02") == "86400"


def test_unix_epoch_input() -> None:
    seconds = DateStep(input=DateKind.UNIX_SECONDS, output_time_zone="UTC")
    assert value_of(seconds, "extra.t", extra={"t": "1719837000"}) == "2024-07-01T12:30:00Z"
    millis = DateStep(
        input=DateKind.UNIX_MILLISECONDS,
        output=DateKind.PATTERN,
        output_pattern="%H:%M:%S.%f",
        output_time_zone="UTC",
    )
    assert value_of(millis, "extra.t", extra={"t": "1719837000250"}) == "12:30:00.250000"


@pytest.mark.parametrize(
    ("zone", "expected"), [("UTC", "45474.52083333"), ("Europe/London", "45474.5625")]
)
def test_spreadsheet_serial_output_uses_local_wall_time(zone: str, expected: str) -> None:
    step = DateStep(output=DateKind.SPREADSHEET_SERIAL, output_time_zone=zone)
    assert value_of(step, "opted_in_at") == expected


@pytest.mark.parametrize(
    ("date_of_birth", "serial"),
    [("1900-01-01", "1"), ("1900-02-28", "59"), ("1900-03-01", "61"), ("1990-05-17", "33010")],
)
def test_spreadsheet_serial_of_dates_follows_the_1900_system(
    date_of_birth: str, serial: str
) -> None:
    step = DateStep(output=DateKind.SPREADSHEET_SERIAL)
    assert value_of(step, "date_of_birth", date_of_birth=date_of_birth) == serial
    back = DateStep(input=DateKind.SPREADSHEET_SERIAL)
    assert value_of(back, "extra.s", extra={"s": serial}) == date_of_birth


def test_spreadsheet_serial_input_with_time_of_day() -> None:
    step = DateStep(
        input=DateKind.SPREADSHEET_SERIAL, input_time_zone=NEW_YORK, output_time_zone="UTC"
    )
    assert value_of(step, "extra.s", extra={"s": "45474.5"}) == "2024-07-01T16:00:00Z"


def test_serial_60_is_the_leap_day_1900_never_had() -> None:
    _, problems = run_steps(
        DateStep(input=DateKind.SPREADSHEET_SERIAL), "extra.s", extra={"s": "60"}
    )
    assert problems.counts == {("under_test", "INVALID_DATE"): 1}


def test_pattern_input_reads_calendar_dates() -> None:
    step = DateStep(input=DateKind.PATTERN, input_pattern="%d/%m/%Y")
    assert value_of(step, "extra.d", extra={"d": "17/05/1990"}) == "1990-05-17"


def test_pattern_output_with_names_offsets_and_non_ascii_text() -> None:
    step = DateStep(
        output=DateKind.PATTERN,
        output_pattern="%a %d %b %Y %I:%M %p %Z (%z) – ok",
        output_time_zone=NEW_YORK,
    )
    assert value_of(step, "opted_in_at") == "Mon 01 Jul 2024 08:30 AM EDT (-0400) – ok"


def test_a_value_that_is_not_a_date_passes_through_and_is_reported() -> None:
    value, problems = run_steps(DateStep(), "extra.d", extra={"d": "next tuesday"})
    assert value == "next tuesday"
    assert problems.counts == {("under_test", "INVALID_DATE"): 1}
    assert "next tuesday" in problems.samples[0].message


def test_a_value_that_is_not_a_date_gets_the_fallback() -> None:
    step = DateStep(input=DateKind.UNIX_SECONDS, fallback="")
    value, problems = run_steps(step, "extra.d", extra={"d": "1e400"})
    assert (value, problems.total) == ("", 1)


def test_empty_or_missing_dates_stay_empty_without_a_problem() -> None:
    value, problems = run_steps(DateStep(), "date_of_birth")
    assert (value, problems.total) == ("", 0)
    value, problems = run_steps(DateStep(), "extra.missing")
    assert (value, problems.total) == ("", 0)


FAST_PATTERNS = [
    "%Y-%m-%d %H:%M:%S",
    "%d/%m/%y %-d %-m %e %k %l %I %p",
    "%a %A %b %B %h %j %-j %C",
    "%F %T %D %R %f %z %Z %%",
    "100%% at %-H:%-M:%-S",
    "%U %W %G-%V %u %w",  # outside the fast set: strftime itself
]


@pytest.mark.parametrize("pattern", FAST_PATTERNS)
def test_compiled_strftime_equals_datetime_strftime(pattern: str) -> None:
    rng = random.Random(7)
    formatted = compile_strftime(pattern)
    zones = [ZoneInfo(z) for z in ("UTC", NEW_YORK, "Asia/Kolkata", "Europe/Amsterdam")]
    start = datetime(1850, 1, 1, tzinfo=UTC)
    for _ in range(2000):
        at = (start + timedelta(seconds=rng.randrange(0, 6_000_000_000))).astimezone(
            rng.choice(zones)
        )
        at = at.replace(microsecond=rng.randrange(0, 1_000_000))
        assert formatted(at) == at.strftime(pattern)
        naive = at.replace(tzinfo=None)
        assert formatted(naive) == naive.strftime(pattern)


@pytest.mark.parametrize(
    "step",
    [
        DateStep(
            output=DateKind.PATTERN, output_pattern="%d/%m/%Y %H:%M %Z", output_time_zone=NEW_YORK
        ),
        DateStep(input=DateKind.UNIX_SECONDS, output=DateKind.SPREADSHEET_SERIAL),
        DateStep(
            input=DateKind.PATTERN, input_pattern="%d/%m/%Y", output=DateKind.UNIX_MILLISECONDS
        ),
        DateStep(input=DateKind.SPREADSHEET_SERIAL, output_time_zone="Asia/Kolkata"),
    ],
)
def test_the_fast_column_path_agrees_with_the_reporting_path(step: DateStep) -> None:
    reporting = compile_date_step(step, "UTC")
    fast = compile_date_step(step, "UTC", none_on_error=True)
    values = [
        "", " ", "2024-03-10", "2024-03-10T02:30", "2024-11-03 01:30:00+00", "1710052200",
        "45474.5", "60", "10/03/2024", "9999-12-31T23:59:59-05:00", "nonsense", "1e400", "-1",
    ]  # fmt: skip
    for value in values:
        try:
            expected: str | None = reporting(value)
        except StepError:
            expected = None
        assert fast(value) == expected, value


def test_a_date_step_on_a_timestamp_field_keeps_sub_second_precision() -> None:
    step = DateStep(output=DateKind.PATTERN, output_pattern="%H:%M:%S.%f", output_time_zone="UTC")
    at = datetime(2024, 7, 1, 12, 30, 5, 250000, tzinfo=UTC)
    assert value_of(step, "opted_in_at", opted_in_at=at) == "12:30:05.250000"

"""Schedules: crontab's Sunday-zero weekdays, intervals, DST, and refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.scheduler.tasks.schedules import (
    Schedule,
    ScheduleError,
    check_schedule,
    next_run,
    unix_days,
)

ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


def test_weekdays_are_numbered_from_sunday_as_in_crontab() -> None:
    assert unix_days("1-5") == "mon,tue,wed,thu,fri"
    assert unix_days("0") == unix_days("7") == "sun"
    assert unix_days("5-7") == "sun,fri,sat"
    assert unix_days("*/2") == "sun,tue,thu,sat"
    assert unix_days("mon,WED") == "mon,wed"
    # Friday 2026-12-04 02:31 UTC: the next "30 2 * * 1-5" run is Monday, not Saturday.
    friday = datetime(2026, 12, 4, 2, 31, tzinfo=UTC)
    due = next_run(Schedule(cron="30 2 * * 1-5"), "UTC", friday, ANCHOR)
    assert due == datetime(2026, 12, 7, 2, 30, tzinfo=UTC)
    assert due.strftime("%A") == "Monday"


def test_runs_follow_the_tasks_zone_across_dst() -> None:
    # New York switches to summer time on 2026-03-08: 09:00 local is 14:00 UTC, then 13:00.
    before = datetime(2026, 3, 6, 15, 0, tzinfo=UTC)
    first = next_run(Schedule(cron="0 9 * * *"), "America/New_York", before, ANCHOR)
    second = next_run(
        Schedule(cron="0 9 * * *"),
        "America/New_York",
        datetime(2026, 3, 8, 0, 0, tzinfo=UTC),
        ANCHOR,
    )
    assert first.astimezone(UTC) == datetime(2026, 3, 7, 14, 0, tzinfo=UTC)
    assert second.astimezone(UTC) == datetime(2026, 3, 8, 13, 0, tzinfo=UTC)


def test_intervals_count_from_the_anchor() -> None:
    every = Schedule(every_s=900)
    due = next_run(every, "UTC", datetime(2026, 1, 1, 0, 20, tzinfo=UTC), ANCHOR)
    assert due == datetime(2026, 1, 1, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (Schedule(cron="* * *"), "five fields"),
        (Schedule(cron="61 * * * *"), "cron"),
        (Schedule(cron="0 0 * * 8"), "day of week"),
        (Schedule(cron="0 0 30 2 *"), "never"),
        (Schedule(every_s=5), "at least 60"),
        (Schedule(), "either"),
        (Schedule(cron="0 0 * * *", every_s=60), "either"),
    ],
)
def test_schedules_that_cannot_run_are_refused(schedule: Schedule, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        check_schedule(schedule, "UTC")

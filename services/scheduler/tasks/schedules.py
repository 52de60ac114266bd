"""Due times from APScheduler 3 triggers: Unix cron expressions and fixed intervals.

APScheduler numbers weekdays from Monday = 0, crontab from Sunday = 0 (7 is Sunday too),
so the day-of-week field is rewritten into day names before APScheduler sees it:
"30 2 * * 1-5" means Monday to Friday, as every crontab user expects. Wall times that a
DST change skips come out shifted by the gap (APScheduler's behaviour); repeated ones run
once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NAME_NUMBERS = {name: n for n, name in enumerate(_DAY_NAMES)}
MIN_INTERVAL_S = 60


class ScheduleError(ValueError):
    """The schedule cannot run; the message says why."""


@dataclass(frozen=True)
class Schedule:
    """A cron expression or an interval (exactly one)."""

    cron: str = ""
    every_s: int = 0

    def to_json(self) -> dict[str, object]:
        """The stored form."""
        return {"cron": self.cron} if self.cron else {"every_s": self.every_s}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Schedule:
        """From the stored form."""
        return cls(cron=str(data.get("cron", "")), every_s=int(str(data.get("every_s", 0))))


def _day_number(text: str) -> int:
    lowered = text.lower()
    if lowered in _NAME_NUMBERS:
        return _NAME_NUMBERS[lowered]
    if not lowered.isdigit() or not 0 <= int(lowered) <= 7:
        raise ScheduleError(f"day of week {text!r} is not 0-7 or a day name")
    return int(lowered) % 7


def unix_days(field: str) -> str:
    """A crontab day-of-week field (Sunday 0 or 7) as APScheduler day names."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"day of week step {step_text!r} is not a positive number")
            step = int(step_text)
        if body == "*":
            first, last = 0, 6
        elif "-" in body:
            low, high = body.split("-", 1)
            first, last = _day_number(low), _day_number(high)
            if high in ("7",):
                last = 7
            if last < first:
                raise ScheduleError(f"day of week range {body!r} runs backwards")
        else:
            first = last = _day_number(body)
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_DAY_NAMES[d] for d in sorted(days))


def cron_trigger(expression: str, time_zone: str) -> CronTrigger:
    """An APScheduler trigger for a five-field Unix cron expression."""
    fields = expression.split()
    if len(fields) != 5:
        raise ScheduleError(
            "a cron expression has five fields: minute hour day-of-month month day-of-week"
        )
    minute, hour, day, month, weekday = fields
    try:
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=unix_days(weekday),
            timezone=ZoneInfo(time_zone),
        )  # fmt: skip
    except ScheduleError:
        raise
    except (ValueError, KeyError) as exc:
        raise ScheduleError(f"not a cron expression APScheduler can run: {exc}") from exc


def check_schedule(schedule: Schedule, time_zone: str) -> Schedule:
    """The schedule, or ScheduleError (exactly one kind, valid, often enough but not more)."""
    if bool(schedule.cron) == bool(schedule.every_s):
        raise ScheduleError("give either a cron expression or an interval")
    if schedule.cron:
        trigger = cron_trigger(schedule.cron.strip(), time_zone)
        if trigger.get_next_fire_time(None, datetime.now(ZoneInfo(time_zone))) is None:
            raise ScheduleError("the cron expression never fires")
        return Schedule(cron=schedule.cron.strip())
    if schedule.every_s < MIN_INTERVAL_S:
        raise ScheduleError(f"an interval is at least {MIN_INTERVAL_S} seconds")
    return schedule


def next_run(schedule: Schedule, time_zone: str, after: datetime, anchor: datetime) -> datetime:
    """The first due time strictly after `after` (intervals count from `anchor`)."""
    zone = ZoneInfo(time_zone)
    trigger: CronTrigger | IntervalTrigger
    if schedule.cron:
        trigger = cron_trigger(schedule.cron, time_zone)
    else:
        trigger = IntervalTrigger(seconds=schedule.every_s, start_date=anchor, timezone=zone)
    moment = after.astimezone(zone) + timedelta(microseconds=1)
    found = trigger.get_next_fire_time(None, moment)
    if found is None:
        raise ScheduleError("the schedule never fires again")
    result: datetime = found
    return result

"""strftime patterns compiled once into a %-format over datetime attributes.

datetime.strftime costs about 3 us per call; the compiled form about 0.5 us, which matters
at a million rows. Directives outside the fast set, and years outside 1000-9999 (where
glibc padding differs), use datetime.strftime itself, so the output is always identical.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from operator import attrgetter

# C-locale names (services never change LC_TIME).
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip

Arg = Callable[[datetime], object]


def _offset(value: datetime) -> str:
    offset = value.utcoffset()
    if offset is None:
        return ""
    sign = "-" if offset.days < 0 else "+"
    offset = -offset if offset.days < 0 else offset
    hours, rest = divmod(offset.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{sign}{hours:02d}{minutes:02d}"
    if seconds or offset.microseconds:
        text += f"{seconds:02d}"
        if offset.microseconds:
            text += f".{offset.microseconds:06d}"
    return text


def _hour12(value: datetime) -> int:
    return (value.hour % 12) or 12


# directive -> (%-format spec, argument); a str argument is an attribute name.
_SIMPLE: dict[str, tuple[str, str | Arg]] = {
    "Y": ("%d", "year"),
    "m": ("%02d", "month"),
    "-m": ("%d", "month"),
    "d": ("%02d", "day"),
    "-d": ("%d", "day"),
    "e": ("%2d", "day"),
    "H": ("%02d", "hour"),
    "-H": ("%d", "hour"),
    "k": ("%2d", "hour"),
    "M": ("%02d", "minute"),
    "-M": ("%d", "minute"),
    "S": ("%02d", "second"),
    "-S": ("%d", "second"),
    "f": ("%06d", "microsecond"),
    "y": ("%02d", lambda v: v.year % 100),
    "-y": ("%d", lambda v: v.year % 100),
    "C": ("%02d", lambda v: v.year // 100),
    "I": ("%02d", _hour12),
    "-I": ("%d", _hour12),
    "l": ("%2d", _hour12),
    "p": ("%s", lambda v: "AM" if v.hour < 12 else "PM"),
    "a": ("%s", lambda v: _DAYS[v.weekday()][:3]),
    "A": ("%s", lambda v: _DAYS[v.weekday()]),
    "b": ("%s", lambda v: _MONTHS[v.month - 1][:3]),
    "h": ("%s", lambda v: _MONTHS[v.month - 1][:3]),
    "B": ("%s", lambda v: _MONTHS[v.month - 1]),
    "j": ("%03d", lambda v: v.timetuple().tm_yday),
    "-j": ("%d", lambda v: v.timetuple().tm_yday),
    "z": ("%s", _offset),
    "Z": ("%s", lambda v: v.tzname() or ""),
}
_COMPOUND = {"F": "%Y-%m-%d", "T": "%H:%M:%S", "D": "%m/%d/%y", "R": "%H:%M"}
_DIRECTIVE = re.compile(r"%(-?.)", re.DOTALL)


def _fast_form(pattern: str) -> tuple[str, list[str | Arg]] | None:
    for name, expansion in _COMPOUND.items():
        pattern = pattern.replace("%%", "\0").replace("%" + name, expansion).replace("\0", "%%")
    template: list[str] = []
    args: list[str | Arg] = []
    position = 0
    for match in _DIRECTIVE.finditer(pattern):
        template.append(pattern[position : match.start()].replace("%", "%%"))
        position = match.end()
        directive = match.group(1)
        if directive == "%":
            template.append("%%")
            continue
        known = _SIMPLE.get(directive)
        if known is None:
            return None
        template.append(known[0])
        args.append(known[1])
    template.append(pattern[position:].replace("%", "%%"))
    return "".join(template), args


def compile_strftime(pattern: str) -> Callable[[datetime], str]:
    """A function equal to `lambda value: value.strftime(pattern)`, only faster."""
    form = _fast_form(pattern)
    if form is None:
        return lambda value: value.strftime(pattern)
    template, args = form
    if all(isinstance(a, str) for a in args):
        names = [a for a in args if isinstance(a, str)]
        if not names:
            text = template % ()
            return lambda value: text if 1000 <= value.year <= 9999 else value.strftime(pattern)
        pick = attrgetter(*names)  # one name gives a bare value, which % accepts too
        return lambda value: (
            template % pick(value) if 1000 <= value.year <= 9999 else value.strftime(pattern)
        )
    getters: list[Arg] = [attrgetter(a) if isinstance(a, str) else a for a in args]

    def formatted(value: datetime) -> str:
        if not 1000 <= value.year <= 9999:
            return value.strftime(pattern)
        return template % tuple([get(value) for get in getters])

    return formatted

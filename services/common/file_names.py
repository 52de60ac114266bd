"""Delivery file names: a template of tokens, filled once per delivery (so a retry writes
the same names), and checked to be a plain file name inside the connection's folder."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

DEFAULT_TEMPLATE = "{task}_{YYYY}{MM}{DD}_{HH}{mm}{ss}_{delivery_id}.{ext}"
TOKENS = (
    "task", "task_id", "delivery_id", "after_seq", "through_seq", "part",
    "YYYY", "MM", "DD", "HH", "mm", "ss", "ext",
)  # fmt: skip
MAX_NAME = 255
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class TemplateError(ValueError):
    """The template cannot make a plain file name; the message says why."""


@dataclass(frozen=True)
class NameValues:
    """What a delivery's names are made of."""

    task: str
    task_id: str
    delivery_id: str
    after_seq: int
    through_seq: int
    reserved_at: datetime
    time_zone: str
    ext: str  # "csv", "jsonl.gz", ...


def _fields(template: str) -> list[str]:
    try:
        return [f for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise TemplateError(f"unbalanced braces: {exc}") from exc


def check_template(template: str) -> str:
    """The template (default when blank), or TemplateError naming the problem."""
    chosen = template.strip() or DEFAULT_TEMPLATE
    if len(chosen) > 200:
        raise TemplateError("at most 200 characters")
    if "/" in chosen or "\\" in chosen or ".." in chosen:
        raise TemplateError("a file name, not a path: no '/', '\\' or '..'")
    for name in _fields(chosen):
        if name not in TOKENS:
            raise TemplateError(f"unknown token {{{name}}}; tokens: {', '.join(TOKENS)}")
    if "{ext}" not in chosen and not re.search(r"\.[A-Za-z0-9]+$", chosen):
        raise TemplateError("end the name with {ext} or an extension")
    sample = NameValues("task", "t", "d", 0, 0, datetime(2026, 1, 2, 3, 4, 5), "UTC", "csv")
    file_name(chosen, sample, part=None)
    return chosen


def _clean(value: str) -> str:
    return _SAFE.sub("-", value).strip("-.") or "x"


def file_name(template: str, values: NameValues, part: int | None) -> str:
    """The file name for one part (None: the delivery is one file)."""
    local = values.reserved_at.astimezone(ZoneInfo(values.time_zone))
    fields: Mapping[str, str] = {
        "task": _clean(values.task)[:64],
        "task_id": values.task_id,
        "delivery_id": values.delivery_id,
        "after_seq": str(values.after_seq),
        "through_seq": str(values.through_seq),
        "part": f"{part:04d}" if part is not None else "",
        "YYYY": f"{local.year:04d}",
        "MM": f"{local.month:02d}",
        "DD": f"{local.day:02d}",
        "HH": f"{local.hour:02d}",
        "mm": f"{local.minute:02d}",
        "ss": f"{local.second:02d}",
        "ext": values.ext,
    }
    name = template.format_map(fields)
    if part is not None and "{part}" not in template:
        stem, dot, ext = name.partition(".")
        name = f"{stem}_part{part:04d}{dot}{ext}"
    if not _PLAIN.fullmatch(name) or ".." in name or len(name) > MAX_NAME:
        raise TemplateError(f"makes {name[:80]!r}, not a plain file name")
    return name

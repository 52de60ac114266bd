"""The field catalog: every standard referral field and the derived context fields.

The standard fields are the referrals table's columns, as services/common/referral_shape.py
declares them. A *row* handed to the engine is a sequence of strings in `ROW_FIELDS` order, each in
PostgreSQL's text form (DateStyle ISO, TimeZone UTC), with '' for NULL; the row readers
(SQL) and `row_from_values` (samples) both produce exactly that.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from services.common.referral_shape import COLUMNS
from services.common.referral_shape import FieldType as FieldType


class FieldKind(enum.Enum):
    """Where a field's value comes from."""

    STANDARD = "standard"  # a column of the referral
    CONTEXT = "context"  # derived from the delivery or related records
    EXTRA = "extra"  # one of the partner's free-form extra attributes
    CUSTOM = "custom"  # an account's custom field


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """A field a layout or custom field may name."""

    name: str
    type: FieldType
    kind: FieldKind
    description: str


S, T = FieldType.STRING, FieldType.TIMESTAMP

# The referrals table's columns, in the order every row reader selects them.
STANDARD_FIELDS: tuple[FieldInfo, ...] = tuple(
    FieldInfo(c.name, c.catalog_type, FieldKind.STANDARD, c.description) for c in COLUMNS
)

CONTEXT_FIELDS: tuple[FieldInfo, ...] = (
    FieldInfo("campaign_name", S, FieldKind.CONTEXT, "Name of the referral's campaign"),
    FieldInfo(
        "partner_name",
        S,
        FieldKind.CONTEXT,
        "Name of the partner (its id while no name is registered)",
    ),
    FieldInfo("delivery_id", S, FieldKind.CONTEXT, "Id of the delivery carrying the referral"),
    FieldInfo(
        "delivery_time", T, FieldKind.CONTEXT, "When the delivery was issued (ISO 8601, UTC)"
    ),
)

EXTRA_PREFIX = "extra."
EXTRA_EXAMPLE = FieldInfo(
    EXTRA_PREFIX + "<key>",
    S,
    FieldKind.EXTRA,
    "One extra attribute by key, e.g. extra.question_1 ('' when absent)",
)

ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in STANDARD_FIELDS)
ROW_INDEX: Mapping[str, int] = {name: i for i, name in enumerate(ROW_FIELDS)}
FIELDS_BY_NAME: Mapping[str, FieldInfo] = {f.name: f for f in STANDARD_FIELDS + CONTEXT_FIELDS}
TIMESTAMP_FIELDS = frozenset(f.name for f in STANDARD_FIELDS if f.type is FieldType.TIMESTAMP)

_EXTRA_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")  # fullmatch: `$` allows a final "\n"


def extra_key(name: str) -> str | None:
    """The attribute key when `name` is `extra.<key>`, else None."""
    if not name.startswith(EXTRA_PREFIX):
        return None
    key = name[len(EXTRA_PREFIX) :]
    return key if _EXTRA_KEY.fullmatch(key) else None


def is_builtin_field(name: str) -> bool:
    """True for standard, context and `extra.<key>` fields."""
    return name in FIELDS_BY_NAME or extra_key(name) is not None


def iso_timestamp(pg_text: str) -> str:
    """'2024-03-10 07:30:00.5+00' (PostgreSQL, UTC) -> '2024-03-10T07:30:00Z'."""
    if len(pg_text) < 19:
        return pg_text
    return f"{pg_text[:10]}T{pg_text[11:19]}Z"


def pg_timestamp(value: datetime) -> str:
    """The PostgreSQL UTC text form of an aware datetime."""
    utc = value.astimezone(UTC)
    # Not strftime: glibc writes year 5 as "5", PostgreSQL as "0005".
    text = (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d} "
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    )
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "+00"


RowValue = str | int | date | datetime | Mapping[str, str] | None


def row_from_values(values: Mapping[str, RowValue]) -> list[str]:
    """A row in ROW_FIELDS order from named values (absent or None -> '')."""
    row: list[str] = []
    for name in ROW_FIELDS:
        value = values.get(name)
        if value is None:
            row.append("")
        elif isinstance(value, datetime):
            row.append(pg_timestamp(value))
        elif isinstance(value, date):
            row.append(value.isoformat())
        elif isinstance(value, Mapping):
            row.append(json.dumps(dict(value), ensure_ascii=False, separators=(", ", ": ")))
        else:
            row.append(str(value))
    return row

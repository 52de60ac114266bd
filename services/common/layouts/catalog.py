"""The field catalog: every standard referral field and the derived context fields.

A *row* handed to the engine is a sequence of strings in `ROW_FIELDS` order, each in
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


class FieldType(enum.Enum):
    """What kind of value a field holds (as text)."""

    STRING = "string"
    INTEGER = "integer"
    DATE = "date"
    TIMESTAMP = "timestamp"
    UUID = "uuid"
    IP_ADDRESS = "ip_address"
    JSON = "json"


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


def _std(name: str, kind: FieldType, description: str) -> FieldInfo:
    return FieldInfo(name, kind, FieldKind.STANDARD, description)


S, T = FieldType.STRING, FieldType.TIMESTAMP

# The referrals table's columns, in the order every row reader selects them.
STANDARD_FIELDS: tuple[FieldInfo, ...] = (
    _std("seq", FieldType.INTEGER, "Position of the referral in the log (increasing)"),
    _std("account_id", FieldType.UUID, "Advertiser account"),
    _std("campaign_id", FieldType.UUID, "Campaign the consumer opted into"),
    _std("partner_referral_id", S, "The partner's own id for the referral"),
    _std("received_at", T, "When Handoff received the referral (ISO 8601, UTC)"),
    _std("email", S, "Consumer email address"),
    _std("title", S, "Title (Mr, Ms, Dr, ...)"),
    _std("first_name", S, "First name"),
    _std("last_name", S, "Last name"),
    _std("gender", S, "Gender as collected (e.g. M, F, X)"),
    _std("date_of_birth", FieldType.DATE, "Date of birth (YYYY-MM-DD)"),
    _std("mobile", S, "Mobile phone number as collected"),
    _std("phone", S, "Landline phone number as collected"),
    _std("address_line1", S, "Address line 1"),
    _std("address_line2", S, "Address line 2"),
    _std("city", S, "City"),
    _std("state", S, "State or region (ISO 3166-2 code)"),
    _std("postcode", S, "Postal code"),
    _std("country", S, "Country (ISO 3166-1 alpha-2)"),
    _std("language", S, "Language (BCP 47 tag)"),
    _std("partner_id", S, "Partner (publisher) that collected the opt-in"),
    _std("publisher_id", S, "Sub-publisher or placement"),
    _std("creative_id", S, "Creative shown to the consumer"),
    _std("ad_text", S, "Text the consumer agreed to"),
    _std("audience", S, "Audience the consumer belongs to"),
    _std("opted_in_at", T, "When the consumer opted in (ISO 8601, UTC)"),
    _std("ip_address", FieldType.IP_ADDRESS, "Consumer IP address at opt-in"),
    _std("user_agent", S, "Consumer browser user agent"),
    _std("browser", S, "Consumer browser"),
    _std("extra", FieldType.JSON, "All extra attributes as a JSON object"),
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

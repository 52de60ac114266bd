"""The referral's shape, declared once: every column of `referrals`, in the order rows use.

Each column names where its value comes from (a field of the Referral, Consumer or OptIn
message of referral.proto, under the same name, or the database for the stored-only
`seq` and `received_at`), its PostgreSQL type, its type in the layout catalog, and the
longest value ingest accepts. The rest follows from this table: the ingest model's field
lists and limits, the compiled scanner's field numbers and slots (through `configure()`),
the COPY column order, and the layout catalog's standard fields. The SQL files repeat the
column lists, and tests/unit/test_referral_shape.py and the integration tests check them
against this table, against the proto descriptor and against the migrated schema.

Adding a field: the proto, a migration, one row here, and the SQL lists the tests name.
The default layout (layouts/defaults.py) does not follow: advertisers' files gain a
column only by a deliberate change there.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class Source(enum.Enum):
    """Where a column's value comes from: a message of referral.proto, or the database."""

    REFERRAL = "Referral"
    CONSUMER = "Consumer"
    OPT_IN = "OptIn"
    STORED = "stored"  # set when the row is stored (seq, received_at)


class FieldType(enum.Enum):
    """What kind of value a field holds (as text)."""

    STRING = "string"
    INTEGER = "integer"
    DATE = "date"
    TIMESTAMP = "timestamp"
    UUID = "uuid"
    IP_ADDRESS = "ip_address"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class ReferralColumn:
    """One column of `referrals`, and the field of referral.proto it stores."""

    name: str
    source: Source
    sql_type: str  # as pg_type names it (udt_name)
    catalog_type: FieldType
    description: str
    max_length: int = 0  # longest accepted value in code points; 0: no text from the sender
    nullable: bool = False  # an empty value is stored as NULL


_R, _C, _O, _S = Source.REFERRAL, Source.CONSUMER, Source.OPT_IN, Source.STORED
_STR, _TS, _UUID = FieldType.STRING, FieldType.TIMESTAMP, FieldType.UUID
_NULLABLE = True


def _text(name: str, source: Source, max_length: int, description: str) -> ReferralColumn:
    return ReferralColumn(name, source, "text", _STR, description, max_length)


COLUMNS: tuple[ReferralColumn, ...] = (
    ReferralColumn("seq", _S, "int8", FieldType.INTEGER,
                   "Position of the referral in the log (increasing)"),
    ReferralColumn("account_id", _R, "uuid", _UUID, "Advertiser account"),
    ReferralColumn("campaign_id", _R, "uuid", _UUID, "Campaign the consumer opted into"),
    _text("partner_referral_id", _R, 200, "The partner's own id for the referral"),
    ReferralColumn("received_at", _S, "timestamptz", _TS,
                   "When Handoff received the referral (ISO 8601, UTC)"),
    _text("email", _C, 254, "Consumer email address"),
    _text("title", _C, 20, "Title (Mr, Ms, Dr, ...)"),
    _text("first_name", _C, 100, "First name"),
    _text("last_name", _C, 100, "Last name"),
    _text("gender", _C, 20, "Gender as collected (e.g. M, F, X)"),
    ReferralColumn("date_of_birth", _C, "date", FieldType.DATE,
                   "Date of birth (YYYY-MM-DD)", 32, _NULLABLE),
    _text("mobile", _C, 32, "Mobile phone number as collected"),
    _text("phone", _C, 32, "Landline phone number as collected"),
    _text("address_line1", _C, 200, "Address line 1"),
    _text("address_line2", _C, 200, "Address line 2"),
    _text("city", _C, 100, "City"),
    _text("state", _C, 100, "State or region (ISO 3166-2 code)"),
    _text("postcode", _C, 20, "Postal code"),
    _text("country", _C, 2, "Country (ISO 3166-1 alpha-2)"),
    _text("language", _C, 35, "Language (BCP 47 tag)"),
    _text("partner_id", _O, 100, "Partner (publisher) that collected the opt-in"),
    _text("publisher_id", _O, 100, "Sub-publisher or placement"),
    _text("creative_id", _O, 100, "Creative shown to the consumer"),
    _text("ad_text", _O, 5000, "Text the consumer agreed to"),
    _text("audience", _O, 100, "Audience the consumer belongs to"),
    ReferralColumn("opted_in_at", _O, "timestamptz", _TS,
                   "When the consumer opted in (ISO 8601, UTC)"),
    ReferralColumn("ip_address", _O, "inet", FieldType.IP_ADDRESS,
                   "Consumer IP address at opt-in", 45, _NULLABLE),
    _text("user_agent", _O, 1000, "Consumer browser user agent"),
    _text("browser", _O, 100, "Consumer browser"),
    ReferralColumn("extra", _R, "jsonb", FieldType.JSON, "All extra attributes as a JSON object"),
)  # fmt: skip

COLUMNS_BY_NAME: Mapping[str, ReferralColumn] = {c.name: c for c in COLUMNS}
# Every column, in the order the row readers select them (the catalog's ROW_FIELDS).
ROW_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS)
# The columns a sender's referral fills, in the order of COPY text and ReferralRow.
COPY_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.source is not Source.STORED)
# Columns PostgreSQL derives from the others for its own use, never part of a row: the
# SHA-256 of the email's audience key (migration 0015; services/common/audiences).
DERIVED_COLUMNS: tuple[str, ...] = ("email_key",)
# Referral's fields that hold the other two messages, by message name.
NESTED: Mapping[str, Source] = {"consumer": Source.CONSUMER, "opt_in": Source.OPT_IN}


def fields_of(source: Source) -> tuple[str, ...]:
    """The columns filled from one message, in table order."""
    return tuple(c.name for c in COLUMNS if c.source is source)


def max_lengths() -> dict[str, int]:
    """The longest accepted value of each text column a sender fills."""
    return {c.name: c.max_length for c in COLUMNS if c.max_length}

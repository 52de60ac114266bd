"""Plain values the ingest logic works on: referrals in, results out, accounts, campaigns."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import NamedTuple
from uuid import UUID

from services.common.errors import FieldProblem
from services.common.referral_shape import COPY_COLUMNS, Source, fields_of

# Consumer and opt-in fields, in the order of the referrals table (referral_shape.py).
CONSUMER_FIELDS: tuple[str, ...] = fields_of(Source.CONSUMER)
OPT_IN_FIELDS: tuple[str, ...] = fields_of(Source.OPT_IN)


@dataclass(frozen=True, slots=True)
class ReferralInput:
    """A referral as received: every text field a string ('' when absent)."""

    account_id: str
    campaign_id: str
    partner_referral_id: str
    consumer: dict[str, str]
    opt_in: dict[str, str]
    opted_in_at: datetime | None
    extra: dict[str, str] = field(default_factory=dict)
    # Problems found while decoding the wire message (e.g. an impossible timestamp).
    decode_problems: tuple[FieldProblem, ...] = ()


@dataclass(frozen=True, slots=True)
class ValidReferral:
    """A referral that passed validation, with typed values ready to store."""

    account_id: UUID
    campaign_id: UUID
    partner_referral_id: str
    consumer: dict[str, str]
    date_of_birth: date | None
    opt_in: dict[str, str]
    opted_in_at: datetime
    ip_address: str | None
    extra: dict[str, str]


class ReferralRow(NamedTuple):
    """A valid referral as the text of each stored column (None for NULL), in COPY order.

    Spelled out for the type checker; tests/unit/test_referral_shape.py checks that its
    fields are referral_shape.COPY_COLUMNS.
    """

    account_id: str
    campaign_id: str
    partner_referral_id: str
    email: str
    title: str
    first_name: str
    last_name: str
    gender: str
    date_of_birth: str | None
    mobile: str
    phone: str
    address_line1: str
    address_line2: str
    city: str
    state: str
    postcode: str
    country: str
    language: str
    partner_id: str
    publisher_id: str
    creative_id: str
    ad_text: str
    audience: str
    opted_in_at: str
    ip_address: str | None
    user_agent: str
    browser: str
    extra: str  # JSON object


REFERRAL_COLUMNS: tuple[str, ...] = COPY_COLUMNS


class RowStatus(enum.Enum):
    """What happened to one submitted referral."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"

    # Members are singletons: hash by identity in C, not by name in Python (Enum's
    # default), since every row's status is looked up in a dict or two.
    __hash__ = object.__hash__


@dataclass(slots=True)
class RowResult:
    """The outcome for the referral at `index` of a request.

    Not frozen: one is made per row, and frozen dataclasses are several times slower to build.
    """

    index: int
    status: RowStatus
    partner_referral_id: str
    seq: int = 0
    problems: tuple[FieldProblem, ...] = ()


class StoredRow(NamedTuple):
    """What the store answers for one valid referral: its seq and whether it existed."""

    seq: int
    duplicate: bool


class Status(enum.Enum):
    """Lifecycle of accounts and campaigns."""

    ACTIVE = "active"
    ARCHIVED = "archived"


@dataclass(frozen=True, slots=True)
class Account:
    """An advertiser."""

    id: UUID
    name: str
    time_zone: str
    status: Status
    created_at: datetime
    archived_at: datetime | None


@dataclass(frozen=True, slots=True)
class Campaign:
    """One campaign of an account."""

    id: UUID
    account_id: UUID
    name: str
    status: Status
    created_at: datetime
    archived_at: datetime | None

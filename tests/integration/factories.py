"""Builders for ingest messages used by the integration tests."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from services.common.gen.handoff.ingest.v1 import referral_pb2
from services.ingest.model import ReferralRow, ValidReferral
from services.ingest.server import referral_input
from services.ingest.validation import referral_row, validate_referral

OPTED_IN_AT = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

CONSUMER: dict[str, str] = {
    "email": "ada@example.com",
    "title": "Dr",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "gender": "F",
    "date_of_birth": "1985-12-10",
    "mobile": "+44 7700 900123",
    "phone": "020 7946 0018",
    "address_line1": "12 Analytical Row",
    "address_line2": "Flat 3",
    "city": "London",
    "state": "ENG",
    "postcode": "N1 9GU",
    "country": "GB",
    "language": "en-GB",
}
OPT_IN: dict[str, str] = {
    "partner_id": "partner-7",
    "publisher_id": "pub-42",
    "creative_id": "creative-9",
    "ad_text": "Yes, send me offers.\nUnsubscribe at any time.",
    "audience": "engineers",
    "ip_address": "203.0.113.7",
    "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
    "browser": "Firefox",
}


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp for an aware datetime."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def referral(
    account_id: str,
    campaign_id: str,
    partner_referral_id: str,
    *,
    consumer: Mapping[str, str] | None = None,
    opt_in: Mapping[str, str] | None = None,
    opted_in_at: datetime | None = OPTED_IN_AT,
    extra: Mapping[str, str] | None = None,
) -> referral_pb2.Referral:
    """A valid, fully filled Referral; `consumer` and `opt_in` override single fields."""
    message = referral_pb2.Referral(
        account_id=account_id,
        campaign_id=campaign_id,
        partner_referral_id=partner_referral_id,
        extra=dict(extra if extra is not None else {"favourite_colour": "teal"}),
    )
    for name, value in {**CONSUMER, **(consumer or {})}.items():
        setattr(message.consumer, name, value)
    for name, value in {**OPT_IN, **(opt_in or {})}.items():
        setattr(message.opt_in, name, value)
    if opted_in_at is not None:
        message.opt_in.opted_in_at.CopyFrom(timestamp(opted_in_at))
    return message


def valid_referral(account_id: str, campaign_id: str, partner_referral_id: str) -> ReferralRow:
    """What the store receives for `referral(...)`, for tests that drive the store directly."""
    outcome = validate_referral(
        referral_input(referral(account_id, campaign_id, partner_referral_id)), datetime.now(UTC)
    )
    assert isinstance(outcome, ValidReferral), outcome
    return referral_row(outcome)

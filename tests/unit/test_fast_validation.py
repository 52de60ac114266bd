"""The fast path of validation agrees with the full validator on every row it accepts."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from services.common.gen.handoff.ingest.v1 import referral_pb2
from services.common.referral_shape import COLUMNS_BY_NAME, Source, fields_of
from services.demo_data import synthetic_referrals
from services.ingest.fast_validation import Clock, canonical_uuid
from services.ingest.model import ReferralInput, ReferralRow, ValidReferral
from services.ingest.server import candidate, candidates, referral_input
from services.ingest.validation import referral_row, validate_referral

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ACCOUNT = "6f1c0c36-7f0a-4c8e-9a59-6f3c1b1f4e10"
CAMPAIGN = "6f1c0c36-7f0a-4c8e-9a59-6f3c1b1f4e11"

# Values that are valid, invalid, or valid only after normalising, per field.
TRICKY: dict[str, list[str]] = {
    "consumer.email": ["", " a@example.com ", "a@b", "A.B+c@Example.COM", "x\n@example.com"],
    "consumer.country": ["", "us", "US", "ZZ", "GB", "u"],
    "consumer.state": ["", "CA", "ca", "US-CA", "GB-ENG", "California", "ZZ", "Zug", "Goa"],
    "consumer.date_of_birth": ["", "1990-02-03", "2023-02-30", "1899-12-31", "2990-01-01",
                               "1990-2-3", "١٩٩٠-٠٢-٠٣", " 1990-02-03 "],
    "consumer.mobile": ["", "+1 202 555 0100", "12345", "phone", "(020) 7946 0000"],
    "consumer.postcode": ["", "SW1A 1AA", "-123", "90210"],
    "consumer.language": ["", "en", "en-GB", "english!", "x"],
    "consumer.first_name": ["", "  Ann  ", "Zoë", "a" * 101, "tab\there", "\u0085"],
    "opt_in.ad_text": ["", "line one\nline two", " padded ", "bell\x07", "x" * 5001],
    "opt_in.ip_address": ["", "192.0.2.1", "010.0.0.1", "2001:DB8::1", "fe80::1%eth0", "999.1.1.1"],
    "opt_in.partner_id": ["", " p ", "p\x00"],
    "partner_referral_id": ["", " id ", "id\n", "x" * 201],
    "account_id": [ACCOUNT, ACCOUNT.upper(), "{" + ACCOUNT + "}", "nope", ""],
}  # fmt: skip


def _generic(name: str) -> list[str]:
    """Valid, invalid and normalised values for a plain text field."""
    limit = COLUMNS_BY_NAME[name].max_length
    return ["", f"  {name} ", "Zoë", "x" * limit, "y" * (limit + 1), "tab\there", "a\u0085b"]


# Every other text field of the shape gets the generic cases: none goes unmutated.
for _source, _prefix in ((Source.CONSUMER, "consumer."), (Source.OPT_IN, "opt_in.")):
    for _name in fields_of(_source):
        if COLUMNS_BY_NAME[_name].sql_type == "text":
            TRICKY.setdefault(_prefix + _name, _generic(_name))
TRICKY.setdefault("campaign_id", [CAMPAIGN, CAMPAIGN.upper(), " " + CAMPAIGN, "", "nope"])


def _mutate(message: referral_pb2.Referral, rng: random.Random) -> referral_pb2.Referral:
    mutated = referral_pb2.Referral()
    mutated.CopyFrom(message)
    for path in rng.sample(sorted(TRICKY), k=rng.randint(1, 3)):
        value = rng.choice(TRICKY[path])
        if "." in path:
            part, name = path.split(".")
            setattr(getattr(mutated, part), name, value)
        else:
            setattr(mutated, path, value)
    if rng.random() < 0.1:
        mutated.opt_in.opted_in_at.seconds = rng.choice([0, 946684799, 4102444800, 2**40])
    if rng.random() < 0.1:
        mutated.extra[rng.choice(["ok_key", "bad key", "k" * 65])] = rng.choice(
            ["v", "a\nb", "\x01"]
        )
    return mutated


def test_clean_synthetic_rows_take_the_fast_path() -> None:
    messages = synthetic_referrals(ACCOUNT, CAMPAIGN, 500, seed=5)
    fast = [candidate(m, Clock.at(NOW)) for m in messages]
    assert sum(isinstance(row, ReferralRow) for row in fast) == len(messages)


@pytest.mark.parametrize("seed", range(8))
def test_every_fast_row_equals_what_full_validation_stores(seed: int) -> None:
    rng = random.Random(seed)
    messages = [_mutate(m, rng) for m in synthetic_referrals(ACCOUNT, CAMPAIGN, 400, seed=seed)]
    fast_rows = 0
    batch = candidates(messages, Clock.at(NOW))
    for message, quick in zip(messages, batch, strict=True):
        assert candidate(message, Clock.at(NOW)) == quick  # alone or in a batch, the same
        full = validate_referral(referral_input(message), NOW)
        if isinstance(quick, ReferralInput):
            continue  # deferred: the full validator decides, nothing to compare
        fast_rows += 1
        assert isinstance(full, ValidReferral), (message, full)
        assert referral_row(full) == quick
    assert fast_rows > 50  # the comparison really ran on many rows


def test_canonical_uuid_accepts_only_the_canonical_spelling() -> None:
    assert canonical_uuid(ACCOUNT) == ACCOUNT
    assert canonical_uuid(ACCOUNT.upper()) is None
    assert canonical_uuid("nope") is None

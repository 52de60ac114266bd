"""The synthetic referrals of the demo and the benchmarks: deterministic, valid, varied."""

from __future__ import annotations

from datetime import UTC, datetime

from services.demo_data import synthetic_referral, synthetic_referrals
from services.ingest.model import ValidReferral
from services.ingest.server import referral_input
from services.ingest.validation import validate_referral

ACCOUNT = "0de30000-0000-4000-8000-00000000000a"
CAMPAIGN = "0de30000-0000-4000-8000-00000000000b"
RESERVED_DOMAINS = ("example.com", "example.net", "example.org")


def test_same_arguments_give_the_same_referrals() -> None:
    first = synthetic_referrals(ACCOUNT, CAMPAIGN, 50, seed=3)
    again = synthetic_referrals(ACCOUNT, CAMPAIGN, 50, seed=3)

    assert [r.SerializeToString(deterministic=True) for r in first] == [
        r.SerializeToString(deterministic=True) for r in again
    ]


def test_other_seeds_give_other_people_and_other_ids() -> None:
    one = synthetic_referrals(ACCOUNT, CAMPAIGN, 20, seed=1)
    two = synthetic_referrals(ACCOUNT, CAMPAIGN, 20, seed=2)

    assert {r.partner_referral_id for r in one}.isdisjoint(r.partner_referral_id for r in two)
    assert [r.consumer.email for r in one] != [r.consumer.email for r in two]


def test_a_slice_starting_later_continues_the_same_sequence() -> None:
    whole = synthetic_referrals(ACCOUNT, CAMPAIGN, 30, seed=5)
    tail = synthetic_referrals(ACCOUNT, CAMPAIGN, 10, seed=5, start=20)

    assert tail == whole[20:]
    assert synthetic_referral(ACCOUNT, CAMPAIGN, 25, seed=5) == whole[25]


def test_every_referral_passes_ingest_validation() -> None:
    now = datetime.now(UTC)
    referrals = synthetic_referrals(ACCOUNT, CAMPAIGN, 3000, seed=2024)

    problems = {
        r.partner_referral_id: result
        for r in referrals
        if not isinstance(result := validate_referral(referral_input(r), now), ValidReferral)
    }

    assert problems == {}


def test_referrals_are_varied_and_fictional() -> None:
    referrals = synthetic_referrals(ACCOUNT, CAMPAIGN, 1000, seed=9)

    assert len({r.partner_referral_id for r in referrals}) == 1000
    assert len({r.consumer.email for r in referrals}) == 1000
    assert len({r.consumer.country for r in referrals}) >= 8
    assert len({(r.consumer.country, r.consumer.state) for r in referrals}) >= 15
    assert len({r.consumer.first_name for r in referrals}) >= 30
    assert all(r.consumer.email.endswith(RESERVED_DOMAINS) for r in referrals)
    assert all(
        r.opt_in.ip_address.startswith(("192.0.2.", "198.51.100.", "203.0.113.", "2001:db8:"))
        for r in referrals
    )
    assert all(r.account_id == ACCOUNT and r.campaign_id == CAMPAIGN for r in referrals)

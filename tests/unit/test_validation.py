"""validate_referral, check_batch_size and first_occurrences: every rule, no server."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from services.common.errors import FieldProblem
from services.ingest.model import ReferralInput, ValidReferral
from services.ingest.validation import (
    MAX_BATCH_SIZE,
    MAX_EXTRA_KEYS,
    MAX_EXTRA_VALUE,
    MAX_LENGTHS,
    check_batch_size,
    first_occurrences,
    validate_referral,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ACCOUNT = str(uuid.UUID(int=1))
CAMPAIGN = str(uuid.UUID(int=2))

CONSUMER = {
    "email": "ada@example.com",
    "title": "Dr",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "gender": "F",
    "date_of_birth": "1985-12-10",
    "mobile": "+44 7700 900123",
    "phone": "(020) 7946-0018",
    "address_line1": "12 Analytical Row",
    "address_line2": "",
    "city": "London",
    "state": "",
    "postcode": "N1 9GU",
    "country": "GB",
    "language": "en-GB",
}
OPT_IN = {
    "partner_id": "partner-7",
    "publisher_id": "pub-42",
    "creative_id": "c-9",
    "ad_text": "Yes, send me offers.",
    "audience": "engineers",
    "ip_address": "203.0.113.7",
    "user_agent": "Mozilla/5.0",
    "browser": "Firefox",
}


def make_input(
    *,
    consumer: dict[str, str] | None = None,
    opt_in: dict[str, str] | None = None,
    extra: dict[str, str] | None = None,
    **fields: Any,
) -> ReferralInput:
    """A valid ReferralInput with the given fields replaced."""
    values: dict[str, Any] = {
        "account_id": ACCOUNT,
        "campaign_id": CAMPAIGN,
        "partner_referral_id": "ref-1",
        "consumer": {**CONSUMER, **(consumer or {})},
        "opt_in": {**OPT_IN, **(opt_in or {})},
        "opted_in_at": NOW - timedelta(minutes=10),
        "extra": extra if extra is not None else {"answer": "yes"},
    }
    values.update(fields)
    return ReferralInput(**values)


def valid(referral: ReferralInput) -> ValidReferral:
    outcome = validate_referral(referral, NOW)
    assert isinstance(outcome, ValidReferral), outcome
    return outcome


def problems(referral: ReferralInput) -> list[FieldProblem]:
    outcome = validate_referral(referral, NOW)
    assert isinstance(outcome, list), "expected the referral to be refused"
    return outcome


def codes(referral: ReferralInput) -> list[tuple[str, str]]:
    """(field, code) of every problem, sorted."""
    return sorted((p.field, p.code) for p in problems(referral))


# --- a valid referral -------------------------------------------------------------------


def test_valid_referral_comes_back_typed() -> None:
    result = valid(make_input())

    assert result.account_id == uuid.UUID(ACCOUNT)
    assert result.campaign_id == uuid.UUID(CAMPAIGN)
    assert result.partner_referral_id == "ref-1"
    assert result.date_of_birth == date(1985, 12, 10)
    assert result.ip_address == "203.0.113.7"
    assert result.consumer["email"] == "ada@example.com"
    assert result.extra == {"answer": "yes"}


def test_surrounding_spaces_are_trimmed_from_single_line_fields() -> None:
    result = valid(
        make_input(
            partner_referral_id="  ref-1 ",
            consumer={"first_name": "  Ada ", "email": " ada@example.com\t"},
        )
    )

    assert result.partner_referral_id == "ref-1"
    assert result.consumer["first_name"] == "Ada"
    assert result.consumer["email"] == "ada@example.com"


def test_only_email_partner_and_opt_in_time_are_needed() -> None:
    blank_consumer = dict.fromkeys(CONSUMER, "") | {"email": "a@b.co"}
    blank_opt_in = dict.fromkeys(OPT_IN, "") | {"partner_id": "p"}

    result = valid(make_input(consumer=blank_consumer, opt_in=blank_opt_in, extra={}))

    assert result.date_of_birth is None
    assert result.ip_address is None


# --- required fields ----------------------------------------------------------------------


def test_every_missing_required_field_is_reported_at_once() -> None:
    referral = ReferralInput(
        account_id="",
        campaign_id="",
        partner_referral_id="   ",
        consumer={},
        opt_in={},
        opted_in_at=None,
    )

    assert codes(referral) == [
        ("account_id", "REQUIRED"),
        ("campaign_id", "REQUIRED"),
        ("consumer.email", "REQUIRED"),
        ("opt_in.opted_in_at", "REQUIRED"),
        ("opt_in.partner_id", "REQUIRED"),
        ("partner_referral_id", "REQUIRED"),
    ]


def test_blank_email_is_required_not_malformed() -> None:
    assert codes(make_input(consumer={"email": "   "})) == [("consumer.email", "REQUIRED")]


@pytest.mark.parametrize("name", ["account_id", "campaign_id"])
def test_ids_must_be_uuids(name: str) -> None:
    fields: dict[str, Any] = {name: "campaign-7"}
    found = problems(replace(make_input(), **fields))

    assert [(p.field, p.code) for p in found] == [(name, "INVALID_FORMAT")]
    assert "UUID" in found[0].message


def test_many_problems_are_all_reported_not_just_the_first() -> None:
    referral = make_input(
        account_id="nope",
        consumer={
            "email": "nope",
            "date_of_birth": "1985-13-01",
            "country": "ZZ",
            "first_name": "x" * 101,
            "language": "english!",
        },
        opt_in={"ip_address": "1.2.3", "browser": "Fire\nfox"},
        opted_in_at=NOW + timedelta(days=1),
        extra={"bad key": "v"},
    )

    assert codes(referral) == [
        ("account_id", "INVALID_FORMAT"),
        ("consumer.country", "UNKNOWN_CODE"),
        ("consumer.date_of_birth", "INVALID_DATE"),
        ("consumer.email", "INVALID_FORMAT"),
        ("consumer.first_name", "TOO_LONG"),
        ("consumer.language", "INVALID_FORMAT"),
        ("extra.bad key", "INVALID_KEY"),
        ("opt_in.browser", "CONTROL_CHARACTER"),
        ("opt_in.ip_address", "INVALID_FORMAT"),
        ("opt_in.opted_in_at", "OUT_OF_RANGE"),
    ]


# --- email ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "email",
    ["ada@example.com", "ada.lovelace+news@mail.example.co.uk", "o'brien@example.ie", "A@B.IO"],
)
def test_plausible_emails_pass(email: str) -> None:
    assert valid(make_input(consumer={"email": email})).consumer["email"] == email


@pytest.mark.parametrize(
    "email",
    [
        "ada",
        "ada@",
        "@example.com",
        "ada@example",
        "ada@@example.com",
        "ada lovelace@example.com",
        "ada@exa mple.com",
        "ada@example.c",
        "ada@-example.com",
        '"ada"@example.com',
    ],
)
def test_malformed_emails_are_refused(email: str) -> None:
    assert codes(make_input(consumer={"email": email})) == [("consumer.email", "INVALID_FORMAT")]


# --- date of birth --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["10/12/1985", "1985-1-2", "19851210", "1985-12-10T00:00", "٢٠٢٠-01-01"]
)
def test_date_of_birth_must_be_yyyy_mm_dd(value: str) -> None:
    found = problems(make_input(consumer={"date_of_birth": value}))

    assert [(p.field, p.code) for p in found] == [("consumer.date_of_birth", "INVALID_FORMAT")]
    assert "YYYY-MM-DD" in found[0].message


@pytest.mark.parametrize("value", ["2023-02-30", "2023-02-29", "1985-13-01", "1985-00-10"])
def test_date_of_birth_must_be_a_calendar_date(value: str) -> None:
    found = problems(make_input(consumer={"date_of_birth": value}))

    assert [(p.field, p.code) for p in found] == [("consumer.date_of_birth", "INVALID_DATE")]
    assert value in found[0].message


def test_leap_day_is_a_calendar_date() -> None:
    assert valid(make_input(consumer={"date_of_birth": "2024-02-29"})).date_of_birth == date(
        2024, 2, 29
    )


def test_date_of_birth_in_the_future_is_refused() -> None:
    tomorrow = (NOW.date() + timedelta(days=1)).isoformat()

    found = problems(make_input(consumer={"date_of_birth": tomorrow}))

    assert [(p.field, p.code) for p in found] == [("consumer.date_of_birth", "OUT_OF_RANGE")]
    assert "future" in found[0].message


def test_date_of_birth_today_is_accepted() -> None:
    assert valid(make_input(consumer={"date_of_birth": NOW.date().isoformat()})).date_of_birth


def test_date_of_birth_before_1900_is_refused() -> None:
    found = problems(make_input(consumer={"date_of_birth": "1899-12-31"}))

    assert [(p.field, p.code) for p in found] == [("consumer.date_of_birth", "OUT_OF_RANGE")]
    assert "1900" in found[0].message


def test_date_of_birth_in_1900_is_accepted() -> None:
    assert valid(make_input(consumer={"date_of_birth": "1900-01-01"})).date_of_birth == date(
        1900, 1, 1
    )


# --- lengths -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "limit"), [(n, MAX_LENGTHS[n]) for n in ("first_name", "city", "address_line1")]
)
def test_consumer_field_at_its_limit_passes_and_one_more_is_too_long(name: str, limit: int) -> None:
    assert valid(make_input(consumer={name: "a" * limit})).consumer[name] == "a" * limit

    found = problems(make_input(consumer={name: "a" * (limit + 1)}))

    assert [(p.field, p.code) for p in found] == [(f"consumer.{name}", "TOO_LONG")]
    assert f"at most {limit} characters" in found[0].message
    assert str(limit + 1) in found[0].message


def test_long_email_is_too_long_and_says_the_limit() -> None:
    email = "a" * 250 + "@x.io"

    found = problems(make_input(consumer={"email": email}))

    assert [(p.field, p.code) for p in found] == [("consumer.email", "TOO_LONG")]
    assert "254" in found[0].message


def test_long_partner_referral_id_is_too_long() -> None:
    found = problems(make_input(partner_referral_id="r" * 201))

    assert [(p.field, p.code) for p in found] == [("partner_referral_id", "TOO_LONG")]
    assert "200" in found[0].message


def test_long_ad_text_is_too_long() -> None:
    found = problems(make_input(opt_in={"ad_text": "x" * 5001}))

    assert [(p.field, p.code) for p in found] == [("opt_in.ad_text", "TOO_LONG")]
    assert "5000" in found[0].message


def test_length_counts_characters_not_bytes() -> None:
    name = "é" * MAX_LENGTHS["first_name"]  # 200 bytes in UTF-8

    assert valid(make_input(consumer={"first_name": name})).consumer["first_name"] == name


# --- control characters ----------------------------------------------------------------


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85"])
def test_single_line_fields_refuse_control_characters(char: str) -> None:
    found = problems(make_input(consumer={"last_name": f"Love{char}lace"}))

    assert [(p.field, p.code) for p in found] == [("consumer.last_name", "CONTROL_CHARACTER")]
    assert f"U+{ord(char):04X}" in found[0].message


def test_partner_referral_id_refuses_a_newline() -> None:
    assert codes(make_input(partner_referral_id="ref\n1")) == [
        ("partner_referral_id", "CONTROL_CHARACTER")
    ]


def test_opt_in_single_line_field_refuses_a_newline() -> None:
    assert codes(make_input(opt_in={"user_agent": "Mozilla\n5.0"})) == [
        ("opt_in.user_agent", "CONTROL_CHARACTER")
    ]


def test_ad_text_keeps_new_lines_and_tabs_as_sent() -> None:
    text = "  Line one\r\n\tLine two\n"

    assert valid(make_input(opt_in={"ad_text": text})).opt_in["ad_text"] == text


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f"])
def test_ad_text_still_refuses_other_control_characters(char: str) -> None:
    assert codes(make_input(opt_in={"ad_text": f"ok{char}"})) == [
        ("opt_in.ad_text", "CONTROL_CHARACTER")
    ]


# --- country and state ---------------------------------------------------------------------


def test_unknown_country_is_unknown_code() -> None:
    found = problems(make_input(consumer={"country": "XX"}))

    assert [(p.field, p.code) for p in found] == [("consumer.country", "UNKNOWN_CODE")]
    assert "ISO 3166-1" in found[0].message


def test_three_letter_country_is_refused() -> None:
    assert codes(make_input(consumer={"country": "USA"})) == [("consumer.country", "TOO_LONG")]


def test_lower_case_country_is_normalised_to_upper_case() -> None:
    assert valid(make_input(consumer={"country": "gb"})).consumer["country"] == "GB"


def test_us_state_code_passes() -> None:
    result = valid(make_input(consumer={"country": "US", "state": "CA"}))

    assert (result.consumer["country"], result.consumer["state"]) == ("US", "CA")


def test_unknown_us_state_code_is_unknown_code() -> None:
    found = problems(make_input(consumer={"country": "US", "state": "ZZ"}))

    assert [(p.field, p.code) for p in found] == [("consumer.state", "UNKNOWN_CODE")]
    assert "US" in found[0].message


def test_state_in_country_prefixed_form_is_normalised_to_the_code() -> None:
    result = valid(make_input(consumer={"country": "us", "state": "us-ca"}))

    assert (result.consumer["country"], result.consumer["state"]) == ("US", "CA")


def test_state_prefixed_with_another_country_is_refused() -> None:
    found = problems(make_input(consumer={"country": "GB", "state": "US-CA"}))

    assert [(p.field, p.code) for p in found] == [("consumer.state", "UNKNOWN_CODE")]


@pytest.mark.parametrize(
    ("country", "state"), [("US", "California"), ("US", "New York"), ("CH", "Zug"), ("IN", "Goa")]
)
def test_state_given_as_a_name_passes_unchanged(country: str, state: str) -> None:
    assert valid(make_input(consumer={"country": country, "state": state})).consumer["state"] == (
        state
    )


def test_state_is_not_checked_without_a_country() -> None:
    assert valid(make_input(consumer={"country": "", "state": "ZZ"})).consumer["state"] == "ZZ"


# --- phone, postcode, language ------------------------------------------------------------


@pytest.mark.parametrize("number", ["+1 (415) 555-0100", "07700900123", "+44.20.7946.0018"])
def test_phone_numbers_pass(number: str) -> None:
    assert valid(make_input(consumer={"mobile": number, "phone": number}))


@pytest.mark.parametrize("number", ["12345", "call me", "+1-800-FLOWERS", "++44 20 7946 0018"])
def test_malformed_phone_numbers_are_refused(number: str) -> None:
    assert codes(make_input(consumer={"mobile": number, "phone": number})) == [
        ("consumer.mobile", "INVALID_FORMAT"),
        ("consumer.phone", "INVALID_FORMAT"),
    ]


@pytest.mark.parametrize("postcode", ["N1 9GU", "90210", "1010-123", "k1a0b1"])
def test_postcodes_pass(postcode: str) -> None:
    assert valid(make_input(consumer={"postcode": postcode})).consumer["postcode"] == postcode


@pytest.mark.parametrize("postcode", ["-123", "N1/9GU", "#1", "N1_9GU"])
def test_malformed_postcodes_are_refused(postcode: str) -> None:
    assert codes(make_input(consumer={"postcode": postcode})) == [
        ("consumer.postcode", "INVALID_FORMAT")
    ]


@pytest.mark.parametrize("tag", ["en", "en-GB", "zh-Hant-TW", "fil", "de-CH-1996"])
def test_language_tags_pass(tag: str) -> None:
    assert valid(make_input(consumer={"language": tag})).consumer["language"] == tag


@pytest.mark.parametrize("tag", ["e", "english", "en_GB", "en-", "12"])
def test_malformed_language_tags_are_refused(tag: str) -> None:
    assert codes(make_input(consumer={"language": tag})) == [
        ("consumer.language", "INVALID_FORMAT")
    ]


# --- ip address -------------------------------------------------------------------------


def test_ipv4_address_passes() -> None:
    assert valid(make_input(opt_in={"ip_address": "198.51.100.23"})).ip_address == "198.51.100.23"


def test_ipv6_address_passes_in_canonical_form() -> None:
    assert valid(make_input(opt_in={"ip_address": "2001:DB8:0::1"})).ip_address == "2001:db8::1"


@pytest.mark.parametrize(
    "address", ["256.1.1.1", "1.2.3", "01.2.3.4", "2001:db8::g", "localhost", "fe80::1%eth0"]
)
def test_invalid_ip_addresses_are_refused(address: str) -> None:
    assert codes(make_input(opt_in={"ip_address": address})) == [
        ("opt_in.ip_address", "INVALID_FORMAT")
    ]


# --- opt-in time ------------------------------------------------------------------------


def test_opt_in_time_is_required() -> None:
    assert codes(make_input(opted_in_at=None)) == [("opt_in.opted_in_at", "REQUIRED")]


def test_opt_in_time_in_the_future_is_refused() -> None:
    found = problems(make_input(opted_in_at=NOW + timedelta(minutes=6)))

    assert [(p.field, p.code) for p in found] == [("opt_in.opted_in_at", "OUT_OF_RANGE")]
    assert "future" in found[0].message


def test_opt_in_time_slightly_ahead_is_tolerated_as_clock_skew() -> None:
    assert valid(make_input(opted_in_at=NOW + timedelta(minutes=4)))


def test_opt_in_time_before_2000_is_refused() -> None:
    found = problems(make_input(opted_in_at=datetime(1999, 12, 31, 23, 59, tzinfo=UTC)))

    assert [(p.field, p.code) for p in found] == [("opt_in.opted_in_at", "OUT_OF_RANGE")]
    assert "2000" in found[0].message


def test_partner_id_is_required() -> None:
    assert codes(make_input(opt_in={"partner_id": "  "})) == [("opt_in.partner_id", "REQUIRED")]


# --- extra attributes ---------------------------------------------------------------------


def test_extra_attributes_pass_as_sent() -> None:
    extra = {"q1.answer": "Yes\nand more", "utm_source": "newsletter", "x-y": ""}

    assert valid(make_input(extra=extra)).extra == extra


def test_extra_at_its_key_limit_passes_and_one_more_is_too_many() -> None:
    assert valid(make_input(extra={f"k{i}": "v" for i in range(MAX_EXTRA_KEYS)}))

    found = problems(make_input(extra={f"k{i}": "v" for i in range(MAX_EXTRA_KEYS + 1)}))

    assert [(p.field, p.code) for p in found] == [("extra", "TOO_MANY")]
    assert str(MAX_EXTRA_KEYS) in found[0].message


def test_extra_value_over_its_limit_is_too_long() -> None:
    found = problems(make_input(extra={"note": "x" * (MAX_EXTRA_VALUE + 1)}))

    assert [(p.field, p.code) for p in found] == [("extra.note", "TOO_LONG")]
    assert str(MAX_EXTRA_VALUE) in found[0].message


@pytest.mark.parametrize("key", ["", "1st", "has space", "a" * 65, "bad\n", "é"])
def test_malformed_extra_keys_are_refused(key: str) -> None:
    found = problems(make_input(extra={key: "v"}))

    assert [p.code for p in found] == ["INVALID_KEY"]
    assert found[0].field.startswith("extra.")


def test_extra_value_refuses_nul_but_keeps_new_lines() -> None:
    assert codes(make_input(extra={"note": "a\x00b"})) == [("extra.note", "CONTROL_CHARACTER")]


# --- batches ---------------------------------------------------------------------------------


def test_empty_batch_is_refused() -> None:
    problem = check_batch_size(0)

    assert problem is not None
    assert (problem.field, problem.code) == ("referrals", "EMPTY")


def test_batch_at_the_limit_is_accepted() -> None:
    assert check_batch_size(1) is None
    assert check_batch_size(MAX_BATCH_SIZE) is None


def test_batch_over_the_limit_names_the_limit() -> None:
    problem = check_batch_size(MAX_BATCH_SIZE + 1)

    assert problem is not None
    assert (problem.field, problem.code) == ("referrals", "TOO_MANY")
    assert "10000" in problem.message
    assert "10001" in problem.message


def test_first_occurrences_maps_each_repeat_to_its_first_row() -> None:
    keys = [("a", "1"), ("a", "2"), ("b", "1"), ("a", "1"), ("a", "2"), ("a", "1")]

    assert first_occurrences(keys) == {3: 0, 4: 1, 5: 0}


def test_first_occurrences_ignores_empty_partner_ids_and_other_accounts() -> None:
    assert first_occurrences([("a", ""), ("a", ""), ("b", "x"), ("c", "x")]) == {}


def test_decode_problem_is_reported_instead_of_required() -> None:
    broken = FieldProblem("opt_in.opted_in_at", "INVALID_FORMAT", "is not a valid timestamp")

    assert codes(make_input(opted_in_at=None, decode_problems=(broken,))) == [
        ("opt_in.opted_in_at", "INVALID_FORMAT")
    ]

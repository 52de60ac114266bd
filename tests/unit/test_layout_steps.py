"""Each custom-field step on ordinary, empty, missing and non-ASCII values."""

from __future__ import annotations

import hashlib

import pytest

from services.common.layouts.model import (
    CaseMode,
    CaseStep,
    ConstantStep,
    CustomFieldSpec,
    DefaultStep,
    HashAlgorithm,
    HashStep,
    MapEntry,
    MatchMode,
    PhoneFormat,
    PhoneStep,
    TemplateStep,
    TrimStep,
    TruncateStep,
    ValueMapStep,
)
from services.common.layouts.steps import title_case, truncate
from tests.unit.layout_support import run_steps, value_of

GENDER = ValueMapStep(
    (MapEntry("M", "Male"), MapEntry("F", "Female")),
    empty_value="Unknown",
    default_value="Other",
)


@pytest.mark.parametrize(
    ("gender", "expected"),
    [("M", "Male"), ("F", "Female"), (" M ", "Male"), ("", "Unknown"), ("X", "Other")],
)
def test_value_map_equals_uses_empty_and_default_values(gender: str, expected: str) -> None:
    assert value_of(GENDER, "gender", gender=gender) == expected


def test_value_map_is_case_sensitive_unless_asked() -> None:
    assert value_of(GENDER, "gender", gender="m") == "Other"
    insensitive = ValueMapStep((MapEntry("M", "Male"),), case_insensitive=True)
    assert value_of(insensitive, "gender", gender="m") == "Male"


def test_value_map_without_default_passes_unmatched_and_empty_input_through() -> None:
    step = ValueMapStep((MapEntry("M", "Male"),))
    assert value_of(step, "gender", gender="X") == "X"
    assert value_of(step, "gender", gender="") == ""


def test_value_map_contains_takes_the_first_matching_entry() -> None:
    step = ValueMapStep(
        (MapEntry("gmail", "Google"), MapEntry("mail", "Other mail")),
        match_mode=MatchMode.CONTAINS,
        case_insensitive=True,
        default_value="Unknown",
    )
    assert value_of(step, "email", email="Jo@GMAIL.com") == "Google"
    assert value_of(step, "email", email="jo@hotmail.com") == "Other mail"
    assert value_of(step, "email", email="jo@example.com") == "Unknown"


def test_value_map_case_insensitive_matches_non_ascii_by_casefolding() -> None:
    step = ValueMapStep((MapEntry("STRASSE", "street"),), case_insensitive=True)
    assert value_of(step, "city", city="straße") == "street"


def test_template_joins_fields_and_the_current_value() -> None:
    template = TemplateStep("{first_name} {last_name}")
    assert value_of(template, first_name="Zoë", last_name="Ørsted") == "Zoë Ørsted"
    greeting = TemplateStep("Dear {value} ({title})")
    assert value_of(greeting, "first_name", first_name="Jo", title="Dr") == "Dear Jo (Dr)"


def test_template_with_missing_fields_leaves_them_empty_and_keeps_literal_braces() -> None:
    template = TemplateStep("{{{first_name}}}|{last_name}|{extra.q1}")
    assert value_of(template, first_name="Jo") == "{Jo}||"


def test_template_reads_extra_attributes_and_other_custom_fields() -> None:
    full = CustomFieldSpec("full_name", "", (TemplateStep("{first_name} {last_name}"),))
    value, _ = run_steps(
        TemplateStep("{full_name} answered {extra.q1}"),
        others={"full_name": full},
        first_name="Jo",
        last_name="Li",
        extra={"q1": "yes"},
    )
    assert value == "Jo Li answered yes"


def test_template_reads_timestamps_in_their_rendered_iso_form() -> None:
    assert value_of(TemplateStep("at {opted_in_at}")) == "at 2024-07-01T12:30:00Z"


@pytest.mark.parametrize(
    ("mode", "text", "expected"),
    [
        (CaseMode.UPPER, "straße", "STRASSE"),
        (CaseMode.LOWER, "ÉLODIE", "élodie"),
        (CaseMode.TITLE, "jean-luc o'NEIL", "Jean-Luc O'Neil"),
        (CaseMode.TITLE, "it's éLODIE's", "It's Élodie's"),
        (CaseMode.UPPER, "", ""),
    ],
)
def test_case_changes_handle_non_ascii(mode: CaseMode, text: str, expected: str) -> None:
    assert value_of(CaseStep(mode), "city", city=text) == expected


def test_title_case_capitalises_after_spaces_hyphens_and_single_letter_prefixes() -> None:
    assert title_case("mary-kate d'arcy") == "Mary-Kate D'Arcy"


def test_trim_strips_unicode_spaces_and_optionally_collapses() -> None:
    assert value_of(TrimStep(), "city", city="\u00a0 New  York \t") == "New  York"
    assert value_of(TrimStep(collapse_spaces=True), "city", city=" New \n York ") == "New York"


def test_truncate_counts_characters_not_bytes() -> None:
    assert value_of(TruncateStep(3), "city", city="Zürich") == "Zür"
    assert value_of(TruncateStep(10), "city", city="Zürich") == "Zürich"
    assert value_of(TruncateStep(3), "city", city="") == ""


def test_truncate_never_separates_a_combining_mark_from_its_letter() -> None:
    decomposed = "Zu\u0308rich"  # u + combining diaeresis
    assert truncate(decomposed, 2) == "Z"
    assert truncate(decomposed, 3) == "Zu\u0308"


def test_constant_ignores_its_input() -> None:
    assert value_of(ConstantStep("Handoff"), "email") == "Handoff"


def test_default_fills_only_empty_values() -> None:
    assert value_of(DefaultStep("n/a"), "city", city="  ") == "n/a"
    assert value_of(DefaultStep("n/a"), "city", city="Oslo") == "Oslo"


def test_hash_normalises_email_before_sha256() -> None:
    expected = hashlib.sha256(b"jo@example.com").hexdigest()
    assert value_of(HashStep(), "email", email="  Jo@Example.COM ") == expected


def test_hash_md5_and_raw_input() -> None:
    md5 = HashStep(HashAlgorithm.MD5)
    expected = hashlib.md5(b"jo@example.com", usedforsecurity=False).hexdigest()
    assert value_of(md5, "email", email="Jo@example.com") == expected
    raw = HashStep(normalize=False)
    assert value_of(raw, "email", email="Jo ") == hashlib.sha256(b"Jo ").hexdigest()


def test_hash_of_empty_input_stays_empty() -> None:
    assert value_of(HashStep(), "phone", phone="  ") == ""


def test_hash_encodes_non_ascii_as_utf8() -> None:
    expected = hashlib.sha256("zoë@exämple.com".encode()).hexdigest()
    assert value_of(HashStep(), "email", email="ZOË@exämple.com") == expected


@pytest.mark.parametrize(
    ("mobile", "expected"),
    [
        ("07911 123456", "+447911123456"),
        ("+44 (0)7911-123456", "+447911123456"),
        ("0044 7911 123456", "+447911123456"),
        ("+1 415-555-2671", "+14155552671"),
        ("", ""),
    ],
)
def test_phone_normalises_to_e164_with_default_country(mobile: str, expected: str) -> None:
    assert value_of(PhoneStep("GB"), "mobile", mobile=mobile) == expected


def test_phone_uses_the_rows_country_before_the_default() -> None:
    step = PhoneStep("GB", country_field="country")
    assert value_of(step, "mobile", mobile="(415) 555-2671", country="us") == "+14155552671"
    assert value_of(step, "mobile", mobile="07911 123456", country="") == "+447911123456"
    assert value_of(step, "mobile", mobile="07911 123456", country="ZZ") == "+447911123456"


def test_phone_other_formats() -> None:
    international = PhoneStep("GB", format=PhoneFormat.INTERNATIONAL)
    assert value_of(international, "mobile", mobile="07911123456") == "+44 7911 123456"
    national = PhoneStep("GB", format=PhoneFormat.NATIONAL)
    assert value_of(national, "mobile", mobile="+447911123456") == "07911 123456"


def test_invalid_phone_passes_through_and_is_reported() -> None:
    value, problems = run_steps(PhoneStep("GB"), "mobile", mobile="12")
    assert value == "12"
    assert problems.counts == {("under_test", "INVALID_PHONE"): 1}
    (sample,) = problems.samples
    assert (sample.step, sample.value, sample.seq) == (0, "12", "1")


def test_invalid_phone_uses_the_fallback_when_configured() -> None:
    value, problems = run_steps(PhoneStep("GB", fallback=""), "mobile", mobile="not a phone")
    assert value == ""
    assert problems.total == 1


def test_possible_but_unassigned_numbers_only_pass_when_accepted() -> None:
    drama = "07700 900123"  # Ofcom's range reserved for drama: possible, never valid
    assert value_of(PhoneStep("GB"), "mobile", mobile=drama) == drama
    lenient = PhoneStep("GB", accept_possible=True)
    assert value_of(lenient, "mobile", mobile=drama) == "+447700900123"


def test_steps_chain_in_order() -> None:
    steps = (
        TrimStep(),
        CaseStep(CaseMode.LOWER),
        ValueMapStep((MapEntry("m", "male"),), default_value="other"),
        CaseStep(CaseMode.TITLE),
        TemplateStep("{value}!"),
        TruncateStep(4),
    )
    assert value_of(steps, "gender", gender="  M ") == "Male"
    assert value_of(steps, "gender", gender="x") == "Othe"


def test_a_field_without_source_starts_from_empty_text() -> None:
    assert value_of((DefaultStep("none"),)) == "none"

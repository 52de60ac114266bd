"""Definitions are refused at save time with a problem that names the step and the reason."""

from __future__ import annotations

import pytest

from services.common.errors import FieldProblem, InvalidArgumentError
from services.common.layouts.catalog import extra_key
from services.common.layouts.model import (
    Column,
    CsvFormat,
    CustomFieldSpec,
    DateKind,
    DateStep,
    LayoutSpec,
    MapEntry,
    OutputFormat,
    PhoneStep,
    Step,
    TemplateStep,
    TrimStep,
    TruncateStep,
    ValueMapStep,
)
from services.common.layouts.validation import (
    custom_dependencies,
    custom_field_problems,
    format_problems,
    layout_custom_fields,
    layout_problems,
    require_no_problems,
)


def _problems(
    *steps: Step,
    source: str = "",
    name: str = "mine",
    others: dict[str, CustomFieldSpec] | None = None,
) -> list[tuple[str, str]]:
    spec = CustomFieldSpec(name, source, steps)
    return [(p.field, p.code) for p in custom_field_problems(spec, others or {})]


def test_a_valid_definition_has_no_problems() -> None:
    assert _problems(TrimStep(), TemplateStep("{value} {last_name}"), source="first_name") == []


def test_unknown_source_field() -> None:
    assert _problems(source="nickname") == [("field.source", "UNKNOWN_FIELD")]


def test_bad_output_pattern_names_the_step_and_the_directive() -> None:
    spec = CustomFieldSpec(
        "mine",
        "opted_in_at",
        (TrimStep(), DateStep(output=DateKind.PATTERN, output_pattern="%d/%m/%Q")),
    )
    (problem,) = custom_field_problems(spec, {})
    assert problem.field == "field.steps[1].date.output_pattern"
    assert problem.code == "BAD_PATTERN"
    assert "%Q" in problem.message


@pytest.mark.parametrize(
    ("step", "where"),
    [
        (DateStep(output=DateKind.PATTERN, output_pattern=""), "output_pattern"),
        (DateStep(output=DateKind.PATTERN, output_pattern="no directive"), "output_pattern"),
        (DateStep(output=DateKind.PATTERN, output_pattern="%Y-%"), "output_pattern"),
        (DateStep(input=DateKind.PATTERN, input_pattern="%-d/%m"), "input_pattern"),
        (DateStep(input=DateKind.PATTERN, input_pattern="%e"), "input_pattern"),
    ],
)
def test_bad_patterns_are_refused(step: DateStep, where: str) -> None:
    assert _problems(step) == [(f"field.steps[0].date.{where}", "BAD_PATTERN")]


def test_glibc_no_padding_flag_is_allowed_in_output_patterns() -> None:
    assert _problems(DateStep(output=DateKind.PATTERN, output_pattern="%-m/%-d/%Y %e")) == []


def test_pattern_given_for_another_kind_is_flagged_unused() -> None:
    assert _problems(DateStep(output_pattern="%Y")) == [
        ("field.steps[0].date.output_pattern", "UNUSED")
    ]


def test_unknown_time_zones() -> None:
    assert _problems(DateStep(input_time_zone="Mars/Olympus", output_time_zone="EST5EDTX")) == [
        ("field.steps[0].date.input_time_zone", "UNKNOWN_TIME_ZONE"),
        ("field.steps[0].date.output_time_zone", "UNKNOWN_TIME_ZONE"),
    ]


def test_template_unknown_and_malformed() -> None:
    assert _problems(TemplateStep("{first_name} {nick}")) == [
        ("field.steps[0].template.template", "UNKNOWN_FIELD")
    ]
    assert _problems(TemplateStep("{first_name")) == [
        ("field.steps[0].template.template", "BAD_TEMPLATE")
    ]
    assert _problems(TemplateStep("{a.__class__}")) == [
        ("field.steps[0].template.template", "BAD_TEMPLATE")
    ]
    assert _problems(TemplateStep("}")) == [("field.steps[0].template.template", "BAD_TEMPLATE")]


def test_templates_that_copy_the_value_too_often_along_the_steps_are_refused() -> None:
    double, quadruple = TemplateStep("{value} {value}"), TemplateStep("{value}" * 4)
    assert _problems(double, TrimStep(), double, double, double, source="email") == []  # 16
    assert _problems(*[quadruple] * 12, source="email") == [
        ("field.steps[2].template.template", "TOO_MANY_COPIES")  # 64 copies
    ]
    assert _problems(TemplateStep("{value}" * 17), source="email") == [
        ("field.steps[0].template.template", "TOO_MANY_COPIES")
    ]
    # Other fields are not copies of the value: a template may name many of them.
    assert _problems(TemplateStep("{first_name} " * 40)) == []


def test_extra_attributes_are_known_fields() -> None:
    assert _problems(TemplateStep("{extra.question_1}")) == []
    assert _problems(source="extra.") == [("field.source", "UNKNOWN_FIELD")]


def test_extra_keys_are_matched_whole_so_a_trailing_line_break_is_unknown() -> None:
    assert extra_key("extra.question_1") == "question_1"
    assert extra_key("extra.question_1\n") is None
    assert _problems(source="extra.question_1\n") == [("field.source", "UNKNOWN_FIELD")]
    layout = _layout(("Answer", "extra.q1\n"))
    assert [(p.field, p.code) for p in layout_problems(layout, set())] == [
        ("layout.columns[0].field", "UNKNOWN_FIELD")
    ]


def test_self_reference_is_a_cycle() -> None:
    assert _problems(TemplateStep("{mine}")) == [
        ("field.steps[0].template.template", "REFERENCE_CYCLE")
    ]


def test_reference_cycle_through_other_fields_is_refused_with_its_path() -> None:
    others = {
        "greeting": CustomFieldSpec("greeting", "salutation", ()),
        "salutation": CustomFieldSpec("salutation", "", (TemplateStep("{full_name}!"),)),
    }
    spec = CustomFieldSpec("full_name", "first_name", (TrimStep(), TemplateStep("{greeting}")))
    (problem,) = custom_field_problems(spec, others)
    assert problem.field == "field.steps[1].template.template"
    assert problem.code == "REFERENCE_CYCLE"
    assert problem.message == "reference cycle: full_name -> greeting -> salutation -> full_name"


def test_cycle_through_a_phone_country_field() -> None:
    others = {"country_code": CustomFieldSpec("country_code", "phone_e164", ())}
    assert _problems(
        PhoneStep("GB", country_field="country_code"), name="phone_e164", others=others
    ) == [("field.steps[0].phone.country_field", "REFERENCE_CYCLE")]


def test_referencing_other_custom_fields_without_a_cycle_is_fine() -> None:
    others = {"full_name": CustomFieldSpec("full_name", "", (TemplateStep("{first_name}"),))}
    spec = CustomFieldSpec("greeting", "full_name", (TemplateStep("Hi {value}"),))
    assert custom_field_problems(spec, others) == []
    assert custom_dependencies(spec) == ("full_name",)


@pytest.mark.parametrize(
    ("name", "code"),
    [("", "INVALID_NAME"), ("1st", "INVALID_NAME"), ("full name", "INVALID_NAME"),
     ("upper\n", "INVALID_NAME"), ("x" * 65, "INVALID_NAME"), ("email", "RESERVED_NAME"),
     ("campaign_name", "RESERVED_NAME"), ("value", "RESERVED_NAME"),
     ("extra", "RESERVED_NAME")],
)  # fmt: skip
def test_names_must_be_identifiers_and_not_built_in(name: str, code: str) -> None:
    assert _problems(name=name) == [("field.name", code)]


def test_value_map_problems() -> None:
    step = ValueMapStep(
        (MapEntry("M", "Male"), MapEntry(" ", "Blank"), MapEntry("m", "Again")),
        case_insensitive=True,
    )
    assert _problems(step) == [
        ("field.steps[0].map.entries[1].match", "REQUIRED"),
        ("field.steps[0].map.entries[2].match", "DUPLICATE"),
    ]
    assert _problems(ValueMapStep(())) == [("field.steps[0].map.entries", "REQUIRED")]


def test_truncate_and_phone_ranges() -> None:
    assert _problems(TruncateStep(0)) == [("field.steps[0].truncate.max_chars", "OUT_OF_RANGE")]
    assert _problems(PhoneStep("XX")) == [
        ("field.steps[0].phone.default_country", "UNKNOWN_COUNTRY")
    ]
    assert _problems(PhoneStep("gb")) == []


def test_too_many_steps() -> None:
    assert _problems(*[TrimStep()] * 51) == [("field.steps", "TOO_MANY")]


def _layout(*columns: tuple[str, str], fmt: OutputFormat | None = None) -> LayoutSpec:
    cols = tuple(Column(h, f) for h, f in columns)
    return LayoutSpec(cols, format=fmt or OutputFormat())


def test_layout_problems_name_each_column() -> None:
    spec = _layout(
        ("Email", "email"),
        ("Email", "first_name"),
        ("", "last_name"),
        ("Nick", "nickname"),
        ("Line\nbreak", "city"),
        ("Mine", "mine"),
        ("Answer", "extra.q1"),
    )
    problems = [(p.field, p.code) for p in layout_problems(spec, {"mine"})]
    assert problems == [
        ("layout.columns[1].header", "DUPLICATE"),
        ("layout.columns[2].header", "REQUIRED"),
        ("layout.columns[3].field", "UNKNOWN_FIELD"),
        ("layout.columns[4].header", "CONTROL_CHARACTER"),
    ]
    assert layout_custom_fields(spec) == ("nickname", "mine")


def test_layout_needs_columns_and_a_usable_delimiter() -> None:
    assert [p.code for p in layout_problems(_layout(), set())] == ["REQUIRED"]
    bad = _layout(("a", "email"), fmt=OutputFormat(CsvFormat(delimiter='"')))
    assert [p.field for p in layout_problems(bad, set())] == ["layout.format.csv.delimiter"]
    assert [p.field for p in format_problems(bad.format, "format")] == ["format.csv.delimiter"]
    assert layout_problems(_layout(("a", "email"), fmt=OutputFormat(CsvFormat(";"))), set()) == []


def test_require_no_problems_raises_invalid_argument_with_every_problem() -> None:
    problems = [FieldProblem("a", "X", "first"), FieldProblem("b", "Y", "second")]
    with pytest.raises(InvalidArgumentError) as raised:
        require_no_problems("custom field", problems)
    assert raised.value.problems == problems
    assert raised.value.message == "invalid custom field: a: first (and 1 more)"
    require_no_problems("custom field", [])

"""No step makes a value longer than MAX_VALUE_CHARS: a longer result is reported, never built."""

from __future__ import annotations

from services.common.layouts.compiler import compile_layout
from services.common.layouts.model import (
    CaseMode,
    CaseStep,
    Column,
    CustomFieldSpec,
    LayoutSpec,
    TemplateStep,
    TrimStep,
)
from services.common.layouts.render import BATCH_ROWS, render_bytes
from services.common.layouts.steps import MAX_VALUE_CHARS
from services.common.layouts.validation import MAX_STEPS
from tests.unit.layout_support import referral_row, run_steps

QUADRUPLE = TemplateStep("{value}{value}{value}{value}")


def test_a_template_result_over_the_cap_keeps_its_input_and_is_reported() -> None:
    long_name = "x" * (MAX_VALUE_CHARS // 2 + 1)
    value, problems = run_steps(TemplateStep("{value}{value}"), "first_name", first_name=long_name)

    assert value == long_name
    assert problems.counts == {("under_test", "VALUE_TOO_LONG"): 1}
    (problem,) = problems.samples
    assert (problem.step, problem.code, problem.value) == (0, "VALUE_TOO_LONG", "x" * 100)


def test_a_template_result_of_exactly_the_cap_is_kept() -> None:
    half = "y" * (MAX_VALUE_CHARS // 2)
    value, problems = run_steps(TemplateStep("{value}{value}"), "first_name", first_name=half)

    assert len(value) == MAX_VALUE_CHARS
    assert problems.total == 0


def test_repeating_a_template_step_is_capped_at_each_step() -> None:
    # 14 characters, x4 per step: 12 steps would make a 235 MB cell without the cap.
    value, problems = run_steps((QUADRUPLE,) * 12, "email", email="jo@example.com")

    assert len(value) == 14 * 4**6  # steps 0-5 fit (57,344 characters), steps 6-11 do not
    assert problems.counts == {("under_test", "VALUE_TOO_LONG"): 6}
    assert [p.step for p in problems.samples] == [6, 7, 8, 9, 10, 11]


def test_the_longest_allowed_chain_renders_a_full_batch_in_bounded_memory() -> None:
    bomb = CustomFieldSpec("bomb", "email", (QUADRUPLE,) * MAX_STEPS)
    spec = LayoutSpec((Column("bomb", "bomb"),))
    layout = compile_layout(spec, {"bomb": bomb})
    rows = [referral_row(seq=i, email=f"user{i:04d}@example.com") for i in range(BATCH_ROWS)]

    output = render_bytes(layout, rows)

    # 20 characters fit five steps (20,480); each of the 45 later steps is a problem.
    assert output.decode().splitlines()[1:] == [
        f"user{i:04d}@example.com" * 4**5 for i in range(BATCH_ROWS)
    ]
    summary = layout.problems.summary()
    assert summary.counts == {("bomb", "VALUE_TOO_LONG"): BATCH_ROWS * (MAX_STEPS - 5)}


def test_rows_within_the_cap_render_normally_beside_a_row_over_it() -> None:
    shout = CustomFieldSpec("shout", "", (TemplateStep("{first_name}! " * 20), TrimStep()))
    layout = compile_layout(LayoutSpec((Column("shout", "shout"),)), {"shout": shout})
    rows = [
        referral_row(seq=1, first_name="Jo"),
        referral_row(seq=2, first_name="z" * 4000),  # 20 copies: 80,000 characters
        referral_row(seq=3, first_name="Li"),
    ]

    cells = [c[0] for c in layout.cells(rows)]

    assert cells == ["Jo! " * 19 + "Jo!", "", "Li! " * 19 + "Li!"]
    summary = layout.problems.summary()
    assert [(p.row, p.seq, p.code) for p in summary.samples] == [(1, "2", "VALUE_TOO_LONG")]


def test_a_case_change_that_lengthens_a_value_past_the_cap_is_reported() -> None:
    street = "ß" * (MAX_VALUE_CHARS // 2 + 1)  # upper case: "SS" for each

    value, problems = run_steps(CaseStep(CaseMode.UPPER), "city", city=street)

    assert value == street
    assert problems.counts == {("under_test", "VALUE_TOO_LONG"): 1}
    assert run_steps(CaseStep(CaseMode.UPPER), "city", city="ß" * 100)[0] == "SS" * 100

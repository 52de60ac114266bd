"""Builders shared by the layout engine's unit tests."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from services.common.layouts.catalog import RowValue, row_from_values
from services.common.layouts.compiler import RenderContext, compile_layout
from services.common.layouts.model import Column, CustomFieldSpec, LayoutSpec, Step
from services.common.layouts.problems import ProblemSummary

OPTED_IN = datetime(2024, 7, 1, 12, 30, tzinfo=UTC)


def referral_row(**values: RowValue) -> list[str]:
    """A row with sensible defaults for the required fields, overridden by `values`."""
    base: dict[str, RowValue] = {
        "seq": 1,
        "account_id": "00000000-0000-0000-0000-00000000000a",
        "campaign_id": "00000000-0000-0000-0000-00000000000c",
        "partner_referral_id": "p-1",
        "received_at": OPTED_IN,
        "email": "jo@example.com",
        "opted_in_at": OPTED_IN,
    }
    base.update(values)
    return row_from_values(base)


def run_steps(
    steps: tuple[Step, ...] | Step,
    source: str = "",
    *,
    others: Mapping[str, CustomFieldSpec] | None = None,
    zone: str = "UTC",
    **values: RowValue,
) -> tuple[str, ProblemSummary]:
    """The custom field's value for one row, and the problems it met."""
    chain = steps if isinstance(steps, tuple) else (steps,)
    spec = CustomFieldSpec("under_test", source, chain)
    layout = compile_layout(
        LayoutSpec((Column("value", "under_test"),)),
        {**(others or {}), "under_test": spec},
        RenderContext(account_time_zone=zone),
    )
    (cells,) = layout.cells([referral_row(**values)])
    return cells[0], layout.problems.summary()


def value_of(steps: tuple[Step, ...] | Step, source: str = "", **values: RowValue) -> str:
    """The custom field's value for one row (problems ignored)."""
    return run_steps(steps, source, others=None, zone="UTC", **values)[0]

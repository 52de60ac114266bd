"""Compiles a layout and its custom fields, once, into column functions over batches.

A batch arrives as one column of strings per ROW_FIELDS entry. Every other value a layout
needs (timestamps in ISO form, context fields, extra attributes, custom fields) is computed
once per batch as a further column ("slot"), dependencies first, so templates and later
steps read earlier results by index. Cells are then the layout's columns in order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from typing import Any

from services.common.layouts.catalog import (
    ROW_FIELDS,
    ROW_INDEX,
    TIMESTAMP_FIELDS,
    extra_key,
    iso_timestamp,
    pg_timestamp,
)
from services.common.layouts.model import CustomFieldSpec, DateKind, DateStep, LayoutSpec
from services.common.layouts.problems import ProblemLog, StepError
from services.common.layouts.steps import ColumnStep, compile_step

Column = Sequence[Any]
SlotFn = Callable[[list[Column], int], Column]  # (slots so far, first row) -> new column
ROW_WIDTH = len(ROW_FIELDS)
_SEQ = ROW_INDEX["seq"]


@dataclass(frozen=True)
class RenderContext:
    """What a render knows beyond the rows: the account's zone and the delivery."""

    account_time_zone: str = "UTC"
    campaign_names: Mapping[str, str] = field(default_factory=dict)
    partner_names: Mapping[str, str] = field(default_factory=dict)
    delivery_id: str = ""
    delivery_time: datetime | None = None


DELIVERY_FIELDS = ("delivery_id", "delivery_time")


def delivery_value(context: RenderContext, name: str) -> str:
    """A delivery field's text, the same in every row: the id, or the time in ISO form."""
    if name == "delivery_id":
        return context.delivery_id
    when = context.delivery_time
    return "" if when is None else iso_timestamp(pg_timestamp(when))


class LayoutCompileError(ValueError):
    """The layout names a field that does not exist (it was not validated)."""


def _parse_extra(text: str) -> Mapping[str, Any]:
    if not text or text == "{}":
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _extra_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _iso_column(column: Column) -> list[str]:
    return [f"{s[:10]}T{s[11:19]}Z" if len(s) >= 19 else s for s in column]


def transpose(rows: Iterable[Sequence[str]]) -> list[Sequence[str]]:
    """Rows of ROW_WIDTH strings -> ROW_WIDTH columns."""
    materialised = rows if isinstance(rows, list) else list(rows)
    if not materialised:
        return [() for _ in range(ROW_WIDTH)]
    widths = set(map(len, materialised))
    if widths != {ROW_WIDTH}:
        raise ValueError(f"rows must have {ROW_WIDTH} fields, got {sorted(widths)}")
    return list(zip(*materialised, strict=True))


def _apply_one(step: ColumnStep, values: Sequence[str], slots: list[Column], i: int) -> str | None:
    try:
        return step.apply([values[i]], [[column[i]] for column in slots])[0]
    except Exception:  # reported by the caller like any value the step refused
        return None


class CompiledLayout:
    """A layout ready to turn batches into cells; compile one per render."""

    def __init__(
        self,
        spec: LayoutSpec,
        custom_fields: Mapping[str, CustomFieldSpec],
        context: RenderContext,
        problems: ProblemLog | None = None,
    ) -> None:
        self.spec = spec
        self.headers: tuple[str, ...] = tuple(c.header for c in spec.columns)
        self.problems = problems or ProblemLog()
        self._custom = custom_fields
        self._context = context
        self._slots: dict[str, int] = {}
        self._computed: list[SlotFn] = []
        self._compiling: set[str] = set()
        self._row_fields: set[str] = {"seq"}  # seq locates problems
        self._cell_slots = [self.slot_of(c.field) for c in spec.columns]

    @property
    def row_fields(self) -> tuple[str, ...]:
        """The row fields this layout reads (a reader may leave the others empty)."""
        return tuple(f for f in ROW_FIELDS if f in self._row_fields)

    def _row_index(self, name: str) -> int:
        self._row_fields.add(name)
        return ROW_INDEX[name]

    @property
    def rows_done(self) -> int:
        """How many rows this layout has turned into cells so far."""
        return self.problems.row

    def slot_of(self, name: str) -> int:
        """The slot holding the rendered text of field `name` (compiled on first use)."""
        if name in self._slots:
            return self._slots[name]
        if name in ROW_INDEX and name not in TIMESTAMP_FIELDS:
            return self._row_index(name)
        fn = self._slot_function(name)
        self._computed.append(fn)
        self._slots[name] = ROW_WIDTH + len(self._computed) - 1
        return self._slots[name]

    def _slot_function(self, name: str) -> SlotFn:
        context = self._context
        if name in TIMESTAMP_FIELDS:
            at = self._row_index(name)
            return lambda slots, first: _iso_column(slots[at])
        if name == "campaign_name":
            names, at = context.campaign_names, self._row_index("campaign_id")
            return lambda slots, first: list(map(names.get, slots[at], repeat("")))
        if name == "partner_name":
            partners, at = context.partner_names, self._row_index("partner_id")
            return lambda slots, first: list(map(partners.get, slots[at], slots[at]))
        if name in DELIVERY_FIELDS:
            constant = delivery_value(context, name)
            return lambda slots, first: [constant] * len(slots[0])
        key = extra_key(name)
        if key is not None:
            parsed = self._parsed_extra_slot()
            return lambda slots, first: [_extra_text(d.get(key)) for d in slots[parsed]]
        if name in self._custom:
            return self._custom_function(self._custom[name])
        raise LayoutCompileError(f"no field named {name!r}")

    def _parsed_extra_slot(self) -> int:
        marker = " parsed extra"  # not a valid field name, so it cannot collide
        if marker not in self._slots:
            at = self._row_index("extra")
            self._computed.append(lambda slots, first: list(map(_parse_extra, slots[at])))
            self._slots[marker] = ROW_WIDTH + len(self._computed) - 1
        return self._slots[marker]

    def _custom_function(self, spec: CustomFieldSpec) -> SlotFn:
        if spec.name in self._compiling:
            raise LayoutCompileError(f"custom field {spec.name!r} refers to itself")
        self._compiling.add(spec.name)
        first = spec.steps[0] if spec.steps else None
        if (
            spec.source in TIMESTAMP_FIELDS
            and isinstance(first, DateStep)
            and first.input is DateKind.ISO_8601
        ):
            # A date step reads PostgreSQL's text form directly: it keeps sub-second
            # precision and skips rendering the ISO form first.
            source: int | None = self._row_index(spec.source)
        else:
            source = self.slot_of(spec.source) if spec.source else None
        zone = self._context.account_time_zone
        chain = [compile_step(step, self.slot_of, zone) for step in spec.steps]
        self._compiling.discard(spec.name)
        name = spec.name

        def run(slots: list[Column], first: int) -> Column:
            values: Sequence[str] = [""] * len(slots[0]) if source is None else slots[source]
            for index, step in enumerate(chain):
                values = self._apply(name, index, step, values, slots, first)
            return values

        return run

    def _apply(
        self,
        name: str,
        index: int,
        step: ColumnStep,
        values: Sequence[str],
        slots: list[Column],
        first: int,
    ) -> list[str]:
        may_fail = step.explain is not None  # steps without it never put None in a column
        try:
            out = step.apply(values, slots)
        except Exception:  # a bad value must never stop a delivery: retry value by value
            out = [_apply_one(step, values, slots, i) for i in range(len(values))]
            may_fail = True
        if not may_fail:
            return out  # type: ignore[return-value]  # such steps never give None
        explain, fallback = step.explain, step.fallback
        i = -1
        while True:
            try:
                i = out.index(None, i + 1)  # scans at C speed; failures are the exception
            except ValueError:
                return out  # type: ignore[return-value]  # no None left
            failure = (
                explain(values[i], slots, i)
                if explain
                else StepError("STEP_FAILED", "could not be converted")
            )
            self.problems.add(name, index, failure, values[i], first + i, slots[_SEQ][i])
            out[i] = values[i] if fallback is None else fallback

    def cell_columns(self, columns: Sequence[Column]) -> list[Column]:
        """The layout's columns of cells for a batch given as ROW_WIDTH columns."""
        if len(columns) != ROW_WIDTH:
            raise ValueError(f"a batch needs {ROW_WIDTH} columns, got {len(columns)}")
        first = self.problems.row
        slots = list(columns)
        for compute in self._computed:
            slots.append(compute(slots, first))
        self.problems.row = first + len(columns[0])
        return [slots[i] for i in self._cell_slots]

    def cells(self, rows: Iterable[Sequence[str]]) -> list[tuple[str, ...]]:
        """The cells of each row, in column order (row-wise convenience)."""
        return list(zip(*self.cell_columns(transpose(rows)), strict=True))


def compile_layout(
    spec: LayoutSpec,
    custom_fields: Mapping[str, CustomFieldSpec],
    context: RenderContext | None = None,
    problems: ProblemLog | None = None,
) -> CompiledLayout:
    """Compile a (validated) layout with the account's custom fields by name."""
    return CompiledLayout(spec, custom_fields, context or RenderContext(), problems)

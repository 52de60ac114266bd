"""Field values for an API connection's body template: the template's fields (and its
filters') computed by the layout engine, so custom fields, context fields and extra
attributes read exactly as they do in files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.common.layouts.compiler import RenderContext, compile_layout
from services.common.layouts.model import Column, CustomFieldSpec, FormulaGuard, LayoutSpec
from services.delivery.transports.http.settings import ApiSettings
from services.delivery.transports.http.templates import BodyTemplate, parse_body_template


class BodyValues:
    """Turns text rows (ROW_FIELDS order) into the values a body template names."""

    def __init__(
        self,
        api: ApiSettings,
        customs: Mapping[str, CustomFieldSpec],
        context: RenderContext,
    ) -> None:
        self.template: BodyTemplate = parse_body_template(
            api.body_template or "{}", api.encoding, frozenset(customs)
        )
        self.fields = list(dict.fromkeys([*self.template.fields, *(f.field for f in api.filters)]))
        spec = LayoutSpec(tuple(Column(n, n) for n in self.fields), formula_guard=FormulaGuard.OFF)
        self._layout = compile_layout(spec, customs, context)

    def values(self, rows: Sequence[Sequence[str]]) -> list[dict[str, str]]:
        """Each row's values by field name."""
        if not rows:
            return []
        if not self.fields:
            return [{} for _ in rows]
        cells = self._layout.cell_columns(list(zip(*rows, strict=True)))
        return [dict(zip(self.fields, row, strict=True)) for row in zip(*cells, strict=True)]

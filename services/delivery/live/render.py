"""Field values for the live path: the columns a connection's sender names (and its
filters' fields) computed by the layout engine, so custom fields, context fields and extra
attributes read exactly as they do in files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.common.layouts.compiler import RenderContext, compile_layout
from services.common.layouts.model import Column, CustomFieldSpec, FormulaGuard, LayoutSpec
from services.delivery.live.policy import FieldFilter
from services.delivery.transports.http.settings import ApiSettings
from services.delivery.transports.http.templates import BodyTemplate, parse_body_template


class LiveValues:
    """Turns text rows (ROW_FIELDS order) into values by column header: the sender's
    columns, then each filter's field under its own name (unless a column has that
    header already)."""

    def __init__(
        self,
        columns: Sequence[Column],
        filters: Sequence[FieldFilter],
        customs: Mapping[str, CustomFieldSpec],
        context: RenderContext,
    ) -> None:
        named = {c.header: c for c in columns}
        for f in filters:
            named.setdefault(f.field, Column(f.field, f.field))
        self.names = list(named)
        spec = LayoutSpec(tuple(named.values()), formula_guard=FormulaGuard.OFF)
        self._layout = compile_layout(spec, customs, context)

    def values(self, rows: Sequence[Sequence[str]]) -> list[dict[str, str]]:
        """Each row's values by column header."""
        if not rows:
            return []
        if not self.names:
            return [{} for _ in rows]
        cells = self._layout.cell_columns(list(zip(*rows, strict=True)))
        return [dict(zip(self.names, row, strict=True)) for row in zip(*cells, strict=True)]


def template_columns(template: BodyTemplate) -> list[Column]:
    """A body template's fields as columns named by the field."""
    return [Column(n, n) for n in dict.fromkeys(template.fields)]


class BodyValues(LiveValues):
    """The values an API connection's body template (and its filters) name."""

    def __init__(
        self,
        api: ApiSettings,
        customs: Mapping[str, CustomFieldSpec],
        context: RenderContext,
    ) -> None:
        self.template: BodyTemplate = parse_body_template(
            api.body_template or "{}", api.encoding, frozenset(customs)
        )
        super().__init__(template_columns(self.template), api.filters, customs, context)

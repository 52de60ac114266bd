"""The one table format every benchmark prints: figure, baseline, ratio."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchRow:
    """One measured figure beside the raw baseline measured in the same run."""

    figure: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    target: str = ""

    @property
    def ratio(self) -> float | None:
        """value / baseline, when there is a baseline."""
        if not self.baseline:
            return None
        return self.value / self.baseline


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def format_table(title: str, rows: list[BenchRow]) -> str:
    """A plain-text table, ready for a terminal or an issue note."""
    header = ("figure", "value", "baseline", "baseline value", "ratio", "target")
    lines = [
        (
            row.figure,
            f"{_number(row.value)} {row.unit}",
            row.baseline_name or "-",
            f"{_number(row.baseline)} {row.unit}" if row.baseline is not None else "-",
            f"{row.ratio:.2f}x" if row.ratio is not None else "-",
            row.target or "-",
        )
        for row in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=False)]
    out = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out.extend("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines)
    return "\n".join(out)

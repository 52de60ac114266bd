"""Values a step could not handle: counted per field and code, a few kept as samples."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

MAX_VALUE_SHOWN = 100


class StepError(Exception):
    """A step cannot handle this value; the pipeline uses its fallback or the raw value."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class RowProblem:
    """One value one step could not handle, located by row, field and step."""

    row: int  # 0-based position in the render
    seq: str  # the referral's seq ('' for samples without one)
    field: str  # the custom field
    step: int  # 0-based index of the step in that field
    code: str  # INVALID_DATE, INVALID_PHONE, ...
    message: str
    value: str  # the input (cut to MAX_VALUE_SHOWN characters)


@dataclass(frozen=True, slots=True)
class ProblemSummary:
    """Everything a render could not handle: totals per (field, code) and samples."""

    total: int
    counts: Mapping[tuple[str, str], int]
    samples: tuple[RowProblem, ...]


class ProblemLog:
    """Collects problems during one render; `row` counts the rows rendered so far."""

    def __init__(self, max_samples: int = 100) -> None:
        self.row = 0
        self.total = 0
        self._max_samples = max_samples
        self._counts: dict[tuple[str, str], int] = {}
        self._samples: list[RowProblem] = []

    def add(
        self, field: str, step: int, failure: StepError, value: str, row: int, seq: str
    ) -> None:
        """Count one problem and keep it as a sample while there is room."""
        self.total += 1
        key = (field, failure.code)
        self._counts[key] = self._counts.get(key, 0) + 1
        if len(self._samples) < self._max_samples:
            self._samples.append(
                RowProblem(
                    row=row,
                    seq=seq,
                    field=field,
                    step=step,
                    code=failure.code,
                    message=failure.message,
                    value=value[:MAX_VALUE_SHOWN],
                )
            )

    def summary(self) -> ProblemSummary:
        """A snapshot of what was collected so far."""
        return ProblemSummary(self.total, dict(self._counts), tuple(self._samples))

"""How a connection runs in real time, whatever its kind: the part of a connection's
settings the live loop reads (scope, concurrency, rate, retry schedule, disable rule).

One definition: API settings and every vendor's settings inherit it, so the connection API
validates these fields once (`policy_problems`) and the live loop reads them the same way
for every kind.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

from services.common.errors import FieldProblem
from services.common.layouts.catalog import is_builtin_field

# Immediately, then after each failure (seconds): Svix's schedule, about 27.6 hours.
DEFAULT_RETRY_SCHEDULE_S: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
DEFAULT_DISABLE_AFTER_S = 5 * 24 * 3600.0


@dataclass(frozen=True)
class FieldFilter:
    """Deliver only referrals whose `field` equals one of `values` (or contains one)."""

    field: str
    values: tuple[str, ...]
    op: Literal["equals", "contains"] = "equals"

    def matches(self, value: str) -> bool:
        """Whether a referral's value passes (case-insensitive)."""
        folded = value.casefold()
        if self.op == "contains":
            return any(v.casefold() in folded for v in self.values)
        return any(v.casefold() == folded for v in self.values)


@dataclass(frozen=True, kw_only=True)
class LivePolicy:
    """The live loop's part of a connection's settings (a base of each kind's settings)."""

    campaign_ids: tuple[str, ...] | None = None  # None: every campaign, future ones too
    filters: tuple[FieldFilter, ...] = ()
    rate_limit_per_s: float = 0.0  # 0: unlimited
    concurrency: int = 8
    strict_order: bool = False
    retry_schedule_s: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE_S
    disable_after_s: float = DEFAULT_DISABLE_AFTER_S

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LivePolicy:
        """Only the policy's fields of a settings column (of any kind)."""
        return LivePolicy(**policy_values(data, LivePolicy))

    def policy_json(self) -> dict[str, Any]:
        """The policy's fields as the settings column stores them."""
        out: dict[str, Any] = {}
        for f in fields(LivePolicy):
            value = getattr(self, f.name)
            if f.name == "filters":
                value = [{"field": x.field, "values": list(x.values), "op": x.op} for x in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


def policy_values(data: Mapping[str, Any], cls: type) -> dict[str, Any]:
    """The keys of `data` that are fields of `cls`, the policy's ones decoded (a
    subclass's `from_json` decodes its own fields on top)."""
    known = {f.name for f in fields(cls)}
    values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
    if "filters" in values:
        values["filters"] = tuple(
            FieldFilter(x["field"], tuple(x["values"]), x.get("op", "equals"))
            for x in values["filters"]
        )
    if values.get("campaign_ids") is not None:
        values["campaign_ids"] = tuple(values["campaign_ids"])
    if "retry_schedule_s" in values:
        values["retry_schedule_s"] = tuple(values["retry_schedule_s"])
    return values


def policy_problems(
    policy: LivePolicy, p: str, custom_fields: frozenset[str]
) -> Iterator[FieldProblem]:
    """Every problem of the policy's fields (`p`: the field path's prefix, with its dot)."""
    if policy.rate_limit_per_s < 0 or policy.rate_limit_per_s > 10_000:
        yield FieldProblem(f"{p}rate_limit_per_s", "OUT_OF_RANGE", "0 (none) to 10000")
    if not 1 <= policy.concurrency <= 256:
        yield FieldProblem(f"{p}concurrency", "OUT_OF_RANGE", "1-256")
    schedule: Sequence[float] = policy.retry_schedule_s
    if len(schedule) > 30 or any(not 0 <= s <= 7 * 86400 for s in schedule):
        yield FieldProblem(
            f"{p}retry_schedule_s", "OUT_OF_RANGE", "at most 30 delays of 0 s to 7 days"
        )
    if not 3600 <= policy.disable_after_s <= 30 * 86400:
        yield FieldProblem(f"{p}disable_after_s", "OUT_OF_RANGE", "1 hour to 30 days")
    for i, f in enumerate(policy.filters):
        if not (is_builtin_field(f.field) or f.field in custom_fields):
            yield FieldProblem(f"{p}filters[{i}].field", "UNKNOWN_FIELD", f"no field {f.field!r}")
        if not f.values or f.op not in ("equals", "contains"):
            yield FieldProblem(f"{p}filters[{i}]", "REQUIRED", "values, and op equals/contains")
    for i, c in enumerate(policy.campaign_ids or ()):
        try:
            uuid.UUID(c)
        except ValueError:
            yield FieldProblem(f"{p}campaign_ids[{i}]", "INVALID_FORMAT", "a campaign id")

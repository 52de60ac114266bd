"""The live loop's part of a connection's settings (`LivePolicy`) in messages: one
conversion for every kind that runs in real time (ApiConnection, SailthruConnection and
the vendors after them carry the same fields under the same names)."""

from __future__ import annotations

from typing import Any

from services.delivery.live.policy import (
    DEFAULT_DISABLE_AFTER_S,
    DEFAULT_RETRY_SCHEDULE_S,
    FieldFilter,
    LivePolicy,
)


def live_policy_of(m: Any) -> dict[str, Any]:
    """A message's policy fields as `LivePolicy` keyword arguments (defaults for unset)."""
    return {
        "campaign_ids": None if m.all_campaigns else tuple(m.campaign_ids),
        "filters": tuple(
            FieldFilter(f.field, tuple(f.values), "contains" if f.contains else "equals")
            for f in m.filters
        ),
        "rate_limit_per_s": m.rate_limit_per_s,
        "concurrency": m.concurrency or 8,
        "strict_order": m.strict_order,
        "retry_schedule_s": tuple(m.retry_schedule_s) or DEFAULT_RETRY_SCHEDULE_S,
        "disable_after_s": m.disable_after_s or DEFAULT_DISABLE_AFTER_S,
    }


def live_policy_fields(policy: LivePolicy) -> dict[str, Any]:
    """The policy as message keyword arguments (filters apart: see `add_filters`)."""
    return {
        "campaign_ids": list(policy.campaign_ids or ()),
        "all_campaigns": policy.campaign_ids is None,
        "rate_limit_per_s": policy.rate_limit_per_s,
        "concurrency": policy.concurrency,
        "strict_order": policy.strict_order,
        "retry_schedule_s": list(policy.retry_schedule_s),
        "disable_after_s": policy.disable_after_s,
    }


def add_filters(message: Any, policy: LivePolicy) -> None:
    """Append the policy's filters to a message's repeated `filters`."""
    for f in policy.filters:
        message.filters.add(field=f.field, values=list(f.values), contains=f.op == "contains")

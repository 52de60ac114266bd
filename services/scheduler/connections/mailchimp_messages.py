"""MailchimpConnection messages to domain settings and back (the API key never leaves),
and LiveOptions, the live loop's part of any vendor connection."""

from __future__ import annotations

from typing import Any

from services.common.gen.handoff.scheduler.v1 import connections_pb2
from services.delivery.live.policy import (
    DEFAULT_DISABLE_AFTER_S,
    DEFAULT_RETRY_SCHEDULE_S,
    FieldFilter,
    LivePolicy,
)
from services.delivery.transports.mailchimp.settings import MailchimpSettings
from services.scheduler.connections.model import MailchimpConfig, Secrets


def live_policy_of(m: connections_pb2.LiveOptions) -> dict[str, Any]:
    """The LivePolicy fields of a LiveOptions message (defaults for zero values)."""
    return {
        "campaign_ids": None if m.all_campaigns or not m.campaign_ids else tuple(m.campaign_ids),
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


def live_options_message(policy: LivePolicy) -> connections_pb2.LiveOptions:
    """The LiveOptions message of a policy."""
    return connections_pb2.LiveOptions(
        campaign_ids=list(policy.campaign_ids or ()),
        all_campaigns=policy.campaign_ids is None,
        filters=[
            connections_pb2.FieldFilter(
                field=f.field, values=list(f.values), contains=f.op == "contains"
            )
            for f in policy.filters
        ],
        rate_limit_per_s=policy.rate_limit_per_s,
        concurrency=policy.concurrency,
        strict_order=policy.strict_order,
        retry_schedule_s=list(policy.retry_schedule_s),
        disable_after_s=policy.disable_after_s,
    )


def mailchimp_config_of(m: connections_pb2.MailchimpConnection) -> tuple[MailchimpConfig, Secrets]:
    """The domain settings and secret of a MailchimpConnection message."""
    settings = MailchimpSettings(
        list_id=m.list_id.strip(), merge_fields=dict(m.merge_fields),
        layout_id=m.layout_id.strip() or None, tags=tuple(m.tags),
        status_if_new=m.status_if_new or "subscribed",
        mode="realtime" if m.realtime else "scheduled", base_url=m.base_url.strip(),
        timeout_s=m.timeout_s or 10.0, **live_policy_of(m.live),
    )  # fmt: skip
    return MailchimpConfig(settings), Secrets(api_key=m.api_key.strip())


def mailchimp_message(
    config: MailchimpConfig, secrets_set: frozenset[str]
) -> connections_pb2.MailchimpConnection:
    """The MailchimpConnection message: settings and whether the key is stored."""
    s = config.settings
    return connections_pb2.MailchimpConnection(
        list_id=s.list_id, merge_fields=dict(s.merge_fields), layout_id=s.layout_id or "",
        tags=list(s.tags), status_if_new=s.status_if_new, realtime=s.mode == "realtime",
        base_url=s.base_url, timeout_s=s.timeout_s, live=live_options_message(s),
        api_key_set="api_key" in secrets_set,
    )  # fmt: skip

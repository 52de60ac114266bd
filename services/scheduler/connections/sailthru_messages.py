"""Sailthru connections in messages (SailthruConnection <-> SailthruSettings)."""

from __future__ import annotations

import contextlib
import uuid

from services.common.gen.handoff.scheduler.v1 import connections_pb2
from services.delivery.live.policy import (
    DEFAULT_DISABLE_AFTER_S,
    DEFAULT_RETRY_SCHEDULE_S,
    FieldFilter,
)
from services.delivery.transports.sailthru.client import DEFAULT_BASE_URL
from services.delivery.transports.sailthru.settings import SAILTHRU_SECRET_NAMES, SailthruSettings
from services.scheduler.connections.model import SailthruConfig, Secrets


def sailthru_config_of(m: connections_pb2.SailthruConnection) -> tuple[SailthruConfig, Secrets]:
    """The domain settings and secrets of a SailthruConnection message."""
    layout_id = m.layout_id.strip() or None
    if layout_id is not None:
        with contextlib.suppress(ValueError):  # a malformed id: validation names it
            layout_id = str(uuid.UUID(layout_id))  # the canonical form
    settings = SailthruSettings(
        list_name=m.list_name.strip(), mode=m.mode.strip() or "realtime",  # type: ignore[arg-type]
        layout_id=layout_id, var_types=dict(m.var_types),
        base_url=m.base_url.strip() or DEFAULT_BASE_URL, postback_url=m.postback_url.strip(),
        timeout_s=m.timeout_s or 30.0,
        campaign_ids=None if m.all_campaigns else tuple(m.campaign_ids),
        filters=tuple(
            FieldFilter(f.field, tuple(f.values), "contains" if f.contains else "equals")
            for f in m.filters
        ),
        rate_limit_per_s=m.rate_limit_per_s, concurrency=m.concurrency or 8,
        strict_order=m.strict_order,
        retry_schedule_s=tuple(m.retry_schedule_s) or DEFAULT_RETRY_SCHEDULE_S,
        disable_after_s=m.disable_after_s or DEFAULT_DISABLE_AFTER_S,
    )  # fmt: skip
    return SailthruConfig(settings), Secrets(api_key=m.api_key, api_secret=m.api_secret)


def sailthru_message(
    config: SailthruConfig, secrets_set: frozenset[str]
) -> connections_pb2.SailthruConnection:
    """The SailthruConnection message: settings and which secrets are set, never them."""
    s = config.settings
    message = connections_pb2.SailthruConnection(
        mode=s.mode, list_name=s.list_name, layout_id=s.layout_id or "",
        var_types=dict(s.var_types), base_url=s.base_url, postback_url=s.postback_url,
        timeout_s=s.timeout_s, campaign_ids=list(s.campaign_ids or ()),
        all_campaigns=s.campaign_ids is None, rate_limit_per_s=s.rate_limit_per_s,
        concurrency=s.concurrency, strict_order=s.strict_order,
        retry_schedule_s=list(s.retry_schedule_s), disable_after_s=s.disable_after_s,
        secrets_set=sorted(n for n in SAILTHRU_SECRET_NAMES if n in secrets_set),
    )  # fmt: skip
    for f in s.filters:
        message.filters.add(field=f.field, values=list(f.values), contains=f.op == "contains")
    return message

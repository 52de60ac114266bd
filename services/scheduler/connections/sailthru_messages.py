"""Sailthru connections in messages (SailthruConnection <-> SailthruSettings)."""

from __future__ import annotations

import contextlib
import uuid

from services.common.gen.handoff.scheduler.v1 import connections_pb2
from services.delivery.transports.sailthru.client import DEFAULT_BASE_URL
from services.delivery.transports.sailthru.settings import SAILTHRU_SECRET_NAMES, SailthruSettings
from services.scheduler.connections.mailchimp_messages import (
    live_options_message,
    live_policy_of,
)
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
        timeout_s=m.timeout_s or 30.0, **live_policy_of(m.live),
    )  # fmt: skip
    return SailthruConfig(settings), Secrets(api_key=m.api_key, api_secret=m.api_secret)


def sailthru_message(
    config: SailthruConfig, secrets_set: frozenset[str]
) -> connections_pb2.SailthruConnection:
    """The SailthruConnection message: settings and which secrets are set, never them."""
    s = config.settings
    return connections_pb2.SailthruConnection(
        mode=s.mode, list_name=s.list_name, layout_id=s.layout_id or "",
        var_types=dict(s.var_types), base_url=s.base_url, postback_url=s.postback_url,
        timeout_s=s.timeout_s, live=live_options_message(s),
        secrets_set=sorted(n for n in SAILTHRU_SECRET_NAMES if n in secrets_set),
    )  # fmt: skip

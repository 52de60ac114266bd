"""MailchimpConnection messages to domain settings and back (the API key never leaves);
its LiveOptions carry the live policy under the same field names as ApiConnection's, so
`policy_messages` converts them."""

from __future__ import annotations

from services.common.gen.handoff.scheduler.v1 import connections_pb2
from services.delivery.transports.mailchimp.settings import MailchimpSettings
from services.scheduler.connections.model import MailchimpConfig, Secrets
from services.scheduler.connections.policy_messages import (
    add_filters,
    live_policy_fields,
    live_policy_of,
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
    live = connections_pb2.LiveOptions(**live_policy_fields(s))
    add_filters(live, s)
    return connections_pb2.MailchimpConnection(
        list_id=s.list_id, merge_fields=dict(s.merge_fields), layout_id=s.layout_id or "",
        tags=list(s.tags), status_if_new=s.status_if_new, realtime=s.mode == "realtime",
        base_url=s.base_url, timeout_s=s.timeout_s, live=live,
        api_key_set="api_key" in secrets_set,
    )  # fmt: skip

"""Zapier: what a REST-hook subscription is, and the one body every Zapier delivery sends.

The hook (a subscription's API connection), a plain Catch Hook connection and the polling
endpoint all render a referral through `HOOK_TEMPLATE`: the built-in default layout's
fields under their own names plus a stable `id` (the referral's seq), so the sample data
Zapier polls has exactly the fields the hook later sends, and Zapier can deduplicate by
`id` across the two.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from services.common.layouts.defaults import DEFAULT_LAYOUT
from services.delivery.transports.http.settings import ApiSettings

EVENTS = ("new_referral",)  # the trigger's key in the Zapier app
POLL_LIMIT = 50  # referrals the polling endpoint answers (Zapier reads the first page)
# Every field of the built-in default layout, under its name, after the stable id.
HOOK_FIELDS: tuple[str, ...] = tuple(c.field for c in DEFAULT_LAYOUT.columns)
HOOK_TEMPLATE = json.dumps({"id": "{{seq}}", **{name: f"{{{{{name}}}}}" for name in HOOK_FIELDS}})


def hook_settings(target_url: str, campaign_ids: Sequence[UUID] | None) -> ApiSettings:
    """The API connection that sends each new referral of the scope to `target_url`
    (a subscription's, or a Catch Hook's): POST, JSON, the hook body, default retries."""
    return ApiSettings(
        url=target_url,
        body_template=HOOK_TEMPLATE,
        campaign_ids=None if campaign_ids is None else tuple(str(c) for c in campaign_ids),
    )


@dataclass(frozen=True)
class Subscription:
    """A REST-hook subscription as stored."""

    id: UUID
    account_id: UUID
    connection_id: UUID | None
    target_url: str
    event: str
    campaign_ids: tuple[UUID, ...] | None
    state: str  # active | removed
    created_at: datetime
    removed_at: datetime | None
    removed_reason: str | None

    def document(self) -> dict[str, Any]:
        """The subscription as the API shows it."""
        return {
            "id": str(self.id),
            "target_url": self.target_url,
            "event": self.event,
            "campaign_ids": (
                None if self.campaign_ids is None else [str(c) for c in self.campaign_ids]
            ),
            "state": self.state,
            "connection_id": str(self.connection_id) if self.connection_id else None,
            "created_at": self.created_at.isoformat(),
            "removed_at": self.removed_at.isoformat() if self.removed_at else None,
            "removed_reason": self.removed_reason,
        }


UNSUBSCRIBED = "unsubscribed"

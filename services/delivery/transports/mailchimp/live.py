"""Mailchimp in real time: the live loop's record sender — one upsert per referral,
`PUT /lists/{id}/members/{md5 of the lower-cased address}` (idempotent: a retry or a
replay updates the same member)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from uuid import UUID

from services.common.egress import EgressPolicy
from services.common.layouts.model import Column, CustomFieldSpec
from services.delivery.key_slots import KeySlots
from services.delivery.live.policy import LivePolicy
from services.delivery.live.senders import Now, SenderFactory
from services.delivery.live.store import LiveConnection, LiveStorePg
from services.delivery.transports.http.client import Exchange
from services.delivery.transports.http.responses import Outcome
from services.delivery.transports.mailchimp.client import (
    MailchimpClient,
    subscriber_hash,
    usable_email,
)
from services.delivery.transports.mailchimp.members import email_of, member
from services.delivery.transports.mailchimp.settings import MailchimpSettings


class MailchimpSender:
    """One Mailchimp connection's per-referral upsert."""

    def __init__(
        self,
        connection: LiveConnection,
        secrets: Mapping[str, str],
        egress: EgressPolicy,
        now: Now,
        slots: KeySlots | None = None,
    ) -> None:
        self.settings = MailchimpSettings.from_json(connection.settings)
        self._client = MailchimpClient(
            self.settings, secrets.get("api_key", ""), egress, slots=slots, now=now
        )
        self._problem = ""  # a mapping the layout cannot fill: every send disables

    @property
    def policy(self) -> LivePolicy:
        """The Mailchimp settings are a live policy."""
        return self.settings

    async def prepare(
        self, store: LiveStorePg, account_id: UUID, customs: Mapping[str, CustomFieldSpec]
    ) -> Sequence[Column]:
        """The mapped columns of the connection's layout."""
        spec = await store.layout(account_id, self.settings.layout_id)
        if spec is None:
            self._problem = f"the mapped layout {self.settings.layout_id} is gone"
            return []
        columns = [c for c in spec.columns if c.header in self.settings.merge_fields]
        missing = sorted(set(self.settings.merge_fields) - {c.header for c in columns})
        if missing:
            self._problem = f"the layout has no column {', '.join(missing)} to map"
        return columns

    def _refused(self, outcome: Outcome, rule: str, error: str) -> Exchange:
        return Exchange.unsent("PUT", self._client.base, outcome, rule, error)

    async def send(self, values: Mapping[str, str], message_id: str) -> Exchange:
        """Upsert the referral's member (a referral without a usable address is
        rejected without a call)."""
        if self._problem:
            return self._refused(Outcome.DISABLE, "mapping", self._problem)
        email = email_of(self.settings, values)
        if not usable_email(email):
            return self._refused(Outcome.REJECTED, "no email", "no usable email address")
        body = member(self.settings, values, email)
        body["status_if_new"] = self.settings.status_if_new
        path = f"/lists/{self.settings.list_id}/members/{subscriber_hash(email)}"
        return await self._client.request("PUT", path, body)

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._client.close()


def mailchimp_senders(slots: KeySlots | None) -> SenderFactory:
    """The record sender factory, every sender sharing this replica's key slots."""

    def factory(
        connection: LiveConnection, secrets: Mapping[str, str], egress: EgressPolicy, now: Now
    ) -> MailchimpSender:
        return MailchimpSender(connection, secrets, egress, now, slots)

    return factory

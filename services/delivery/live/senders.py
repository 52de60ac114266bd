"""The per-referral send of the live loop, chosen by connection kind: a *record sender*
builds one referral's request and reads the answer into an `Exchange` with a verdict
(accepted, rejected, retry — with Retry-After —, or disable). Everything around it —
cursor, concurrency, rate, retries, dead letters, the disable rule, replay, attention and
the attempt log — is the loop's, one implementation for every kind.

A vendor adds a factory to `SENDERS` (and its kind to the live cursor trigger's list, see
migration 0011); its settings inherit `LivePolicy`, so the loop reads the same fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

from services.common.egress import EgressPolicy
from services.common.layouts.model import Column, CustomFieldSpec
from services.delivery.live.policy import LivePolicy
from services.delivery.live.render import template_columns
from services.delivery.live.store import LiveConnection, LiveStorePg
from services.delivery.transports.http.client import ApiClient, Exchange
from services.delivery.transports.http.settings import ApiSettings
from services.delivery.transports.http.templates import BodyTemplate, parse_body_template
from services.delivery.transports.sailthru.sender import SailthruSender

Now = Callable[[], datetime]


class RecordSender(Protocol):
    """One connection's per-referral send, for its live loop."""

    @property
    def policy(self) -> LivePolicy:
        """The live loop's settings of the connection."""
        ...

    async def prepare(
        self, store: LiveStorePg, account_id: UUID, customs: Mapping[str, CustomFieldSpec]
    ) -> Sequence[Column]:
        """Load what the sender needs (once per loop run) and name the values it sends:
        `send` gets each referral's values keyed by these columns' headers."""
        ...

    async def send(self, values: Mapping[str, str], message_id: str) -> Exchange:
        """Send one referral; never raises for a network failure (that is an exchange
        with a RETRY verdict). `message_id` is stable across attempts and replays."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


SenderFactory = Callable[[LiveConnection, Mapping[str, str], EgressPolicy, Now], RecordSender]


class ApiSender:
    """An API connection: the body template rendered, sent by `ApiClient`."""

    def __init__(
        self,
        connection: LiveConnection,
        secrets: Mapping[str, str],
        egress: EgressPolicy,
        now: Now,
    ) -> None:
        self.api = ApiSettings.from_json(connection.settings)
        self._client = ApiClient(self.api, secrets, egress, now=now)
        self.template: BodyTemplate | None = None

    @property
    def policy(self) -> LivePolicy:
        """The API settings are a live policy."""
        return self.api

    async def prepare(
        self, store: LiveStorePg, account_id: UUID, customs: Mapping[str, CustomFieldSpec]
    ) -> Sequence[Column]:
        """Parse the body template: its fields are the values."""
        self.template = parse_body_template(
            self.api.body_template or "{}", self.api.encoding, frozenset(customs)
        )
        return template_columns(self.template)

    async def send(self, values: Mapping[str, str], message_id: str) -> Exchange:
        """One request, as the template and the response rules say."""
        assert self.template is not None, "prepare() first"
        return await self._client.send(self.template, values, message_id)

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._client.close()


SENDERS: dict[str, SenderFactory] = {"api": ApiSender, "sailthru": SailthruSender}

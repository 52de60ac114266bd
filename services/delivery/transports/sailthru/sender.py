"""Sailthru in the live loop (real-time mode): one `POST /user` per referral — the email
as the id, the vars layout's columns as vars (typed as the connection says), the list —
read into the loop's exchange and verdict. Retries, dead letters, the disable rule, replay
and the attempt log are the loop's; a referral without a usable email, or with a value its
var's type cannot take, is rejected without a request."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from uuid import UUID

from services.common.egress import EgressPolicy
from services.common.layouts.model import Column, CustomFieldSpec
from services.delivery.live.policy import LivePolicy
from services.delivery.live.store import LiveConnection, LiveStorePg
from services.delivery.transports.http.client import Exchange
from services.delivery.transports.http.responses import Outcome
from services.delivery.transports.sailthru.client import SailthruClient, shared_gate
from services.delivery.transports.sailthru.payloads import (
    ReferralRefusedError,
    VarSpec,
    profile_vars,
    user_upsert,
)
from services.delivery.transports.sailthru.settings import SailthruSettings

EMAIL_HEADER = "@id"  # not a var name, so no layout column can take it


class SailthruSender:
    """A Sailthru connection in real time."""

    def __init__(
        self,
        connection: LiveConnection,
        secrets: Mapping[str, str],
        egress: EgressPolicy,
        now: Callable[[], datetime],
    ) -> None:
        self.settings = SailthruSettings.from_json(connection.settings)
        api_key = secrets.get("api_key", "")
        self._client = SailthruClient(
            self.settings.base_url,
            api_key,
            secrets.get("api_secret", ""),
            egress,
            timeout_s=self.settings.timeout_s,
            concurrency=self.settings.concurrency,
            gate=shared_gate(api_key),
        )
        self._vars: tuple[VarSpec, ...] = ()

    @property
    def policy(self) -> LivePolicy:
        """The Sailthru settings are a live policy."""
        return self.settings

    async def prepare(
        self, store: LiveStorePg, account_id: UUID, customs: Mapping[str, CustomFieldSpec]
    ) -> Sequence[Column]:
        """The vars layout's columns (the email apart: it is the id)."""
        layout = await store.layout(account_id, self.settings.layout_id)
        if layout is None:
            raise LookupError(f"the vars layout {self.settings.layout_id} is gone")
        columns = [c for c in layout.columns if c.field != "email"]
        types = self.settings.var_types
        self._vars = tuple(
            VarSpec(c.header, c.header, types.get(c.header, "string")) for c in columns
        )
        return [Column(EMAIL_HEADER, "email"), *columns]

    async def send(self, values: Mapping[str, str], message_id: str) -> Exchange:
        """One upsert (its payload is the same on every attempt: Sailthru's upsert is
        idempotent)."""
        try:
            profile = profile_vars(self._vars, values)
            payload = user_upsert(values.get(EMAIL_HEADER, ""), profile, self.settings.list_name)
        except ReferralRefusedError as exc:
            url = f"{self._client.base_url}/user"
            return Exchange.unsent("POST", url, Outcome.REJECTED, "referral", str(exc))
        answer = await self._client.request("POST", "user", payload)
        return answer.exchange

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._client.close()

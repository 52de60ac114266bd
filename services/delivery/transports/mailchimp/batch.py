"""Mailchimp for scheduled deliveries: the engine's record transport — batch upserts,
`POST /lists/{id}` with at most 500 members a call and `update_existing: true` (so a
resent range updates the same members: idempotent). The 200 answer's `errors[]` become
per-referral outcomes: an error whose message says to try again is left to the
delivery's next attempt (retry); any other (an invalid or fake address, a compliance
state, a merge value refused) rejects that referral for good.

Whole-call failures: throttling (429, a throttling 403) and 5xx or no answer are asked
again here after a growing hold, up to CALL_TRIES times, then the delivery retries
later; a refused key, a forbidden account, a missing audience or a merge-field problem
is permanent (the delivery is dead and its task needs attention).

Also the connection test (`probe`: the key, its data centre, the audience, the merge
fields) and the member reader for custom audiences (`read_members`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from services.common.egress import EgressPolicy
from services.delivery.key_slots import KeySlots
from services.delivery.transports.base import (
    Diagnosis,
    ItemResult,
    ItemStatus,
    OutgoingValues,
    PermanentError,
    ProbeReport,
    RecordTransport,
    RetryableError,
    TransportError,
)
from services.delivery.transports.http.client import Exchange
from services.delivery.transports.http.responses import Outcome
from services.delivery.transports.mailchimp.client import (
    MAX_BATCH_ANSWER,
    MailchimpCallError,
    MailchimpClient,
    usable_email,
)
from services.delivery.transports.mailchimp.members import email_of, member
from services.delivery.transports.mailchimp.settings import (
    EMAIL_TAG,
    MAX_BATCH,
    MailchimpSettings,
)

CALL_TRIES = 5
READ_PAGE = 1000  # Mailchimp's largest page


def item_status(error: Mapping[str, Any]) -> ItemStatus:
    """A batch error's verdict: retry when Mailchimp says to try again, else rejected."""
    text = f"{error.get('error', '')} {error.get('error_code', '')}".lower()
    return ItemStatus.RETRY if "try again" in text else ItemStatus.REJECTED


def failure(exchange: Exchange, what: str) -> TransportError:
    """The transport error of a call that did not succeed."""
    said = exchange.error or f"answered {exchange.status}"
    if exchange.verdict.outcome is Outcome.RETRY:
        return RetryableError(exchange.diagnosis or Diagnosis.PROTOCOL, f"{what}: {said}")
    if exchange.status in (401, 403) or exchange.verdict.rule == "key refused":
        return PermanentError(
            Diagnosis.AUTH,
            f"{what}: Mailchimp refused the API key or the account ({said}): "
            "check the key in the connection",
        )
    if exchange.status == 404:
        return PermanentError(Diagnosis.MISSING, f"{what}: the audience does not exist ({said})")
    return PermanentError(Diagnosis.CONFIG, f"{what}: {said}")


class MailchimpTransport:
    """One scheduled delivery's session with one Mailchimp audience."""

    batch_size = MAX_BATCH

    def __init__(
        self,
        settings: MailchimpSettings,
        api_key: str,
        egress: EgressPolicy,
        *,
        slots: KeySlots | None = None,
    ) -> None:
        self.settings = settings
        self.client = MailchimpClient(settings, api_key, egress, slots=slots)
        self.calls = 0  # API calls made (the bench counts them)

    async def __aenter__(self) -> MailchimpTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    async def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """A call asked again while it fails retryably (up to CALL_TRIES); its JSON."""
        for attempt in range(1, CALL_TRIES + 1):
            self.calls += 1
            exchange = await self.client.request(method, path, body, limit=MAX_BATCH_ANSWER)
            if exchange.verdict.outcome is Outcome.ACCEPTED:
                try:
                    return json.loads(exchange.response_head)
                except ValueError as exc:
                    raise RetryableError(
                        Diagnosis.PROTOCOL, f"{method} {path}: an answer that is not JSON"
                    ) from exc
            if exchange.verdict.outcome is not Outcome.RETRY or attempt == CALL_TRIES:
                raise failure(exchange, f"{method} {path}")
            await asyncio.sleep(exchange.retry_after_s or float(attempt))
        raise AssertionError("unreachable")

    async def send_batch(self, records: Sequence[OutgoingValues]) -> Sequence[ItemResult]:
        """Upsert up to 500 referrals as members; each one's verdict."""
        if len(records) > MAX_BATCH:
            raise PermanentError(Diagnosis.CONFIG, f"at most {MAX_BATCH} members a call")
        results: list[ItemResult] = []
        by_email: dict[str, list[int]] = {}
        members: dict[str, dict[str, Any]] = {}
        for record in records:
            email = email_of(self.settings, record.values)
            if not usable_email(email):
                results.append(
                    ItemResult(str(record.seq), ItemStatus.REJECTED, "no usable email address")
                )
                continue
            key = email.lower()
            by_email.setdefault(key, []).append(record.seq)
            body = member(self.settings, record.values, email)
            body["status"] = self.settings.status_if_new
            members[key] = body  # the same address twice: the later referral's values
        if not members:
            return results
        answer = await self._call(
            "POST",
            f"/lists/{self.settings.list_id}",
            {"members": list(members.values()), "update_existing": True},
        )
        for error in answer.get("errors") or ():
            key = str(error.get("email_address", "")).strip().lower()
            status = item_status(error)
            detail = f"{error.get('error_code', '')}: {error.get('error', '')}".strip(": ")
            results += [ItemResult(str(seq), status, detail[:500]) for seq in by_email.get(key, ())]
        return results

    async def probe(self) -> ProbeReport:
        """The key (and its data centre), the audience, and every mapped merge field."""
        steps = [f"data centre {self.client.dc or '?'} (from the key)"]
        audience = await self._call(
            "GET", f"/lists/{self.settings.list_id}?fields=id,name,stats.member_count"
        )
        count = (audience.get("stats") or {}).get("member_count", "?")
        steps.append(f"audience {audience.get('name', self.settings.list_id)!r}: {count} members")
        tags: set[str] = {EMAIL_TAG}
        try:
            async for page in self.client.pages(
                f"/lists/{self.settings.list_id}/merge-fields", "merge_fields.tag,total_items",
                "merge_fields",
            ):  # fmt: skip
                tags |= {str(f.get("tag", "")) for f in page}
        except MailchimpCallError as exc:
            raise failure(exc.exchange, "reading the merge fields") from exc
        missing = sorted(set(self.settings.merge_fields.values()) - tags)
        if missing:
            raise PermanentError(
                Diagnosis.CONFIG,
                f"the audience has no merge field {', '.join(missing)}: add it in Mailchimp "
                "or change the mapping",
            )
        steps.append(f"merge fields {', '.join(sorted(set(self.settings.merge_fields.values())))}")
        return ProbeReport(tuple(steps))


async def read_members(
    settings: MailchimpSettings,
    secrets: Mapping[str, str],
    egress: EgressPolicy,
    *,
    page_size: int = READ_PAGE,
    slots: KeySlots | None = None,
) -> AsyncIterator[list[tuple[str, str]]]:
    """An audience's members as batches of (email, status), a page at a time (memory
    holds one page; only the two fields are asked for). Raises TransportError."""
    client = MailchimpClient(settings, secrets.get("api_key", ""), egress, slots=slots)
    try:
        async for page in client.pages(
            f"/lists/{settings.list_id}/members",
            "members.email_address,members.status,total_items",
            "members",
            count=min(page_size, READ_PAGE),
        ):
            yield [(str(m.get("email_address", "")), str(m.get("status", ""))) for m in page]
    except MailchimpCallError as exc:
        raise failure(exc.exchange, "reading the audience") from exc
    finally:
        await client.close()


def mailchimp_transports(
    slots: KeySlots | None,
) -> Callable[[dict[str, Any], dict[str, str], EgressPolicy], RecordTransport]:
    """The engine's transport factory for Mailchimp connections (sharing key slots)."""

    def factory(
        settings: dict[str, Any], secrets: dict[str, str], egress: EgressPolicy
    ) -> RecordTransport:
        return MailchimpTransport(
            MailchimpSettings.from_json(settings), secrets.get("api_key", ""), egress,
            slots=slots,
        )  # fmt: skip

    return factory

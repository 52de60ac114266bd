"""Recipient rules: add (pending, with a confirmation), list, approve (operator or the
link), revoke — every change recorded with who and how."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from services.common.errors import (
    FailedPreconditionError,
    FieldProblem,
    InvalidArgumentError,
    NotFoundError,
)
from services.common.ids import parse_id
from services.common.signed_links import LinkSigner
from services.common.smtp_relay import SmtpRelay
from services.delivery.transports.email_message import (
    confirmation_message,
    message_id,
    sender_domain,
)
from services.scheduler.recipients.store import EmailConnectionRef, Recipient, RecipientStorePg

CONFIRM_PURPOSE = "confirm-recipient"
_ADDRESS = re.compile(r"[^@\s<>\"',;]+@[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\.[A-Za-z]{2,}")


@dataclass(frozen=True)
class Actor:
    """Who asks: a credential id, and whether as an operator or for the account."""

    credential: str
    how: str  # operator, account


@dataclass(frozen=True)
class Confirmations:
    """How confirmations go out: the relay, the link signer, where the export service
    answers links, and how long a link lives."""

    relay: SmtpRelay | None
    signer: LinkSigner
    public_url: str  # e.g. https://handoff.example.com (the export service)
    ttl_s: float = 7 * 24 * 3600.0

    def link(self, recipient_id: UUID) -> str:
        """The signed confirmation link of a recipient."""
        token = self.signer.sign(CONFIRM_PURPOSE, str(recipient_id), self.ttl_s)
        return f"{self.public_url.rstrip('/')}/v1/links/confirm?token={token}"


@dataclass(frozen=True)
class Added:
    """A recipient after AddRecipient, and whether its confirmation went out."""

    recipient: Recipient
    confirmation_sent: bool
    confirmation_error: str = ""


def check_address(address: str) -> str:
    """The address, trimmed with its domain lower-cased, or InvalidArgumentError."""
    text = address.strip()
    if len(text) > 254 or not _ADDRESS.fullmatch(text):
        raise InvalidArgumentError(
            "address is not an email address (name@example.com)",
            [FieldProblem("address", "INVALID_FORMAT", "is not an email address")],
        )
    local, _, domain = text.rpartition("@")
    return f"{local}@{domain.lower()}"


async def _email_connection(
    store: RecipientStorePg, account_id: str, connection_id: str
) -> EmailConnectionRef:
    account, wanted = parse_id("account_id", account_id), parse_id("connection_id", connection_id)
    found = await store.connection(account, wanted)
    if found is None:
        raise NotFoundError(f"connection {wanted} does not exist in account {account}")
    if found.kind != "email":
        raise FailedPreconditionError(
            f"connection {wanted} is an {found.kind} connection: recipients belong to email ones"
        )
    return found


async def _send_confirmation(
    confirmations: Confirmations | None, connection: EmailConnectionRef, recipient: Recipient
) -> tuple[bool, str]:
    if confirmations is None or confirmations.relay is None:
        return False, "no SMTP relay is configured (HANDOFF_SMTP_HOST), so no confirmation"
    relay = confirmations.relay
    now = datetime.now(UTC)
    message = confirmation_message(
        sender=relay.sender, recipient=recipient.address, connection_name=connection.name,
        account_name=connection.account_name, link=confirmations.link(recipient.id),
        msg_id=message_id(f"confirm:{now.isoformat()}", str(recipient.id),
                          sender_domain(relay.sender)),
        sent_at=now,
    )  # fmt: skip
    try:
        await relay.send_one(message, recipient.address)
    except Exception as exc:  # the relay's answer, for the caller to see
        return False, f"the confirmation could not be sent: {exc}"
    return True, ""


async def add_recipient(
    store: RecipientStorePg, confirmations: Confirmations | None, actor: Actor,
    account_id: str, connection_id: str, address: str,
) -> Added:  # fmt: skip
    """Add a pending recipient and send its confirmation (again, for a pending one)."""
    connection = await _email_connection(store, account_id, connection_id)
    clean = check_address(address)
    found = await store.find(connection.id, clean)
    if found is not None and found.state == "approved":
        return Added(found, False, "already approved: no confirmation needed")
    if found is None:
        made = await store.insert(
            uuid.uuid4(), connection.id, parse_id("account_id", account_id), clean,
            actor.how, actor.credential,
        )  # fmt: skip
        found = made or await store.find(connection.id, clean)
        assert found is not None
    elif found.state == "revoked":
        found = await store.set_state(found.id, "pending", actor.how, actor.credential)
    sent, error = await _send_confirmation(confirmations, connection, found)
    return Added(found, sent, error)


async def list_recipients(
    store: RecipientStorePg, account_id: str, connection_id: str
) -> list[Recipient]:
    """The email connection's recipients."""
    connection = await _email_connection(store, account_id, connection_id)
    return await store.all(connection.id)


async def _recipient(
    store: RecipientStorePg, account_id: str, connection_id: str, recipient_id: str
) -> Recipient:
    connection = await _email_connection(store, account_id, connection_id)
    wanted = parse_id("id", recipient_id)
    found = await store.get(connection.id, wanted)
    if found is None:
        raise NotFoundError(f"recipient {wanted} does not exist on connection {connection.id}")
    return found


async def approve_recipient(
    store: RecipientStorePg, actor: Actor, account_id: str, connection_id: str, recipient_id: str
) -> Recipient:
    """An operator approves (the rule admits no account token)."""
    found = await _recipient(store, account_id, connection_id, recipient_id)
    if found.state == "approved":
        return found
    return await store.set_state(found.id, "approved", "operator", actor.credential)


async def revoke_recipient(
    store: RecipientStorePg, actor: Actor, account_id: str, connection_id: str, recipient_id: str
) -> Recipient:
    """The account or an operator revokes: no data is sent to it from now on."""
    found = await _recipient(store, account_id, connection_id, recipient_id)
    if found.state == "revoked":
        return found
    return await store.set_state(found.id, "revoked", actor.how, actor.credential)

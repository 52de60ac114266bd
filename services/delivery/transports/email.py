"""Email through the deployment's SMTP relay (aiosmtplib), to approved recipients only.

The file is spooled first (its size decides how it travels): attached, gzipped above the
connection's threshold, or — larger than the relay's message cap allows — replaced by a
signed, expiring link to download exactly that delivery's file. Each recipient gets its
own message with a stable Message-ID (delivery and recipient), in its own SMTP
transaction, so each answer is that recipient's: accepted, 5xx (recorded as failed for
good, the account told) or 4xx (tried again, for that recipient alone, with the same
Message-ID). Accepted and failed recipients are recorded as they happen, so a retry after
a crash or a 4xx never sends twice to one who accepted: at-least-once, with a stable id.
A delivery whose connection has no approved recipient is a permanent error (the task
needs attention) rather than a silent success.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol
from uuid import UUID
from zoneinfo import ZoneInfo

import aiosmtplib

from services.common.signed_links import LinkSigner
from services.common.smtp_relay import SmtpRelay
from services.delivery.email_store import ApprovedRecipient
from services.delivery.spool import Spool, SpoolFullError, gzipped
from services.delivery.transports.base import (
    Diagnosis,
    FileReceipt,
    ItemResult,
    ItemStatus,
    OutgoingFile,
    OutgoingRecord,
    PermanentError,
    ProbeReport,
    RetryableError,
    TransportError,
)
from services.delivery.transports.email_message import (
    FileFacts,
    file_message,
    message_id,
    sender_domain,
)

_CONTENT_TYPES = {
    "csv": "text/csv",
    "jsonl": "application/x-ndjson",
    "gpg": "application/pgp-encrypted",
}


class RecipientLedger(Protocol):
    """Who may receive a delivery, and what each answered."""

    async def recipients(self, delivery_id: UUID) -> list[ApprovedRecipient]: ...
    async def record(
        self, delivery_id: UUID, recipient: ApprovedRecipient, outcome: str, message_id: str,
        detail: str,
    ) -> None: ...  # fmt: skip


DownloadLink = Callable[[str, str], str]  # (delivery id, file name) -> URL


@dataclass(frozen=True)
class EmailSettings:
    """A connection's templates and attachment options."""

    subject_template: str
    body_template: str
    gzip_above_bytes: int  # -1: never


def email_settings(stored: dict[str, Any]) -> EmailSettings:
    """The transport's settings from a connection's stored settings."""
    return EmailSettings(
        str(stored["subject_template"]),
        str(stored["body_template"]),
        int(stored.get("gzip_above_bytes", 1024 * 1024)),
    )


def _content_type(name: str) -> str:
    return _CONTENT_TYPES.get(name.rsplit(".", 1)[-1], "application/octet-stream")


class EmailTransport:
    """One delivery's messages; `async with EmailTransport(...) as email: ...`."""

    def __init__(
        self,
        settings: EmailSettings,
        relay: SmtpRelay | None,
        ledger: RecipientLedger,
        spool: Spool,
        download_link: DownloadLink | None = None,
    ) -> None:
        self._settings = settings
        self._relay = relay
        self._ledger = ledger
        self._spool = spool
        self._download_link = download_link

    async def __aenter__(self) -> EmailTransport:
        if self._relay is None:
            raise PermanentError(
                Diagnosis.CONFIG,
                "email delivery needs the deployment's SMTP relay: HANDOFF_SMTP_HOST is not set",
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def send_file(self, file: OutgoingFile, chunks: AsyncIterator[bytes]) -> FileReceipt:
        """Spool, then send one message per approved recipient without an outcome yet."""
        relay = self._relay
        about = file.context
        assert relay is not None
        if about is None:
            raise PermanentError(Diagnosis.CONFIG, "an email needs the delivery it belongs to")
        delivery = UUID(about.delivery_id)
        recipients = await self._ledger.recipients(delivery)
        if not recipients:
            raise PermanentError(
                Diagnosis.CONFIG,
                "no approved recipient: every recipient of this email connection is pending "
                "or revoked (a recipient is approved by its confirmation link or an operator)",
            )
        with self._spool.folder() as folder:
            try:
                raw = await self._spool.write(folder / file.name, chunks)
            except SpoolFullError as exc:
                raise PermanentError(Diagnosis.CONFIG, str(exc)) from exc
            name, path, size = file.name, raw.path, raw.size
            threshold = self._settings.gzip_above_bytes
            if threshold >= 0 and raw.size > threshold:
                name = f"{file.name}.gz"
                size = await asyncio.to_thread(gzipped, raw.path, folder / name)
                path = folder / name
            link = ""
            if size > relay.attachment_limit:
                if self._download_link is None:
                    raise PermanentError(
                        Diagnosis.CONFIG,
                        f"{name} has {size} bytes, more than the relay's message cap allows "
                        f"({relay.attachment_limit}), and no download link can be offered "
                        "(the delivery service has no link signer)",
                    )
                link = self._download_link(about.delivery_id, file.name)
                name = file.name  # the download is the file itself
            zone = ZoneInfo(about.time_zone or "UTC")
            facts = FileFacts(
                about.task_name,
                about.delivered_at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z"),
                about.rows(),
                name,
            )
            items = await self._send_all(
                relay, delivery, [r for r in recipients if not r.done], facts,
                path, name, _content_type(name), link,
            )  # fmt: skip
        retry = [i for i in items if i.status is ItemStatus.RETRY]
        if retry:
            said = "; ".join(f"{i.key}: {i.detail}" for i in retry[:3])
            raise RetryableError(
                Diagnosis.PROTOCOL,
                f"{len(retry)} recipient(s) will be tried again ({said}); the others are "
                "recorded and are not sent twice",
            )
        return FileReceipt(f"email:{name}", raw.size, raw.sha256, tuple(items))

    async def _send_all(
        self, relay: SmtpRelay, delivery: UUID, outstanding: list[ApprovedRecipient],
        facts: FileFacts, path: Any, name: str, content_type: str, link: str,
    ) -> list[ItemResult]:  # fmt: skip
        if not outstanding:
            return []
        subject = facts.fill(self._settings.subject_template)
        body = facts.fill(self._settings.body_template)
        domain = sender_domain(relay.sender)
        items: list[ItemResult] = []
        smtp = relay.client()
        try:
            await smtp.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise _relay_error(exc, f"the SMTP relay {relay.host}:{relay.port}") from exc
        try:
            for index, recipient in enumerate(outstanding):
                msg_id = message_id(str(delivery), str(recipient.id), domain)
                message = await asyncio.to_thread(
                    partial(
                        file_message, sender=relay.sender, recipient=recipient.address,
                        subject=subject, body=body, msg_id=msg_id, sent_at=datetime.now(UTC),
                        attachment=path, attachment_name=name, content_type=content_type,
                        link=link,
                    )
                )  # fmt: skip
                try:
                    await smtp.send_message(
                        message, sender=relay.sender, recipients=[recipient.address]
                    )
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    refused = exc.recipients[0]
                    items.append(
                        await self._refused(
                            delivery, recipient, msg_id, refused.code, refused.message
                        )
                    )
                    continue
                except aiosmtplib.SMTPServerDisconnected as exc:
                    items += [
                        ItemResult(r.address, ItemStatus.RETRY, f"the relay hung up ({exc})")
                        for r in outstanding[index:]
                    ]
                    break
                except aiosmtplib.SMTPResponseException as exc:
                    items.append(
                        await self._refused(delivery, recipient, msg_id, exc.code, exc.message)
                    )
                    if exc.code == 421:  # the relay closes the session: the rest later
                        items += [
                            ItemResult(r.address, ItemStatus.RETRY, "the relay closed the session")
                            for r in outstanding[index + 1 :]
                        ]
                        break
                    continue
                except (aiosmtplib.SMTPException, OSError) as exc:
                    items += [
                        ItemResult(r.address, ItemStatus.RETRY, f"connection lost ({exc})")
                        for r in outstanding[index:]
                    ]
                    break
                await self._ledger.record(delivery, recipient, "accepted", msg_id, "")
                items.append(ItemResult(recipient.address, ItemStatus.ACCEPTED))
        finally:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()
        return items

    async def _refused(
        self, delivery: UUID, recipient: ApprovedRecipient, msg_id: str, code: int, text: str
    ) -> ItemResult:
        detail = f"{code} {text}".strip()
        if 500 <= code < 600:
            await self._ledger.record(delivery, recipient, "failed", msg_id, detail)
            return ItemResult(recipient.address, ItemStatus.REJECTED, detail)
        return ItemResult(recipient.address, ItemStatus.RETRY, detail)

    async def send_record(self, record: OutgoingRecord) -> ItemResult:
        """Email delivers files, not single records."""
        raise PermanentError(Diagnosis.CONFIG, "an email connection sends files, not records")

    async def probe(self) -> ProbeReport:
        """Connect to the relay, TLS and log in, without sending anything."""
        relay = self._relay
        assert relay is not None
        smtp = relay.client()
        try:
            await smtp.connect()
            await smtp.noop()
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise _relay_error(exc, f"the SMTP relay {relay.host}:{relay.port}") from exc
        finally:
            smtp.close()
        return ProbeReport(
            steps=(
                f"connected to the SMTP relay {relay.host}:{relay.port} ({relay.tls})",
                "logged in" if relay.username else "no login configured",
            )
        )


def _relay_error(exc: BaseException, what: str) -> TransportError:
    """A relay failure before any recipient: authentication and TLS are permanent."""
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return PermanentError(Diagnosis.AUTH, f"{what} refused the login: {exc}")
    if isinstance(exc, aiosmtplib.SMTPException) and "STARTTLS" in str(exc).upper():
        return PermanentError(
            Diagnosis.TLS, f"{what} does not offer STARTTLS, and TLS is required: {exc}"
        )
    if isinstance(exc, ConnectionRefusedError):
        return RetryableError(Diagnosis.REFUSED, f"{what} refused the connection")
    if isinstance(exc, aiosmtplib.SMTPConnectTimeoutError | TimeoutError):
        return RetryableError(Diagnosis.TIMEOUT, f"{what} did not answer in time")
    return RetryableError(Diagnosis.CONNECTION_LOST, f"{what}: {exc}")


def email_transport_factory(
    relay: SmtpRelay | None,
    ledger: RecipientLedger,
    spool: Spool,
    download_link: DownloadLink | None = None,
) -> Callable[[dict[str, Any], dict[str, str], Any], EmailTransport]:
    """The engine's factory for email connections (the relay and spool are the
    deployment's; a connection brings only its templates)."""

    def build(settings: dict[str, Any], secrets: dict[str, str], egress: Any) -> EmailTransport:
        return EmailTransport(email_settings(settings), relay, ledger, spool, download_link)

    return build


DOWNLOAD_PURPOSE = "download-delivery"


def download_links(signer: LinkSigner, base_url: str, ttl_s: float) -> DownloadLink:
    """Signed, expiring links to the export service's download of one delivery's file."""

    def link(delivery_id: str, name: str) -> str:
        token = signer.sign(DOWNLOAD_PURPOSE, delivery_id, ttl_s)
        return f"{base_url.rstrip('/')}/v1/links/download?token={token}"

    return link

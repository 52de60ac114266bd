"""The messages of email delivery, as plain functions: subject and body templates, the
stable Message-ID of a (delivery, recipient), the file message (attachment or link) and
the recipient's confirmation message."""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from pathlib import Path

TEMPLATE_FIELDS = frozenset({"task", "date", "rows", "file"})


def message_template_problem(text: str, limit: int) -> str:
    """Why a subject or body template cannot work ("" when it can): only {task}, {date},
    {rows} and {file}, no format specs, at most `limit` characters."""
    if len(text) > limit:
        return f"at most {limit} characters"
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        return f"not a template: {exc} (write {{{{ and }}}} for braces)"
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS or spec or conversion:
            return f"unknown token {{{name}}}: use {{task}}, {{date}}, {{rows}} or {{file}}"
    return ""


@dataclass(frozen=True)
class FileFacts:
    """What the subject and body may say about a delivery: never referral data."""

    task: str
    date: str
    rows: int
    file: str

    def fill(self, template: str) -> str:
        """The template with its tokens filled."""
        return template.format(task=self.task, date=self.date, rows=self.rows, file=self.file)


def message_id(delivery_id: str, recipient_id: str, domain: str) -> str:
    """The Message-ID of one delivery to one recipient: the same on every retry, so a
    message sent twice after a crash is recognisable as the same one."""
    digest = hashlib.sha256(f"{delivery_id}:{recipient_id}".encode()).hexdigest()[:32]
    return f"<handoff.{digest}@{domain}>"


def sender_domain(sender: str) -> str:
    """The domain of the From address (for Message-IDs)."""
    return sender.rpartition("@")[2].strip("> ") or "handoff.invalid"


def file_message(
    *, sender: str, recipient: str, subject: str, body: str, msg_id: str, sent_at: datetime,
    attachment: Path | None, attachment_name: str, content_type: str, link: str = "",
) -> EmailMessage:  # fmt: skip
    """The message carrying a delivery's file: attached, or (too large) a download link."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Message-ID"] = msg_id
    message["Date"] = format_datetime(sent_at)
    message["Auto-Submitted"] = "auto-generated"
    if link:
        body = (
            f"{body}\nThe file {attachment_name} is too large to attach; download it "
            f"(the link expires) from:\n\n{link}\n"
        )
    message.set_content(body)
    if attachment is not None and not link:
        maintype, _, subtype = content_type.partition("/")
        message.add_attachment(
            attachment.read_bytes(), maintype=maintype, subtype=subtype,
            filename=attachment_name,
        )  # fmt: skip
    return message


def confirmation_message(
    *, sender: str, recipient: str, connection_name: str, account_name: str, link: str,
    msg_id: str, sent_at: datetime,
) -> EmailMessage:  # fmt: skip
    """The only message a pending recipient gets: what it is asked, and the link."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = f"Confirm that you want referral deliveries from {account_name}"
    message["Message-ID"] = msg_id
    message["Date"] = format_datetime(sent_at)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        f"Hello,\n\n{account_name} asked to send referral files to {recipient} "
        f"(delivery {connection_name!r}). Nothing will be sent before you confirm.\n\n"
        f"To confirm, open this link (it expires):\n\n{link}\n\n"
        "If you did not expect this, ignore this message: without confirmation this "
        "address receives nothing.\n"
    )
    return message


def display_sender(name: str, address: str) -> str:
    """A From header value."""
    return formataddr((name, address)) if name else address

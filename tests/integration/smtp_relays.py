"""A real SMTP relay on loopback for the email tests: aiosmtpd on a thread, STARTTLS
required and AUTH required, keeping every message; replies can be scripted per address
(a 550 for one, a 451 or 421 the first time for another)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from services.common.smtp_relay import SmtpRelay
from tests.integration.tls_support import self_signed, write_pair

RELAY_USER = "relay-user"
RELAY_PASSWORD = "relay-s3cret"
SENDER = "handoff@deliveries.example.com"


@dataclass
class Received:
    """One accepted message: its envelope and the parsed message."""

    sender: str
    recipients: list[str]
    message: EmailMessage

    def attachments(self) -> list[tuple[str, bytes]]:
        """(file name, bytes) of each attachment."""
        return [
            (str(part.get_filename()), bytes(part.get_payload(decode=True)))
            for part in self.message.iter_attachments()
        ]


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    # address -> replies to give to RCPT TO, one per attempt ("" or missing: accept)
    rcpt_replies: dict[str, list[str]] = field(default_factory=dict)
    logins: list[str] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        script = self.rcpt_replies.get(address)
        if script:
            reply = script.pop(0) if len(script) > 1 else script[0]
            if reply:
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted"


@dataclass
class RunningRelay:
    """A running relay: the client settings that reach it, and what it kept."""

    relay: SmtpRelay
    handler: _Handler

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def to(self, address: str) -> list[Received]:
        """The messages accepted for `address`."""
        return [r for r in self.handler.received if address in r.recipients]

    def script(self, address: str, *replies: str) -> None:
        """RCPT TO replies for `address`: each attempt takes the next; the last repeats."""
        self.handler.rcpt_replies[address] = list(replies)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _authenticator(handler: _Handler) -> Any:
    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        handler.logins.append(data.login.decode())
        ok = data.login == RELAY_USER.encode() and data.password == RELAY_PASSWORD.encode()
        return AuthResult(success=ok)

    return check


@contextmanager
def smtp_relay(
    folder: Path, *, max_message_bytes: int = 10 * 1024 * 1024
) -> Iterator[RunningRelay]:
    """aiosmtpd with STARTTLS and AUTH required on a free loopback port."""
    cert, key = write_pair(folder, self_signed())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = _Handler()
    port = _free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
        auth_required=True, authenticator=_authenticator(handler),
        data_size_limit=max_message_bytes * 2,
    )  # fmt: skip
    controller.start()
    try:
        relay = SmtpRelay(
            host="127.0.0.1", port=port, tls="starttls", username=RELAY_USER,
            password=RELAY_PASSWORD, sender=SENDER, ca_file=str(cert),
            max_message_bytes=max_message_bytes, timeout_s=10,
        )  # fmt: skip
        yield RunningRelay(relay, handler)
    finally:
        controller.stop()

"""The deployment's SMTP relay (aiosmtplib): where email delivery and recipient
confirmations go out, configured by environment.

TLS to the relay is required — STARTTLS (refused if the relay does not offer it) or
implicit TLS — unless the operator opts out with HANDOFF_SMTP_TLS=none, meant for a test
relay. The relay is the operator's own, so it is not subject to the egress policy.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Literal

import aiosmtplib

from services.common.config import ConfigError

RelayTls = Literal["starttls", "implicit", "none"]


@dataclass(frozen=True)
class SmtpRelay:
    """How to reach the relay, and the deployment-wide message cap."""

    host: str
    port: int = 587
    tls: RelayTls = "starttls"
    username: str = ""
    password: str = field(default="", repr=False)
    sender: str = ""
    ca_file: str = ""  # trust for the relay's certificate; empty: the system store
    max_message_bytes: int = 10 * 1024 * 1024
    timeout_s: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SmtpRelay | None:
        """The relay of HANDOFF_SMTP_* (None when HANDOFF_SMTP_HOST is unset: no email)."""
        env = os.environ if env is None else env
        host = env.get("HANDOFF_SMTP_HOST", "").strip()
        if not host:
            return None
        tls = env.get("HANDOFF_SMTP_TLS", "starttls").strip().lower()
        if tls not in ("starttls", "implicit", "none"):
            raise ConfigError("HANDOFF_SMTP_TLS is starttls, implicit or none (a test relay)")
        sender = env.get("HANDOFF_SMTP_FROM", "").strip()
        if "@" not in sender:
            raise ConfigError(
                "HANDOFF_SMTP_FROM must be the From address, e.g. handoff@example.com"
            )
        try:
            port = int(env.get("HANDOFF_SMTP_PORT", "") or (465 if tls == "implicit" else 587))
            cap = int(env.get("HANDOFF_SMTP_MAX_MESSAGE_BYTES", "") or 10 * 1024 * 1024)
        except ValueError as exc:
            raise ConfigError(f"HANDOFF_SMTP_PORT / _MAX_MESSAGE_BYTES: {exc}") from exc
        if cap < 64 * 1024:
            raise ConfigError("HANDOFF_SMTP_MAX_MESSAGE_BYTES must be at least 65536")
        return cls(
            host=host, port=port, tls=tls,  # type: ignore[arg-type]
            username=env.get("HANDOFF_SMTP_USERNAME", ""),
            password=env.get("HANDOFF_SMTP_PASSWORD", ""), sender=sender,
            ca_file=env.get("HANDOFF_SMTP_CA_FILE", ""), max_message_bytes=cap,
        )  # fmt: skip

    @property
    def attachment_limit(self) -> int:
        """The largest attachment that fits the cap (base64 grows it by a third, plus
        headers and the body)."""
        return self.max_message_bytes * 3 // 4 - 16 * 1024

    def client(self) -> aiosmtplib.SMTP:
        """An unconnected client for the relay."""
        context = None
        if self.tls != "none":
            context = ssl.create_default_context(cafile=self.ca_file or None)
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            use_tls=self.tls == "implicit",
            start_tls=self.tls == "starttls",
            tls_context=context,
            username=self.username or None,
            password=self.password or None,
            timeout=self.timeout_s,
        )

    async def send_one(self, message: EmailMessage, recipient: str) -> None:
        """Send `message` to `recipient` over a connection of its own (confirmations)."""
        async with self.client() as smtp:
            await smtp.send_message(message, sender=self.sender, recipients=[recipient])

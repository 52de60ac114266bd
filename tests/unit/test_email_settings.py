"""Email settings: the relay from the environment (TLS unless opted out), message
templates, and the stable Message-ID."""

from __future__ import annotations

import pytest

from services.common.config import ConfigError
from services.common.smtp_relay import SmtpRelay
from services.delivery.transports.email_message import (
    FileFacts,
    message_id,
    message_template_problem,
)


def test_the_relay_needs_tls_unless_the_operator_opts_out() -> None:
    assert SmtpRelay.from_env({}) is None
    relay = SmtpRelay.from_env({"HANDOFF_SMTP_HOST": "mail", "HANDOFF_SMTP_FROM": "h@x.example"})
    assert relay is not None
    assert (relay.tls, relay.port) == ("starttls", 587)
    implicit = SmtpRelay.from_env(
        {
            "HANDOFF_SMTP_HOST": "m",
            "HANDOFF_SMTP_FROM": "h@x.example",
            "HANDOFF_SMTP_TLS": "implicit",
        }
    )
    assert implicit is not None
    assert implicit.port == 465
    with pytest.raises(ConfigError, match="starttls, implicit or none"):
        SmtpRelay.from_env(
            {
                "HANDOFF_SMTP_HOST": "m",
                "HANDOFF_SMTP_FROM": "h@x.example",
                "HANDOFF_SMTP_TLS": "off",
            }
        )
    with pytest.raises(ConfigError, match="HANDOFF_SMTP_FROM"):
        SmtpRelay.from_env({"HANDOFF_SMTP_HOST": "m"})
    assert "relay-pw" not in repr(
        SmtpRelay.from_env(
            {"HANDOFF_SMTP_HOST": "m", "HANDOFF_SMTP_FROM": "h@x.example",
             "HANDOFF_SMTP_PASSWORD": "relay-pw"}
        )
    )  # fmt: skip


def test_templates_take_only_the_delivery_facts() -> None:
    assert message_template_problem("{task}: {rows} on {date} ({file})", 200) == ""
    assert "unknown token {email}" in message_template_problem("{email}", 200)
    assert "unknown token" in message_template_problem("{rows:>10}", 200)
    assert "not a template" in message_template_problem("{oops", 200)
    facts = FileFacts("Daily", "2026-01-02", 3, "d.csv")
    assert facts.fill("{task} {rows} {{literal}}") == "Daily 3 {literal}"


def test_the_message_id_is_stable_per_delivery_and_recipient() -> None:
    one = message_id("d1", "r1", "x.example")
    assert one == message_id("d1", "r1", "x.example")
    assert one != message_id("d1", "r2", "x.example")
    assert one.startswith("<handoff.")
    assert one.endswith("@x.example>")

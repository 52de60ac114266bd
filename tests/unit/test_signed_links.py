"""Signed links: what they say comes back only untampered, for their purpose, in time, and
under a key that is still configured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.secrets import SecretBox, new_key_entry
from services.common.signed_links import LinkError, LinkSigner

OLD = new_key_entry("k1")
NEW = new_key_entry("k2")


def test_a_token_names_its_subject_until_it_expires() -> None:
    signer = LinkSigner(SecretBox.from_env({"HANDOFF_SECRET_KEYS": OLD}))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    token = signer.sign("confirm-recipient", "abc", 60, now)
    assert signer.check(token, "confirm-recipient", now).subject == "abc"
    with pytest.raises(LinkError, match="expired"):
        signer.check(token, "confirm-recipient", now + timedelta(seconds=61))
    with pytest.raises(LinkError, match="not for this"):
        signer.check(token, "download", now)


def test_a_tampered_or_foreign_token_is_refused() -> None:
    signer = LinkSigner(SecretBox.from_env({"HANDOFF_SECRET_KEYS": OLD}))
    token = signer.sign("confirm-recipient", "abc", 60)
    head, _, tail = token.partition(".")
    forged = LinkSigner(SecretBox.from_env({"HANDOFF_SECRET_KEYS": new_key_entry("k1")}))
    with pytest.raises(LinkError, match="signature"):
        forged.check(token, "confirm-recipient")
    with pytest.raises(LinkError):
        signer.check(head + "." + tail[:-2], "confirm-recipient")
    with pytest.raises(LinkError):
        signer.check("garbage", "confirm-recipient")


def test_a_token_survives_a_key_rotation_while_its_key_is_configured() -> None:
    before = LinkSigner(SecretBox.from_env({"HANDOFF_SECRET_KEYS": OLD}))
    token = before.sign("confirm-recipient", "abc", 60)
    after = LinkSigner(SecretBox.from_env({"HANDOFF_SECRET_KEYS": f"{NEW},{OLD}"}))
    assert after.check(token, "confirm-recipient").subject == "abc"
    dropped = LinkSigner(SecretBox.from_env({"HANDOFF_SECRET_KEYS": NEW}))
    with pytest.raises(LinkError):
        dropped.check(token, "confirm-recipient")

"""Secrets at rest: sealed with the active key, opened by id, bound to their place."""

from __future__ import annotations

import pytest

from services.common.config import ConfigError
from services.common.secrets import SecretBox, SecretError, new_key_entry

OLD, NEW = new_key_entry("k1"), new_key_entry("k2")


def test_a_sealed_secret_opens_only_in_its_own_place_and_never_shows() -> None:
    box = SecretBox.from_env({"HANDOFF_SECRET_KEYS": OLD})
    sealed = box.seal("hunter2", "connection:1:password")
    assert "hunter2" not in sealed
    assert sealed.startswith("k1:")
    assert box.open(sealed, "connection:1:password") == "hunter2"
    assert box.seal("hunter2", "connection:1:password") != sealed  # a fresh nonce each time
    with pytest.raises(SecretError, match="does not open here"):
        box.open(sealed, "connection:2:password")
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(SecretError):
        box.open(tampered, "connection:1:password")
    assert repr(box) == "SecretBox(active='k1')"  # the keys never show


def test_keys_rotate_without_losing_a_secret() -> None:
    before = SecretBox.from_env({"HANDOFF_SECRET_KEYS": OLD})
    sealed = before.seal("s3cret", "c")
    during = SecretBox.from_env({"HANDOFF_SECRET_KEYS": f"{NEW},{OLD}"})
    assert during.open(sealed, "c") == "s3cret"
    assert during.needs_rotation(sealed)
    again = during.rotate(sealed, "c")
    assert again.startswith("k2:")
    assert not during.needs_rotation(again)
    after = SecretBox.from_env({"HANDOFF_SECRET_KEYS": NEW})
    assert after.open(again, "c") == "s3cret"
    with pytest.raises(SecretError, match="not configured"):
        after.open(sealed, "c")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "not set"),
        ("nokey", "entries are"),
        ("k1:!!!", "not base64"),
        ("k1:AAAA", "3 bytes"),
        (f"{OLD},{OLD}", "twice"),
    ],
)
def test_unusable_key_settings_are_refused_saying_why(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SecretBox.from_env({"HANDOFF_SECRET_KEYS": value})

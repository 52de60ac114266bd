"""Secrets at rest: AES-256-GCM with a key id stored beside each ciphertext, so keys rotate.

Keys come from the environment, never the database:

    HANDOFF_SECRET_KEYS="k2:<base64 32 bytes>,k1:<base64 32 bytes>"

The first key encrypts; every listed key decrypts, so rotation is: put a new key first,
deploy, re-encrypt (`SecretBox.rotate`), then drop the old key. A sealed value reads
`<key id>:<base64 nonce + ciphertext>`; the associated data (for example a connection's id
and field name) binds a ciphertext to its place, so one connection's password cannot be
pasted into another's row and decrypt there. Plaintexts never appear in reprs or errors.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.common.config import ConfigError

KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


class SecretError(ValueError):
    """A sealed value cannot be opened (unknown key id, tampered, or in the wrong place)."""


@dataclass(frozen=True)
class SecretBox:
    """Seals and opens secrets with the configured keys; the first one seals."""

    keys: Mapping[str, bytes] = field(repr=False)
    active: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SecretBox:
        """Read HANDOFF_SECRET_KEYS ("id:base64,id:base64"; the first one seals)."""
        env = os.environ if env is None else env
        raw = env.get("HANDOFF_SECRET_KEYS", "").strip()
        if not raw:
            raise ConfigError(
                "HANDOFF_SECRET_KEYS is not set: connection secrets need a key "
                '("<id>:<base64 of 32 random bytes>"; `python -m services.common.secrets` '
                "prints a new one)"
            )
        keys: dict[str, bytes] = {}
        for entry in raw.split(","):
            key_id, sep, encoded = entry.strip().partition(":")
            if not sep or not _KEY_ID.fullmatch(key_id):
                raise ConfigError(
                    "HANDOFF_SECRET_KEYS entries are <id>:<base64 key>, ids of letters, "
                    f"digits, _ or - (at most 32); got an entry starting {entry.strip()[:8]!r}"
                )
            try:
                key = base64.b64decode(encoded, validate=True)
            except binascii.Error as exc:
                raise ConfigError(f"HANDOFF_SECRET_KEYS key {key_id!r} is not base64") from exc
            if len(key) != KEY_BYTES:
                raise ConfigError(
                    f"HANDOFF_SECRET_KEYS key {key_id!r} has {len(key)} bytes, not {KEY_BYTES}"
                )
            if key_id in keys:
                raise ConfigError(f"HANDOFF_SECRET_KEYS names key {key_id!r} twice")
            keys[key_id] = key
        return cls(keys, next(iter(keys)))

    def seal(self, plaintext: str, context: str) -> str:
        """The sealed form of `plaintext`, bound to `context` (e.g. "connection:<id>:password")."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(self.keys[self.active]).encrypt(nonce, plaintext.encode(), context.encode())
        return f"{self.active}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, sealed: str, context: str) -> str:
        """The plaintext of a sealed value, or SecretError."""
        key_id, _, encoded = sealed.partition(":")
        key = self.keys.get(key_id)
        if key is None:
            raise SecretError(f"sealed with key {key_id[:32]!r}, which is not configured")
        try:
            raw = base64.b64decode(encoded, validate=True)
            plain = AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
        except (binascii.Error, InvalidTag, ValueError) as exc:
            raise SecretError(f"a secret sealed with key {key_id!r} does not open here") from exc
        return plain.decode()

    def needs_rotation(self, sealed: str) -> bool:
        """Whether `sealed` was sealed with a key other than the active one."""
        return sealed.partition(":")[0] != self.active

    def rotate(self, sealed: str, context: str) -> str:
        """`sealed` sealed again with the active key (unchanged when it already is)."""
        if not self.needs_rotation(sealed):
            return sealed
        return self.seal(self.open(sealed, context), context)


def connection_secret_context(connection_id: object, name: str) -> str:
    """What a connection's secret is bound to: this connection, this field."""
    return f"connection:{connection_id}:{name}"


def open_connection_secrets(
    box: SecretBox, connection_id: object, sealed: Mapping[str, str]
) -> dict[str, str]:
    """A connection's plain secrets by name (SecretError when one does not open)."""
    return {
        name: box.open(value, connection_secret_context(connection_id, name))
        for name, value in sealed.items()
    }


def new_key_entry(key_id: str) -> str:
    """A fresh HANDOFF_SECRET_KEYS entry."""
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"


if __name__ == "__main__":
    import sys
    import time

    print(new_key_entry(sys.argv[1] if len(sys.argv) > 1 else time.strftime("k%Y%m%d")))

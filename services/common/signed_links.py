"""Signed, expiring link tokens (a recipient's confirmation, one delivery's download).

A token is `<base64url payload>.<base64url HMAC-SHA256>`; the payload names its purpose,
the thing it is about, its expiry and the key id. The HMAC key is derived from a
HANDOFF_SECRET_KEYS key (HMAC of the purpose label), so no further secret is configured;
a token signed with a key still configured after a rotation stays valid until it expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.common.secrets import SecretBox

_LABEL = b"handoff signed link v1"


class LinkError(ValueError):
    """A token that is malformed, forged, for another purpose, or expired."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class LinkClaim:
    """What a valid token says."""

    purpose: str
    subject: str
    expires_at: datetime


class LinkSigner:
    """Signs and checks link tokens with keys derived from the secret box's."""

    def __init__(self, box: SecretBox) -> None:
        self._keys = {
            kid: hmac.new(key, _LABEL, hashlib.sha256).digest() for kid, key in box.keys.items()
        }
        self._active = box.active

    def sign(self, purpose: str, subject: str, ttl_s: float, now: datetime | None = None) -> str:
        """A token for `subject` (an id) and `purpose`, valid for `ttl_s` seconds."""
        expires = (now or datetime.now(UTC)) + timedelta(seconds=ttl_s)
        payload = json.dumps(
            {"p": purpose, "s": subject, "e": int(expires.timestamp()), "k": self._active},
            separators=(",", ":"),
        ).encode()
        mac = hmac.new(self._keys[self._active], payload, hashlib.sha256).digest()
        return f"{_b64(payload)}.{_b64(mac)}"

    def check(self, token: str, purpose: str, now: datetime | None = None) -> LinkClaim:
        """The claim of a valid token for `purpose`, or LinkError saying why not."""
        head, dot, tail = token.partition(".")
        try:
            payload, mac = _unb64(head), _unb64(tail)
            data = json.loads(payload)
            key = self._keys[str(data["k"])]
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            raise LinkError("the link is malformed or was signed by another deployment") from exc
        if not dot or not hmac.compare_digest(mac, hmac.new(key, payload, hashlib.sha256).digest()):
            raise LinkError("the link's signature does not match")
        if data.get("p") != purpose:
            raise LinkError("the link is not for this")
        expires = datetime.fromtimestamp(int(data["e"]), UTC)
        if (now or datetime.now(UTC)) >= expires:
            raise LinkError("the link has expired")
        return LinkClaim(purpose, str(data["s"]), expires)

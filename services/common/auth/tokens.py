"""The bearer token format: a recognisable prefix, a public id, a secret and a checksum.

    hoff_at_<credential id, 32 hex>_<secret, 48 hex>_<crc32 of what precedes, 8 hex>

`hoff_at_` marks an account token, `hoff_sc_` a service credential, so a token pasted
into a log or a repository is found by a pattern (`hoff_(at|sc)_[0-9a-f]{32}_[0-9a-f]{48}_
[0-9a-f]{8}`). The checksum turns typos and truncations away without a database look-up.
Only the SHA-256 of the secret is stored: the secret is 192 random bits, so a fast hash
is enough (nothing to brute-force), and the comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

from services.common.auth.model import CredentialKind
from services.common.errors import UnauthenticatedError

PREFIXES = {CredentialKind.ACCOUNT: "hoff_at_", CredentialKind.SERVICE: "hoff_sc_"}
TOKEN_PATTERN = re.compile(r"hoff_(at|sc)_([0-9a-f]{32})_([0-9a-f]{48})_([0-9a-f]{8})")
TOKEN_LENGTH = 98
# Anything longer is refused before it is parsed or hashed.
MAX_CREDENTIAL_LENGTH = 1024
_KINDS = {"at": CredentialKind.ACCOUNT, "sc": CredentialKind.SERVICE}


class MalformedTokenError(ValueError):
    """The text is not a Handoff token; the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A well-formed token's parts."""

    kind: CredentialKind
    credential_id: UUID
    secret_sha256: bytes


@dataclass(frozen=True, slots=True)
class MintedToken:
    """A new token and what is stored of it."""

    token: str
    credential_id: UUID
    secret_sha256: bytes


def _checksum(body: str) -> str:
    return format(zlib.crc32(body.encode()), "08x")


def mint(kind: CredentialKind, credential_id: UUID) -> MintedToken:
    """A fresh token for `credential_id`; the token itself is shown once, never stored."""
    secret = secrets.token_hex(24)
    body = f"{PREFIXES[kind]}{credential_id.hex}_{secret}"
    token = f"{body}_{_checksum(body)}"
    return MintedToken(token, credential_id, hash_secret(secret))


def hash_secret(secret: str) -> bytes:
    """What is stored of a secret."""
    return hashlib.sha256(secret.encode()).digest()


def secrets_match(stored: bytes, presented: bytes) -> bool:
    """Compare two secret hashes in constant time."""
    return hmac.compare_digest(stored, presented)


def parse(token: str) -> ParsedToken:
    """The parts of a well-formed token, or MalformedTokenError saying what is wrong."""
    if len(token) > MAX_CREDENTIAL_LENGTH:
        raise MalformedTokenError(f"the credential is too long ({len(token)} characters)")
    match = TOKEN_PATTERN.fullmatch(token)
    if match is None:
        if not token.startswith(("hoff_at_", "hoff_sc_")):
            raise MalformedTokenError("not a Handoff token (they start with hoff_at_ or hoff_sc_)")
        raise MalformedTokenError(
            f"a Handoff token has {TOKEN_LENGTH} characters: hoff_xx_<32 hex>_<48 hex>_<8 hex>"
        )
    kind, credential_hex, secret, checksum = match.groups()
    if not hmac.compare_digest(_checksum(token[: -len(checksum) - 1]), checksum):
        raise MalformedTokenError("the token's checksum does not match: it was mistyped or cut")
    return ParsedToken(_KINDS[kind], UUID(credential_hex), hash_secret(secret))


_HOW = "send it as 'authorization: Bearer <token>'"


def presented_token(authorization: str | None, other_headers: Iterable[tuple[str, str]]) -> str:
    """The bearer token of a call's `authorization` value, or UnauthenticatedError.

    `other_headers` are the call's other (name, value) pairs, looked at only to tell a
    caller who put the token under another name where it belongs.
    """
    if authorization is None:
        for name, value in other_headers:
            if isinstance(value, str) and value.lstrip().startswith(("hoff_", "Bearer hoff_")):
                raise UnauthenticatedError(f"a credential was sent as {name[:64]!r}; {_HOW}")
        raise UnauthenticatedError(f"this call needs a credential; {_HOW}")
    if len(authorization) > MAX_CREDENTIAL_LENGTH:
        raise UnauthenticatedError(
            f"the authorization value is too long ({len(authorization)} characters)"
        )
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthenticatedError(f"authorization must use the Bearer scheme; {_HOW}")
    return token.strip()

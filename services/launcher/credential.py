"""The local operator credential `make run` makes on first start and keeps under HANDOFF_HOME."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from services.common.auth import tokens
from services.common.auth.model import Role
from services.common.auth.store import CredentialStore
from services.ingest.credentials import create_service_credential

TOKEN_FILE = "operator-token"  # noqa: S105 - a file name, not a secret
LOCAL_NAME = "local operator (make run)"
LOCAL_ROLES = (Role.OPERATOR, Role.INGEST)


@dataclass(frozen=True)
class LocalCredential:
    """The token to use, the file that keeps it, and whether it was just made."""

    token: str
    path: Path
    created: bool


async def _still_valid(store: CredentialStore, token: str) -> bool:
    try:
        parsed = tokens.parse(token)
    except tokens.MalformedTokenError:
        return False
    stored = await store.lookup(parsed.credential_id)
    return (
        stored is not None
        and stored.revoked_at is None
        and (stored.expires_at is None or stored.expires_at > datetime.now(UTC))
        and tokens.secrets_match(stored.secret_sha256, parsed.secret_sha256)
        and set(LOCAL_ROLES) <= set(stored.roles)
    )


async def ensure_local_credential(dsn: str, home: Path) -> LocalCredential:
    """The kept operator token when this database still knows it, else a new one.

    The file is readable by its owner only. The credential holds OPERATOR and INGEST, so
    the README's examples (accounts, layouts, ingest) work with it alone.
    """
    path = home / TOKEN_FILE
    kept = _read_kept(path)
    conn = await asyncpg.connect(dsn)
    try:
        store = CredentialStore(conn)
        if kept and await _still_valid(store, kept):
            return LocalCredential(kept, path, created=False)
        _, token = await create_service_credential(
            store, LOCAL_NAME, LOCAL_ROLES, (), None, datetime.now(UTC)
        )
    finally:
        await conn.close()
    _keep(path, token)
    return LocalCredential(token, path, created=True)


def _read_kept(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""


def _keep(path: Path, token: str) -> None:
    """Write the token readable by its owner only, replacing the old file at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = path.with_suffix(".new")
    descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    fresh.replace(path)


def credential_hint(credential: LocalCredential, ingest_target: str) -> str:
    """What `make run` prints about the credential (the file, never the token)."""
    made = "made" if credential.created else "kept"
    return (
        f"run: operator credential {made} in {credential.path} (roles operator, ingest); "
        f"every call needs it:\n"
        f"run:   export HANDOFF_TOKEN=$(cat {credential.path})\n"
        f'run:   grpcurl -plaintext -H "authorization: Bearer $HANDOFF_TOKEN" {ingest_target} '
        f"handoff.auth.v1.CredentialService/WhoAmI"
    )

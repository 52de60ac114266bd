"""What `make run` keeps under HANDOFF_HOME: the local operator credential and the key that
seals connection secrets, both made on first start."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from services.common.auth import tokens
from services.common.auth.model import Role
from services.common.auth.store import CredentialStore
from services.common.secrets import new_key_entry
from services.ingest.credentials import create_service_credential

TOKEN_FILE = "operator-token"  # noqa: S105 - a file name, not a secret
LOCAL_NAME = "local operator (make run)"
LOCAL_ROLES = (Role.OPERATOR, Role.INGEST)
SCHEDULER_TOKEN_FILE = "scheduler-token"  # noqa: S105 - a file name, not a secret


@dataclass(frozen=True)
class LocalCredential:
    """The token to use, the file that keeps it, and whether it was just made."""

    token: str
    path: Path
    created: bool


async def _still_valid(store: CredentialStore, token: str, roles: tuple[Role, ...]) -> bool:
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
        and set(roles) <= set(stored.roles)
    )


async def ensure_local_credential(
    dsn: str,
    home: Path,
    *,
    file: str = TOKEN_FILE,
    name: str = LOCAL_NAME,
    roles: tuple[Role, ...] = LOCAL_ROLES,
) -> LocalCredential:
    """The kept token when this database still knows it, else a new one.

    The file is readable by its owner only. The operator credential holds OPERATOR and
    INGEST, so the README's examples (accounts, layouts, ingest) work with it alone; the
    scheduler's own holds SCHEDULER, the only role the delivery service admits for jobs.
    """
    path = home / file
    kept = _read_kept(path)
    conn = await asyncpg.connect(dsn)
    try:
        store = CredentialStore(conn)
        if kept and await _still_valid(store, kept, roles):
            return LocalCredential(kept, path, created=False)
        _, token = await create_service_credential(store, name, roles, (), None, datetime.now(UTC))
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


SECRET_KEYS_FILE = "secret-keys"  # noqa: S105 - a file name
LOCAL_EGRESS_ALLOW = "127.0.0.0/8,::1/128"


def local_service_env(home: Path, env: dict[str, str]) -> dict[str, str]:
    """What `make run` adds to the services' environment when it is not set: a key for
    sealing connection secrets, kept owner-only in HANDOFF_HOME (made on first start), and
    an egress allow-list of loopback, so SFTP servers on this machine can be reached."""
    added: dict[str, str] = {}
    if not env.get("HANDOFF_SECRET_KEYS"):
        path = home / SECRET_KEYS_FILE
        keys = _read_kept(path)
        if not keys:
            keys = new_key_entry("local1")
            _keep(path, keys)
        added["HANDOFF_SECRET_KEYS"] = keys
    if not env.get("HANDOFF_EGRESS_ALLOW"):
        added["HANDOFF_EGRESS_ALLOW"] = LOCAL_EGRESS_ALLOW
    return added

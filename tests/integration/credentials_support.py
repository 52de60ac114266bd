"""Credentials for tests, made through the same rules the CredentialService uses."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from services.common.auth.model import Role
from services.common.auth.store import CredentialStore
from services.common.auth.verify import Authenticator
from services.ingest.credentials import create_account_token, create_service_credential


def authenticator(pool: asyncpg.Pool, *, cache_ttl_s: float = 30.0) -> Authenticator:
    """The verifier the services build, over the test's database."""
    return Authenticator(CredentialStore(pool), cache_ttl_s=cache_ttl_s)


async def service_token(
    pool: asyncpg.Pool, *roles: Role, accounts: Sequence[str] = (), name: str = "test service"
) -> str:
    """A new service credential with `roles` (INGEST limited to `accounts` when given)."""
    _, token = await create_service_credential(
        CredentialStore(pool), name, roles, accounts, None, datetime.now(UTC)
    )
    return token


async def account_token(
    pool: asyncpg.Pool,
    account_id: str,
    *scopes: str,
    expires_at: datetime | None = None,
    name: str = "test token",
) -> str:
    """A new token of `account_id` holding `scopes`."""
    _, token = await create_account_token(
        CredentialStore(pool), account_id, name, scopes, expires_at, datetime.now(UTC)
    )
    return token

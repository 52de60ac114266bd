"""Credential rules: what a new token or service credential may hold, and paging."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

from services.common.auth import tokens
from services.common.auth.model import SCOPES, CredentialKind, Role, is_write_scope
from services.common.auth.store import NewCredential, StoredCredential
from services.common.errors import (
    FailedPreconditionError,
    FieldProblem,
    InvalidArgumentError,
    NotFoundError,
)
from services.common.ids import parse_id
from services.common.paging import Page, fetch_page, page_size
from services.ingest.accounts import check_name, decode_page_token


class CredentialAdminStore(Protocol):
    """What the credential rules need from the store."""

    async def insert(self, new: NewCredential) -> StoredCredential: ...
    async def lookup(self, credential_id: UUID) -> StoredCredential | None: ...
    async def list(
        self,
        account_id: UUID | None,
        include_revoked: bool,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[StoredCredential]: ...
    async def revoke(self, credential_id: UUID) -> StoredCredential | None: ...
    async def account_archived(self, account_id: UUID) -> bool | None: ...


def _refuse(field: str, code: str, message: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"{field} {message}", [FieldProblem(field, code, message)])


def check_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    """The distinct scopes in order, or InvalidArgumentError naming the unknown one."""
    if not scopes:
        raise _refuse("scopes", "REQUIRED", f"needs at least one of {', '.join(SCOPES)}")
    for i, scope in enumerate(scopes):
        if scope not in SCOPES:
            raise _refuse(
                f"scopes[{i}]", "UNKNOWN_CODE", f"{scope[:64]!r} is not one of {', '.join(SCOPES)}"
            )
    return tuple(dict.fromkeys(scopes))


def check_expiry(expires_at: datetime | None, now: datetime) -> datetime | None:
    """An expiry in the future, or InvalidArgumentError."""
    if expires_at is not None and expires_at <= now:
        raise _refuse("expires_at", "OUT_OF_RANGE", "must be in the future")
    return expires_at


async def create_account_token(
    store: CredentialAdminStore,
    account_id: str,
    name: str,
    scopes: Sequence[str],
    expires_at: datetime | None,
    now: datetime,
) -> tuple[StoredCredential, str]:
    """A new token of one account and its text (shown once)."""
    account = parse_id("account_id", account_id)
    clean_name, clean_scopes = check_name(name), check_scopes(scopes)
    expiry = check_expiry(expires_at, now)
    archived = await store.account_archived(account)
    if archived is None:
        raise NotFoundError(f"account {account} does not exist")
    if archived and any(is_write_scope(s) for s in clean_scopes):
        raise FailedPreconditionError(
            f"account {account} is archived: its tokens may only read (no :write scopes)"
        )
    minted = tokens.mint(CredentialKind.ACCOUNT, uuid.uuid4())
    stored = await store.insert(
        NewCredential(
            minted.credential_id, CredentialKind.ACCOUNT, clean_name, minted.secret_sha256,
            account_id=account, scopes=clean_scopes, expires_at=expiry,
        )
    )  # fmt: skip
    return stored, minted.token


async def create_service_credential(
    store: CredentialAdminStore,
    name: str,
    roles: Sequence[Role],
    ingest_account_ids: Sequence[str],
    expires_at: datetime | None,
    now: datetime,
) -> tuple[StoredCredential, str]:
    """A new service credential and its text (shown once)."""
    clean_name = check_name(name)
    if not roles:
        names = ", ".join(r.name for r in Role)
        raise _refuse("roles", "REQUIRED", f"needs at least one of {names}")
    clean_roles = tuple(dict.fromkeys(roles))
    accounts: tuple[UUID, ...] | None = None
    if ingest_account_ids:
        if Role.INGEST not in clean_roles:
            raise _refuse("ingest_account_ids", "INVALID_FORMAT", "applies only to the INGEST role")
        parsed = [parse_id(f"ingest_account_ids[{i}]", a) for i, a in enumerate(ingest_account_ids)]
        for i, account in enumerate(parsed):
            if await store.account_archived(account) is None:
                raise _refuse(
                    f"ingest_account_ids[{i}]", "NOT_FOUND", f"account {account} does not exist"
                )
        accounts = tuple(dict.fromkeys(parsed))
    expiry = check_expiry(expires_at, now)
    minted = tokens.mint(CredentialKind.SERVICE, uuid.uuid4())
    stored = await store.insert(
        NewCredential(
            minted.credential_id, CredentialKind.SERVICE, clean_name, minted.secret_sha256,
            roles=clean_roles, ingest_account_ids=accounts, expires_at=expiry,
        )
    )  # fmt: skip
    return stored, minted.token


async def get_credential(store: CredentialAdminStore, credential_id: str) -> StoredCredential:
    """The credential, or NotFoundError."""
    wanted = parse_id("id", credential_id)
    found = await store.lookup(wanted)
    if found is None:
        raise NotFoundError(f"credential {wanted} does not exist")
    return found


async def revoke_credential(store: CredentialAdminStore, credential_id: str) -> StoredCredential:
    """Revoke the credential (idempotent), or NotFoundError."""
    wanted = parse_id("id", credential_id)
    revoked = await store.revoke(wanted)
    if revoked is None:
        raise NotFoundError(f"credential {wanted} does not exist")
    return revoked


async def list_credentials(
    store: CredentialAdminStore,
    account_id: str,
    include_revoked: bool,
    requested_size: int,
    page_token: str,
) -> Page[StoredCredential]:
    """One page of credentials in creation order, after the token's position."""
    account = parse_id("account_id", account_id) if account_id else None
    after = decode_page_token(page_token)
    return await fetch_page(
        lambda limit: store.list(account, include_revoked, after, limit),
        page_size(requested_size),
        lambda c: f"{c.created_at.isoformat()}|{c.id}",
    )

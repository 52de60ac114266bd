"""Callers, roles, scopes and access rules: plain values, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


class Role(enum.Enum):
    """What a service credential may do (mirrors handoff.auth.v1.Role)."""

    OPERATOR = "operator"
    INGEST = "ingest"
    SCHEDULER = "scheduler"


class CredentialKind(enum.Enum):
    """Account tokens act for one account; service credentials for internal callers."""

    ACCOUNT = "account"
    SERVICE = "service"


# The scopes an account token may hold. A ":write" scope changes state.
SCOPES = (
    "referrals:read",
    "config:read",
    "config:write",
    "deliveries:read",
    "deliveries:write",
)


def is_write_scope(scope: str) -> bool:
    """Whether a call needing `scope` changes state (refused to archived accounts)."""
    return scope.endswith(":write")


@dataclass(frozen=True, slots=True)
class Caller:
    """A verified credential: who is calling, and what it may do."""

    credential_id: UUID
    kind: CredentialKind
    name: str
    account_id: UUID | None = None  # account tokens
    account_archived: bool = False
    scopes: frozenset[str] = frozenset()
    roles: frozenset[Role] = frozenset()
    # INGEST only: the accounts (canonical UUID text) it may ingest for; None: every one.
    ingest_accounts: frozenset[str] | None = None
    expires_at: datetime | None = None

    @property
    def label(self) -> str:
        """How logs and traces name the caller: the credential id, never the secret."""
        return f"{self.kind.value}:{self.credential_id}"

    def may_ingest_for(self, account_id: str) -> bool:
        """Whether this caller may store referrals of `account_id` (canonical UUID text)."""
        if Role.INGEST not in self.roles:
            return False
        return self.ingest_accounts is None or account_id in self.ingest_accounts


@dataclass(frozen=True, slots=True)
class AccessRule:
    """Who may call one method (from the handoff.auth.v1.access option, or an HTTP route)."""

    roles: frozenset[Role] = frozenset()
    scope: str = ""  # the account-token scope; '' refuses account tokens
    account_field: str = ""  # the request field naming the account acted on
    any_caller: bool = False  # any valid credential (answers about the caller only)

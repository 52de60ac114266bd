"""Custom audiences: what one is, and the rule that refuses a too small inclusion list.

An include audience needs at least MIN_INCLUDE_PEOPLE people before anything may use it
(the platforms Handoff is modelled on refuse smaller ones, so that a list cannot single
out a few people). An upload below the minimum is stored, and the audience's state says
`too_small`; `require_usable` is the refusal every later use goes through.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from services.common.audiences.sources import AudienceSource
from services.common.errors import FailedPreconditionError

MIN_INCLUDE_PEOPLE = 1000
KINDS = ("include", "exclude")
HASH_KINDS = ("sha256", "md5")
MODES = ("append", "replace")


def too_small(people: int) -> str:
    """Why an include audience of `people` may not be used."""
    return (
        f"an include audience needs at least {MIN_INCLUDE_PEOPLE:,} people; this one has {people:,}"
    )


@dataclass(frozen=True)
class Audience:
    """An audience as stored (counts as of its last import)."""

    id: UUID
    account_id: UUID
    name: str
    kind: str
    source: str
    member_count: int  # people: members of the primary kind (sha256 if any, else md5)
    sha256_count: int
    md5_count: int
    state: str
    last_import_at: datetime | None
    created_at: datetime
    updated_at: datetime
    md5_only: bool = False  # some member is known only by MD5 (targeting hashes MD5 too)
    pulled: AudienceSource | None = None  # the source of an audience pulled on a schedule

    def refusal(self) -> str | None:
        """Why the audience may not be used yet, or None."""
        if self.state != "too_small":
            return None
        return too_small(self.member_count)

    def document(self, now: datetime | None = None) -> dict[str, Any]:
        """The audience as the API shows it (a pulled one with its source and refresh)."""
        pulled = self.pulled
        at = now or datetime.now(UTC)
        return {
            "id": str(self.id),
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "source_settings": pulled.settings_document() if pulled else None,
            "refresh": pulled.refresh_document(at) if pulled else None,
            "state": self.state,
            "state_reason": self.refusal(),
            "member_count": self.member_count,
            "members": {"sha256": self.sha256_count, "md5": self.md5_count},
            "minimum_members": MIN_INCLUDE_PEOPLE if self.kind == "include" else 0,
            "last_import_at": self.last_import_at.isoformat() if self.last_import_at else None,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def require_usable(audience: Audience) -> None:
    """Refuse (FailedPreconditionError, with the count and the minimum) an audience that
    may not be used: an include audience below the minimum."""
    reason = audience.refusal()
    if reason is not None:
        raise FailedPreconditionError(f"audience {audience.name!r} cannot be used: {reason}")


@dataclass(frozen=True)
class ImportCounts:
    """What one upload found: valid lines and the distinct people among them."""

    valid: int
    people: int

"""Targeting by custom audiences: which audiences a task (or a connection delivering in
real time) names, checked once when it is saved and again when it is used.

The audience's own kind decides what it does: an *exclude* audience holds its members
back, *include* audiences let only their members through (a member of any one of them).
The match itself is one SQL rule, `referral_suppressed()` (migration 0010), over the hash
kinds each audience holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from services.common.audiences.model import too_small
from services.common.db import driver_errors, load_queries
from services.common.errors import FieldProblem

QUERIES = load_queries(Path(__file__).parent / "sql" / "targets.sql")
MAX_AUDIENCES = 20  # named by one task or connection


@dataclass(frozen=True)
class AudienceSplit:
    """The named audiences by what they do; empty: no targeting."""

    exclude: tuple[UUID, ...] = ()
    include: tuple[UUID, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.exclude or self.include)

    def to_json(self) -> dict[str, list[str]]:
        """As a delivery's snapshot records it."""
        return {
            "exclude": [str(a) for a in self.exclude],
            "include": [str(a) for a in self.include],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> AudienceSplit:
        """From a snapshot (None: none)."""
        data = data or {}
        return cls(
            tuple(UUID(a) for a in data.get("exclude", ())),
            tuple(UUID(a) for a in data.get("include", ())),
        )


@dataclass(frozen=True)
class Targeting:
    """What a lookup of the named audiences found: the split, and what is wrong."""

    split: AudienceSplit
    problems: tuple[FieldProblem, ...]  # unknown ids, too many: the caller's input
    refusals: tuple[str, ...]  # an include audience below the minimum: not usable yet


def targeting(rows: Sequence[asyncpg.Record], ids: Sequence[UUID], field: str) -> Targeting:
    """Check `ids` (as named, at `field`) against the account's audience rows."""
    found = {r["id"]: r for r in rows}
    problems: list[FieldProblem] = []
    if len(ids) > MAX_AUDIENCES:
        problems.append(
            FieldProblem(field, "TOO_MANY", f"at most {MAX_AUDIENCES} audiences, got {len(ids)}")
        )
    exclude: list[UUID] = []
    include: list[UUID] = []
    refusals: list[str] = []
    for i, audience_id in enumerate(ids):
        row = found.get(audience_id)
        if row is None:
            problems.append(
                FieldProblem(
                    f"{field}[{i}]", "NOT_FOUND", f"no audience {audience_id} in this account"
                )
            )
            continue
        if audience_id in exclude or audience_id in include:
            continue
        if row["kind"] == "exclude":
            exclude.append(audience_id)
            continue
        include.append(audience_id)
        if row["state"] == "too_small":
            refusals.append(
                f"audience {row['name']!r} cannot be used: {too_small(row['member_count'])}"
            )
    return Targeting(
        AudienceSplit(tuple(exclude), tuple(include)), tuple(problems), tuple(refusals)
    )


async def look_up(
    pool: asyncpg.Pool | asyncpg.Connection, account_id: UUID, ids: Sequence[UUID], field: str
) -> Targeting:
    """The named audiences of the account, checked."""
    if not ids:
        return Targeting(AudienceSplit(), (), ())
    with driver_errors("audience_targets"):
        rows = await pool.fetch(QUERIES["audience_targets"], account_id, list(ids))
    return targeting(rows, ids, field)


async def suppressed_seqs(
    pool: asyncpg.Pool, account_id: UUID, seqs: Sequence[int], split: AudienceSplit
) -> set[int]:
    """Which of these referrals the audiences hold back (real-time delivery)."""
    if not split or not seqs:
        return set()
    with driver_errors("suppressed_seqs"):
        rows = await pool.fetch(
            QUERIES["suppressed_seqs"], account_id, list(seqs), list(split.exclude),
            list(split.include),
        )  # fmt: skip
    return {int(r["seq"]) for r in rows}

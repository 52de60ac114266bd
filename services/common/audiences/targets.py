"""Targeting by custom audiences: which audiences a task (or a connection delivering in
real time) names, checked once when it is saved and again when it is used.

The audience's own kind decides what it does: an *exclude* audience holds its members
back, *include* audiences let only their members through (a member of any one of them).
The match is one SQL rule, `holds_back()`, tested per referral on its stored key
(`referrals.email_key`, the SHA-256 of `audience_email_key()`, migration 0015): the named
audiences' Bloom filters first (bloom.py), then an exact probe of the members for the few
they may hold. A delivery's first render runs it inside the row query (referral_rows.py);
a live loop's page runs it set-wise (`held_back()`, without the filters). Measured on
200,000 referrals (python -m tests.bench targeting): a per-row SQL function was 6.6x the
delivery's time, a set-based join in a second pass 1.6x, this test in the render 1.03-1.24x.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from services.common.audiences.bloom import may_hold
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
    md5: tuple[UUID, ...] = ()  # those with members known only by MD5: matched by MD5 too

    def __bool__(self) -> bool:
        return bool(self.exclude or self.include)

    def to_json(self) -> dict[str, list[str]]:
        """As a delivery's snapshot records it."""
        return {
            "exclude": [str(a) for a in self.exclude],
            "include": [str(a) for a in self.include],
            "md5": [str(a) for a in self.md5],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> AudienceSplit:
        """From a snapshot (None: none)."""
        data = data or {}
        exclude = tuple(UUID(a) for a in data.get("exclude", ()))
        include = tuple(UUID(a) for a in data.get("include", ()))
        md5 = data.get("md5")
        return cls(exclude, include, (*exclude, *include) if md5 is None else tuple(map(UUID, md5)))

    def arguments(self) -> tuple[list[UUID], list[UUID], list[UUID], list[UUID]]:
        """The uuid[] parameters of held_back(): exclude, include, and those of each
        with members known only by MD5."""
        md5 = set(self.md5)
        return (
            list(self.exclude), list(self.include),
            [a for a in self.exclude if a in md5], [a for a in self.include if a in md5],
        )  # fmt: skip


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
    md5: list[UUID] = []
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
        if row["md5_only"]:
            md5.append(audience_id)
        if row["kind"] == "exclude":
            exclude.append(audience_id)
            continue
        include.append(audience_id)
        if row["state"] == "too_small":
            refusals.append(
                f"audience {row['name']!r} cannot be used: {too_small(row['member_count'])}"
            )
    return Targeting(
        AudienceSplit(tuple(exclude), tuple(include), tuple(md5)), tuple(problems), tuple(refusals)
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


def _member(ids: str, key: str, bloom: str | None) -> str:
    """SQL: whether the referral whose SHA-256 is `key` is a SHA-256 member of one of the
    audiences `ids`; with `bloom` (their filter, NULL when one has none) only those the
    filter may hold are probed. The probe is a sub-plan per referral (OFFSET 0 keeps
    PostgreSQL from hashing the whole audience instead, which costs the audience's size)."""
    maybe = "true" if bloom is None else f"({bloom} IS NULL OR {may_hold(key, bloom)})"
    return f"""CASE WHEN cardinality({ids}) > 0 AND {maybe} THEN EXISTS (
            SELECT 1 FROM audience_members m
             WHERE m.audience_id = ANY ({ids}) AND m.hash_kind = 'sha256' AND m.hash = {key}
            OFFSET 0) ELSE false END"""  # noqa: S608 (fixed fragments, no user input)


def _md5_member(ids: str, email: str) -> str:
    """SQL: whether the email is an MD5 member of one of the audiences `ids` (those with
    members known only by MD5); hashed here, as MD5 keys are not stored."""
    return f"""CASE WHEN cardinality({ids}) > 0 THEN EXISTS (
            SELECT 1 FROM audience_members m
             WHERE m.audience_id = ANY ({ids}) AND m.hash_kind = 'md5'
               AND m.hash = decode(md5(audience_email_key({email})), 'hex')
            OFFSET 0) ELSE false END"""  # noqa: S608 (fixed fragments, no user input)


def _filter(ids: str) -> str:
    """SQL for the Bloom filter of the audiences `ids`, read once per statement (a scalar
    sub-query on parameters only), NULL when one of them has none. `|| B''` makes a copy
    in memory: a filter read as stored stays TOASTed, and every bit tested would
    decompress all 2 MiB of it again."""
    bloom = "CASE WHEN count(*) = count(bloom) THEN bit_or(bloom) || B'' END"
    return f"(SELECT {bloom} FROM audiences WHERE id = ANY ({ids}))"  # noqa: S608 (fixed text)


def holds_back(key: str, email: str, parameters: Sequence[str], *, filters: bool = True) -> str:
    """SQL that is true for a referral (its stored SHA-256 key `key` and its `email`) the
    audiences hold back: a member of an exclude audience, or, when include audiences are
    named, a member of none of them. `parameters` are four SQL uuid[] expressions, in the
    order of AudienceSplit.arguments(); with none named it is false (and with constants,
    as COPY passes them, PostgreSQL folds it away). With `filters`, the audiences' Bloom
    filters (read in the same statement, so from the snapshot that reads the members)
    spare the probe of nearly every non-member: for a delivery's range. Without, every
    referral is probed: for a page of a few hundred. Fixed text only: no user input."""
    exclude, include, md5_exclude, md5_include = parameters
    excluded = f"""{_member(exclude, key, _filter(exclude) if filters else None)}
        OR {_md5_member(md5_exclude, email)}"""
    included = f"""{_member(include, key, _filter(include) if filters else None)}
        OR {_md5_member(md5_include, email)}"""
    return f"""(({excluded})
    OR (cardinality({include}) > 0 AND NOT ({included})))"""


def held_back(candidates: str, parameters: Sequence[str], *, filters: bool = True) -> str:
    """SQL selecting the `seq` of each row of `candidates` (a query with columns `seq`,
    `email` and `email_key`) that the audiences hold back (`holds_back()`)."""
    test = holds_back("c.email_key", "c.email", parameters, filters=filters)
    return f"""
SELECT c.seq
  FROM ({candidates}
       ) c
 WHERE {test}"""  # noqa: S608 (fixed fragments, no user input)


# Which of a page of referrals ($2) the audiences ($3-$6, AudienceSplit.arguments()) hold back.
SUPPRESSED_SEQS = held_back(
    "SELECT r.seq, r.email, r.email_key FROM referrals r"
    " WHERE r.account_id = $1 AND r.seq = ANY ($2::bigint[])",
    ("$3::uuid[]", "$4::uuid[]", "$5::uuid[]", "$6::uuid[]"),
    filters=False,
)


async def suppressed_seqs(
    pool: asyncpg.Pool, account_id: UUID, seqs: Sequence[int], split: AudienceSplit
) -> set[int]:
    """Which of these referrals the audiences hold back (real-time delivery)."""
    if not split or not seqs:
        return set()
    with driver_errors("suppressed_seqs"):
        rows = await pool.fetch(
            SUPPRESSED_SEQS, account_id, list(seqs), *split.arguments(),
        )  # fmt: skip
    return {int(r["seq"]) for r in rows}

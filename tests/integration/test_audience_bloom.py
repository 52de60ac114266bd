"""The audiences' Bloom filters: Python builds them, SQL tests them; the two agree, and
every import leaves the filter holding every SHA-256 member (a filter missing one would
deliver a referral its audience holds back)."""

from __future__ import annotations

import hashlib

import asyncpg
import pytest

from services.common.audiences.bloom import BITS, BloomFilter, may_hold, positions
from services.common.audiences.targets import AudienceSplit, held_back
from tests.integration.layouts_support import create_account
from tests.integration.test_audience_targeting import _member, audience

pytestmark = pytest.mark.integration

_MAY_HOLD = f"SELECT {may_hold('k', '$1::bit varying')} FROM unnest($2::bytea[]) AS u(k)"


def _hash(position: tuple[int, int, int]) -> bytes:
    """A made-up SHA-256 whose filter positions are `position`."""
    head = b"".join(p.to_bytes(3, "big") for p in position)
    return head + hashlib.sha256(head).digest()[: 32 - len(head)]


async def _sql_verdicts(pool: asyncpg.Pool, bloom: BloomFilter, hashes: list[bytes]) -> list[bool]:
    rows = await pool.fetch(_MAY_HOLD, bloom.to_db(), hashes)
    return [bool(r[0]) for r in rows]


async def test_sql_reads_the_filter_python_wrote_at_every_bit_of_a_byte_and_both_ends(
    pool: asyncpg.Pool,
) -> None:
    # Positions at both ends of the filter and at each of a byte's eight bits, so that a
    # bit order or byte order read differently shows.
    spots = [0, 1, 7, 8, 9, 15, BITS - 9, BITS - 8, BITS - 2, BITS - 1, *range(1000, 1008)]
    turned = zip(spots, spots[3:] + spots[:3], spots[7:] + spots[:7], strict=True)
    members = [_hash(position) for position in turned]
    bloom = BloomFilter()
    for member in members:
        bloom.add(member)
    assert await _sql_verdicts(pool, bloom, members) == [True] * len(members)
    # Others: one position off by a bit, or all elsewhere; SQL says what Python says.
    others = [_hash((p[0], p[1] ^ 1, p[2])) for p in map(positions, members)]
    others += [hashlib.sha256(f"nobody {i}".encode()).digest() for i in range(200)]
    expected = [bloom.holds(h) for h in others]
    assert await _sql_verdicts(pool, bloom, others) == expected
    assert not all(expected)  # the check can say no


async def test_every_import_leaves_the_filter_holding_every_member(pool: asyncpg.Pool) -> None:
    account, _ = await create_account(pool)
    first = [f"first{i}@example.com" for i in range(50)]
    added = [f"added{i}@example.com" for i in range(50)]
    later = [f"later{i}@example.com" for i in range(50)]

    async def stored() -> bytes:
        bits = await pool.fetchval("SELECT bloom FROM audiences WHERE id = $1", audience_id)
        assert bits is not None
        assert len(bits) == BITS
        return bytes(bits.bytes)

    def built(emails: list[str]) -> BloomFilter:
        bloom = BloomFilter()
        for email in emails:
            sha256 = _member(email).sha256
            assert sha256 is not None
            bloom.add(sha256)
        return bloom

    audience_id = await audience(pool, account, "exclude", first)
    assert await stored() == built(first).to_bytes()
    # Adding members (a Zapier action, an append): the filter holds the old ones too.
    await audience(pool, account, "exclude", added, audience_id=audience_id)
    assert await stored() == built(first + added).to_bytes()
    # Replacing: only the new members' bits (removals show as fewer probes, never more).
    await audience(pool, account, "exclude", later, replace=True, audience_id=audience_id)
    assert await stored() == built(later).to_bytes()
    members = [r["hash"] for r in await pool.fetch(
        "SELECT hash FROM audience_members WHERE audience_id = $1 AND hash_kind = 'sha256'",
        audience_id,
    )]  # fmt: skip
    assert len(members) == len(later)
    assert await _sql_verdicts(pool, built(later), members) == [True] * len(members)


async def test_an_audience_without_a_filter_keeps_none_and_is_probed_exactly(
    pool: asyncpg.Pool,
) -> None:
    account, _ = await create_account(pool)
    audience_id = await audience(pool, account, "exclude", ["old@example.com"])
    await pool.execute("UPDATE audiences SET bloom = NULL WHERE id = $1", audience_id)  # pre-0015
    await audience(pool, account, "exclude", ["new@example.com"], audience_id=audience_id)
    assert await pool.fetchval("SELECT bloom FROM audiences WHERE id = $1", audience_id) is None
    referral = (
        "SELECT 1::bigint AS seq, $1::text AS email, sha256(audience_email_key($1)) AS email_key"
    )
    rule = held_back(referral, ("$2::uuid[]", "$3::uuid[]", "$4::uuid[]", "$5::uuid[]"))
    split = AudienceSplit((audience_id,))
    for email in ("old@example.com", "NEW@example.com"):
        assert await pool.fetch(rule, email, *split.arguments()), email
    assert not await pool.fetch(rule, "else@example.com", *split.arguments())

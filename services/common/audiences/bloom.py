"""The Bloom filter of an audience's SHA-256 members: which referrals may be members.

A referral whose three filter bits are not all set is no member, and the audience is not
touched for it; only the others (its members and about 0.5 % of the rest, at a million
members) are probed exactly. The check then costs about the same for an audience of a
thousand people as for one of a million.

SHA-256 output is uniform, so the positions are read straight from a hash: three 24-bit
big-endian numbers from its first nine bytes, in a filter of 2^24 bits (2 MiB, stored as
`bit varying`, where bit 0 is the most significant bit of the first byte). This module
builds filters (`BloomFilter`) and writes the SQL that tests one (`may_hold`); the two
are the same rule twice, in Python and in SQL, and tests/integration/test_audience_bloom.py
proves they agree on every member.
"""

from __future__ import annotations

import asyncpg

BITS = 1 << 24
POSITIONS = 3
_POSITION_BYTES = 3  # 24 bits: a position in BITS


def positions(sha256: bytes) -> tuple[int, ...]:
    """The filter positions of a member (its SHA-256)."""
    step = _POSITION_BYTES
    return tuple(int.from_bytes(sha256[i * step : (i + 1) * step], "big") for i in range(POSITIONS))


class BloomFilter:
    """A filter being built from members' SHA-256 hashes."""

    def __init__(self) -> None:
        self._bits = bytearray(BITS // 8)

    def add(self, sha256: bytes) -> None:
        """Add one member."""
        bits = self._bits
        for p in positions(sha256):
            bits[p >> 3] |= 0x80 >> (p & 7)

    def holds(self, sha256: bytes) -> bool:
        """Whether all of a hash's bits are set (a member, or a false positive)."""
        bits = self._bits
        return all(bits[p >> 3] & (0x80 >> (p & 7)) for p in positions(sha256))

    def to_bytes(self) -> bytes:
        """The filter's bytes (bit 0 the most significant bit of the first)."""
        return bytes(self._bits)

    def to_db(self) -> asyncpg.BitString:
        """As the `audiences.bloom` column takes it."""
        return asyncpg.BitString.frombytes(bytes(self._bits), BITS)


def may_hold(key: str, bloom: str) -> str:
    """SQL that is true when filter `bloom` (a `bit varying` expression, never NULL here)
    may hold the member whose SHA-256 is `key` (a bytea expression): the rule of
    `positions()`. Fixed text around the two expressions."""
    tests = []
    for i in range(POSITIONS):
        first = i * _POSITION_BYTES
        number = (
            f"((get_byte({key}, {first}) << 16) | (get_byte({key}, {first + 1}) << 8)"
            f" | get_byte({key}, {first + 2}))"
        )
        tests.append(f"get_bit({bloom}, {number}) = 1")
    return "(" + " AND ".join(tests) + ")"

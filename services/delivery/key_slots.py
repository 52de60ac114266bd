"""A concurrency cap per vendor API key that holds across every delivery replica.

Mailchimp allows 10 simultaneous connections per API key; two connections may share a
key, and live loops and scheduled batches of any replica share it. So the cap is kept in
PostgreSQL: `vendor_key_slots` has one row per slot of a key (keyed by a digest of the
key, never the key), and a request runs only while its replica holds one slot for it.

A replica leases slots as it needs them (`FOR UPDATE SKIP LOCKED`, one round trip), keeps
them while its own requests reuse them (no query per request), renews them every third
of the lease, and gives back a slot that stayed idle or that it has held for `turn_s`
(so replicas take turns under a steady load). A replica that dies stops renewing: its
slots lapse after one lease and the others take them. A request that waits for a slot
looks again every `poll_s` (with jitter) or as soon as one of its replica's requests ends.

Limits: a replica that cannot reach the database for longer than a lease may still use
slots another replica took meanwhile (the cap can be exceeded during such an outage, by
at most one replica's held slots).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from services.common.db import driver_errors, load_queries

log = logging.getLogger(__name__)
QUERIES = load_queries(Path(__file__).parent / "sql" / "key_slots.sql")


def key_digest(vendor: str, key: str) -> str:
    """The name of a key's slots: a SHA-256 digest (keys are long random strings, so the
    digest tells nothing about the key)."""
    return hashlib.sha256(f"handoff key slots\0{vendor}\0{key}".encode()).hexdigest()


@dataclass
class _Key:
    held: dict[int, float] = field(default_factory=dict)  # slot -> when it was taken
    idle: dict[int, float] = field(default_factory=dict)  # held, unused, since when
    ensured: int = 0  # slots known to exist
    freed: asyncio.Event = field(default_factory=asyncio.Event)
    in_use: int = 0
    peak: int = 0


class KeySlots:
    """This replica's slots of every key it uses; `async with slots.hold(digest, n)`
    around each request."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        holder: str,
        *,
        lease_s: float = 15.0,
        idle_s: float = 1.0,
        turn_s: float = 2.0,
        poll_s: float = 0.05,
    ) -> None:
        self._pool = pool
        self._holder = holder
        self._lease_s = lease_s
        self._idle_s = idle_s
        self._turn_s = turn_s
        self._poll_s = poll_s
        self._keys: dict[str, _Key] = {}
        self._keeper: asyncio.Task[None] | None = None
        self._rng = random.Random()

    def peak(self, digest: str) -> int:
        """The most requests this replica ran at once for a key (tests, metrics)."""
        key = self._keys.get(digest)
        return key.peak if key else 0

    @contextlib.asynccontextmanager
    async def hold(self, digest: str, limit: int) -> AsyncIterator[None]:
        """Run the block while holding one of the key's `limit` slots."""
        key = self._keys.setdefault(digest, _Key())
        slot = await self._acquire(digest, key, limit)
        key.in_use += 1
        key.peak = max(key.peak, key.in_use)
        try:
            yield
        finally:
            key.in_use -= 1
            await self._release(digest, key, slot)

    async def _acquire(self, digest: str, key: _Key, limit: int) -> int:
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep(), name="key slots")
        while True:
            if key.idle:
                slot = next(iter(key.idle))
                del key.idle[slot]
                return slot
            if len(key.held) < limit:
                if key.ensured < limit:
                    with driver_errors("key_slots_ensure"):
                        await self._pool.execute(QUERIES["key_slots_ensure"], digest, limit)
                    key.ensured = limit
                with driver_errors("key_slot_take"):
                    slot = await self._pool.fetchval(
                        QUERIES["key_slot_take"], digest, self._holder, limit, self._lease_s
                    )
                if slot is not None:
                    key.held[slot] = time.monotonic()
                    return int(slot)
            key.freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(key.freed.wait(), self._poll_s * self._rng.uniform(0.5, 1.5))

    async def _release(self, digest: str, key: _Key, slot: int) -> None:
        if slot not in key.held:
            return  # lost (it lapsed): nothing to give back
        now = time.monotonic()
        if now - key.held[slot] >= self._turn_s:
            del key.held[slot]  # others' turn: back to the table
            with contextlib.suppress(Exception):
                await self._give_back(digest, [slot])
        else:
            key.idle[slot] = now
        key.freed.set()

    async def _give_back(self, digest: str, slots: list[int]) -> None:
        with driver_errors("key_slots_release"):
            await self._pool.execute(QUERIES["key_slots_release"], digest, self._holder, slots)

    async def _keep(self) -> None:
        """Renew held slots; give back idle ones."""
        while True:
            await asyncio.sleep(min(self._idle_s, self._lease_s / 3))
            try:
                await self._keep_once()
            except Exception:
                log.warning("key slot renewal failed; leases have room", exc_info=True)

    async def _keep_once(self) -> None:
        now = time.monotonic()
        for digest, key in list(self._keys.items()):
            stale = [s for s, since in key.idle.items() if now - since >= self._idle_s]
            for slot in stale:
                del key.idle[slot]
                del key.held[slot]
            if stale:
                await self._give_back(digest, stale)
            if not key.held:
                continue
            with driver_errors("key_slots_renew"):
                rows = await self._pool.fetch(
                    QUERIES["key_slots_renew"], digest, self._holder, list(key.held),
                    self._lease_s,
                )  # fmt: skip
            kept = {r["slot"] for r in rows}
            for slot in set(key.held) - kept:
                log.warning("a key slot lapsed before its renewal")
                del key.held[slot]
                key.idle.pop(slot, None)

    async def close(self) -> None:
        """Stop renewing and give every slot back."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        for digest, key in self._keys.items():
            if key.held:
                with contextlib.suppress(Exception):
                    await self._give_back(digest, list(key.held))
            key.held.clear()
            key.idle.clear()

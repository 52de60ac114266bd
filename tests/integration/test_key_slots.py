"""The per-key concurrency cap in PostgreSQL: holders across replicas never exceed the
limit, a dead holder's slots lapse to the others, and the table never holds the key."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from services.delivery.key_slots import KeySlots, key_digest
from tests.integration.live_support import eventually

pytestmark = pytest.mark.integration


async def test_two_replicas_share_the_limit_and_a_dead_ones_slots_lapse(pool: asyncpg.Pool) -> None:
    key = f"secret-{uuid.uuid4().hex}-us1"
    digest = key_digest("mailchimp", key)
    one = KeySlots(pool, "one", lease_s=0.6, idle_s=0.2, turn_s=60.0, poll_s=0.02)
    two = KeySlots(pool, "two", lease_s=0.6, idle_s=0.2, turn_s=60.0, poll_s=0.02)
    running = 0
    peak = 0
    release = asyncio.Event()

    async def request(slots: KeySlots) -> None:
        nonlocal running, peak
        async with slots.hold(digest, 3):
            running += 1
            peak = max(peak, running)
            await release.wait()
            running -= 1

    tasks = [asyncio.create_task(request(s)) for s in (one, two) * 4]  # 8 want 3 slots
    await asyncio.sleep(0.5)
    assert (running, peak) == (3, 3)
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 3
    stored = await pool.fetch("SELECT * FROM vendor_key_slots WHERE key_digest = $1", digest)
    assert len(stored) == 3
    assert key not in str([dict(r) for r in stored])

    # "one" dies holding its slots: no renewal, no release. "two" gets them after a lease.
    release.clear()
    held = [asyncio.create_task(request(one)) for _ in range(3)]
    await eventually(lambda: running == 3)  # once "two" gave its idle slots back
    assert one._keeper is not None
    one._keeper.cancel()  # the replica stops renewing (it died)
    late = asyncio.create_task(request(two))
    await asyncio.sleep(0.3)
    assert not late.done()
    assert running == 3
    await asyncio.sleep(1.0)
    assert running == 4  # lapsed: "two" took one (the dead replica's requests are gone)
    release.set()
    await asyncio.gather(late, *held)
    await two.close()
    await one.close()

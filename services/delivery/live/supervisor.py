"""Runs the live loops this replica holds leases for, and wakes them on new referrals.

Each live connection's loop (API connections, and vendors' in real-time mode: the kinds
with a record sender in `senders.SENDERS`) runs on exactly one replica at a time: the
replica takes the connection's lease in `live_cursors` (FOR UPDATE SKIP LOCKED) and renews
it every third of its length; a replica that dies stops renewing and another takes the
loop over within one lease. So a connection's concurrency and rate limit hold across
replicas, and its cursor has one writer (every write also checks the lease).

Wake-ups: ingest's NOTIFY on `referrals_ingested` (sent at commit) wakes every loop; the
connection API's NOTIFY on `live_wakeup` (a replay, a re-enable, a change) wakes one. A
loop also polls once a second, so a lost notification only costs latency. Why NOTIFY and
not a push from ingest over gRPC: it is sent at commit by PostgreSQL itself (a push could
announce a rollback, or be lost when ingest dies between commit and push), it reaches every
delivery replica without ingest knowing them, and it costs ingest nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.common.egress import EgressPolicy
from services.common.secrets import SecretBox
from services.delivery.live.loop import ConnectionLoop
from services.delivery.live.senders import SENDERS, SenderFactory
from services.delivery.live.store import LiveStorePg

log = logging.getLogger(__name__)
INGESTED = "referrals_ingested"
POLL_S = 1.0
WATERMARK_RECHECK_S = 0.01
WAKE_ALL_ABOVE = 100_000  # a longer range wakes every loop rather than scanning it
WAKEUP = "live_wakeup"


def replica_name() -> str:
    """This process's name in leases (host and pid: unique, and readable in the table)."""
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"


class LiveSupervisor:
    """Claims live loops, runs them, and hands them back on shutdown."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        box: SecretBox,
        egress: EgressPolicy,
        *,
        lease_s: float = 15.0,
        max_loops: int = 1000,
        retention_days: int = 30,
        maintain_every_s: float = 3600.0,
        owner: str | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        senders: Mapping[str, SenderFactory] | None = None,
    ) -> None:
        self._pool = pool
        self._senders = dict(senders or SENDERS)
        self._store = LiveStorePg(pool)
        self._box = box
        self._egress = egress
        self._lease_s = lease_s
        self._max_loops = max_loops
        self.owner = owner or replica_name()
        self._now = now
        self._retention_days = retention_days
        self._maintain_every_s = maintain_every_s
        self._maintained_at = float("-inf")
        self._loops: dict[UUID, tuple[ConnectionLoop, asyncio.Task[None], int]] = {}
        self._claimed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._claim_soon = asyncio.Event()
        self._claiming = asyncio.Lock()
        self._ingested = asyncio.Event()
        self._notified = 0  # the highest seq ingest announced
        self._scanned = 0  # the watermark up to which loops were told of new referrals
        self._watcher: asyncio.Task[None] | None = None

    @property
    def loops(self) -> dict[UUID, ConnectionLoop]:
        """The loops running here, by connection."""
        return {cid: loop for cid, (loop, task, _) in self._loops.items() if not task.done()}

    async def start(self) -> None:
        """Listen for wake-ups and start claiming."""
        self._listener = await self._pool.acquire()
        await self._listener.add_listener(INGESTED, self._on_ingested)
        await self._listener.add_listener(WAKEUP, self._on_wakeup)
        self._scanned = await self._store.watermark()
        self._task = asyncio.create_task(self._run(), name="live supervisor")
        self._watcher = asyncio.create_task(self._watch_watermark(), name="live watermark")

    async def close(self) -> None:
        """Stop every loop (each flushes what it sent) and release the leases."""
        for task in (self._task, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._stop_all()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.remove_listener(INGESTED, self._on_ingested)
                await self._listener.remove_listener(WAKEUP, self._on_wakeup)
            await self._pool.release(self._listener)
            self._listener = None
        with contextlib.suppress(Exception):
            await self._store.release(self.owner)

    async def wait_claimed(self) -> None:
        """Until the first claim round finished (tests)."""
        await self._claimed.wait()

    def _on_ingested(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError):
            self._notified = max(self._notified, int(payload))
        self._ingested.set()

    async def _watch_watermark(self) -> None:
        """One safe-watermark call per wake-up for every loop of this replica, and one
        query for the accounts with new referrals: only their loops wake. While the
        watermark is below what ingest announced (older transactions still run), look
        again every 10 ms; without announcements, once a second."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ingested.wait(), POLL_S)
            self._ingested.clear()
            try:
                await self._advance_loops()
            except Exception:
                log.exception("live watermark round failed")
                await asyncio.sleep(POLL_S)
            if self._notified > self._scanned:
                await asyncio.sleep(WATERMARK_RECHECK_S)
                self._ingested.set()

    async def _advance_loops(self) -> None:
        watermark = await self._store.watermark()
        if watermark <= self._scanned:
            return
        loops = [entry[0] for entry in self._loops.values()]
        if watermark - self._scanned > WAKE_ALL_ABOVE:
            accounts = {loop.account_id for loop in loops}
        elif loops:
            accounts = await self._store.accounts_between(self._scanned, watermark)
        else:
            accounts = set()
        self._scanned = watermark
        for loop in loops:
            loop.advance(watermark, wake=loop.account_id in accounts)

    def _on_wakeup(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            wanted = UUID(payload)
        except ValueError:
            return
        entry = self._loops.get(wanted)
        if entry is not None:
            entry[0].wake()
            entry[0].advance(self._scanned)
        self._claim_soon.set()  # a changed version restarts the loop; a new one is taken

    async def _run(self) -> None:
        while True:
            try:
                await self.claim_round()
            except Exception:
                log.exception("live claim round failed")
            if time.monotonic() - self._maintained_at >= self._maintain_every_s:
                try:
                    await self._store.maintain(self._retention_days)
                    self._maintained_at = time.monotonic()
                except Exception:
                    log.exception("live attempt log maintenance failed")
            self._claimed.set()
            self._claim_soon.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._claim_soon.wait(), self._lease_s / 3)

    async def claim_round(self) -> None:
        """Renew our leases, take free ones, stop loops we no longer own, restart loops
        whose settings changed. One round at a time (a wake-up may ask for one while the
        periodic one runs)."""
        async with self._claiming:
            await self._claim_round()

    async def _claim_round(self) -> None:
        owned = await self._store.claim(
            self.owner, self._lease_s, self._max_loops, sorted(self._senders)
        )
        for cid in list(self._loops):
            loop, task, version = self._loops[cid]
            if cid not in owned or owned[cid] != version or task.done():
                loop.stop()
                with contextlib.suppress(Exception):
                    await task
                del self._loops[cid]
        for cid, version in owned.items():
            if cid in self._loops:
                continue
            connection = await self._store.connection(cid)
            if connection is None or connection.disabled_at is not None:
                continue
            loop = ConnectionLoop(
                connection, self._store, self._box, self._egress, self.owner, now=self._now,
                senders=self._senders,
            )  # fmt: skip
            loop.advance(self._scanned, wake=False)
            task = asyncio.create_task(self._guarded(loop), name=f"live {cid}")
            self._loops[cid] = (loop, task, version)

    async def _guarded(self, loop: ConnectionLoop) -> None:
        try:
            await loop.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("live loop failed; it restarts", extra={"connection": str(loop.id)})
            await asyncio.sleep(1.0)

    async def _stop_all(self) -> None:
        for loop, _, _ in self._loops.values():
            loop.stop()
        await asyncio.gather(*(t for _, t, _ in self._loops.values()), return_exceptions=True)
        self._loops.clear()

"""Makes the safe watermark operable: lag metrics, and a warning that names what holds it.

Any writing transaction on the PostgreSQL cluster — in any database — holds the watermark
back while it runs, and a prepared transaction can hold it forever. The monitor reads, every
`every_s`: how many seqs and how many seconds the watermark is behind, as the gauges
`handoff.watermark.lag_seqs` and `handoff.watermark.lag_seconds`; when the lag passes
`warn_after_s`, it logs a warning naming the oldest writing transactions (pid, database,
user, application, age) and prepared transactions (gid, database, age).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from services.common.db import driver_errors, load_queries

QUERIES = load_queries(Path(__file__).parent / "sql" / "watermark.sql")
log = logging.getLogger(__name__)
_meter = metrics.get_meter("handoff.watermark")


@dataclass(frozen=True)
class Blocker:
    """A transaction that can hold the watermark back."""

    kind: str  # "session" or "prepared"
    name: str  # pid or gid
    database: str
    who: str  # user and application
    age_s: float


@dataclass(frozen=True)
class WatermarkStatus:
    """How far the watermark is behind, and what may hold it."""

    safe: int
    drawn: int
    waited_s: float
    blockers: tuple[Blocker, ...] = field(default_factory=tuple)

    @property
    def lag_seqs(self) -> int:
        """Seqs drawn above the watermark (committed or not yet)."""
        return max(0, self.drawn - self.safe)


class WatermarkMonitor:
    """Reads the watermark's lag; exports it; warns, naming blockers, past a threshold."""

    def __init__(
        self, pool: asyncpg.Pool, *, every_s: float = 15.0, warn_after_s: float = 60.0
    ) -> None:
        self._pool = pool
        self._every_s = every_s
        self._warn_after_s = warn_after_s
        self.last: WatermarkStatus | None = None
        for name, unit, read in (
            ("handoff.watermark.lag_seqs", "{seq}", lambda s: float(s.lag_seqs)),
            ("handoff.watermark.lag_seconds", "s", lambda s: s.waited_s),
        ):
            _meter.create_observable_gauge(name, callbacks=[self._observer(read)], unit=unit)

    def _observer(
        self, read: Callable[[WatermarkStatus], float]
    ) -> Callable[[CallbackOptions], list[Observation]]:
        def observe(options: CallbackOptions) -> list[Observation]:
            status = self.last
            return [] if status is None else [Observation(read(status))]

        return observe

    async def check(self) -> WatermarkStatus:
        """Read the lag now; with a lag past the threshold, also the blockers, and warn."""
        with driver_errors("watermark_status"):
            async with self._pool.acquire() as conn:
                async with conn.transaction():
                    row = await conn.fetchrow(QUERIES["watermark_status"])
                status = WatermarkStatus(row["safe"], row["drawn"], row["waited_s"])
                if status.waited_s >= self._warn_after_s:
                    status = WatermarkStatus(
                        status.safe, status.drawn, status.waited_s, await _blockers(conn)
                    )
        self.last = status
        if status.blockers or status.waited_s >= self._warn_after_s:
            named = (
                "; ".join(
                    f"{b.kind} {b.name} in {b.database} ({b.who}), open {b.age_s:.0f} s"
                    for b in status.blockers
                )
                or "none visible (the role may lack pg_read_all_stats)"
            )
            log.warning(
                "the safe watermark is %.0f s behind (%d seqs); transactions holding it: %s",
                status.waited_s, status.lag_seqs, named,
            )  # fmt: skip
        return status

    async def run(self) -> None:
        """Check every `every_s` for as long as the process runs (a failed check is logged)."""
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("the watermark check failed; trying again")
            await asyncio.sleep(self._every_s)


async def _blockers(conn: asyncpg.Connection) -> tuple[Blocker, ...]:
    sessions = await conn.fetch(QUERIES["watermark_blockers"])
    prepared = await conn.fetch(QUERIES["prepared_blockers"])
    return tuple(
        [
            Blocker(
                "session",
                str(r["pid"]),
                r["datname"] or "?",
                f"user {r['usename'] or '?'}, application {r['application_name'] or '-'}",
                r["age_s"] or 0.0,
            )
            for r in sessions
        ]
        + [
            Blocker("prepared", r["gid"], r["database"], f"owner {r['owner']}", r["age_s"] or 0.0)
            for r in prepared
        ]
    )

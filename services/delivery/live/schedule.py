"""When a failed referral is tried again, and when a failing endpoint is disabled.

Pure functions of the attempt count and the clock, so tests drive them with a fake clock.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

JITTER = 0.1  # +- a tenth of each delay, so retries of a burst do not arrive together


@dataclass(frozen=True)
class RetrySchedule:
    """Delays after the 1st, 2nd, ... failure; past the last one a referral is dead."""

    delays_s: Sequence[float]
    jitter: float = JITTER

    def next_attempt(
        self, failed_attempts: int, now: datetime, rng: random.Random
    ) -> datetime | None:
        """When to try again after `failed_attempts` failures (None: exhausted)."""
        if failed_attempts > len(self.delays_s):
            return None
        base = self.delays_s[failed_attempts - 1]
        return now + timedelta(seconds=base * (1 + rng.uniform(-self.jitter, self.jitter)))

    @property
    def attempts(self) -> int:
        """How many attempts a referral gets in all (the first plus one per delay)."""
        return len(self.delays_s) + 1


def disable_reason(
    failing_since: datetime | None, now: datetime, disable_after_s: float
) -> str | None:
    """Why the endpoint is disabled now, or None: failing continuously for the period."""
    if failing_since is None:
        return None
    failing = (now - failing_since).total_seconds()
    if failing < disable_after_s:
        return None
    hours = failing / 3600
    return (
        f"the endpoint failed every attempt for {hours:.1f} hours (since "
        f"{failing_since.isoformat(timespec='seconds')}); re-enable it once it works and "
        "the referrals waiting since then are delivered"
    )

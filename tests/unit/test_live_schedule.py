"""The retry schedule and the disable rule, on a clock the test holds."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from services.delivery.live.policy import (
    DEFAULT_DISABLE_AFTER_S,
    DEFAULT_RETRY_SCHEDULE_S,
)
from services.delivery.live.schedule import RetrySchedule, disable_reason

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_the_default_schedule_is_svix_s_with_jitter_and_ends_in_a_dead_letter() -> None:
    assert DEFAULT_RETRY_SCHEDULE_S == (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
    schedule = RetrySchedule(DEFAULT_RETRY_SCHEDULE_S)
    assert schedule.attempts == 8
    rng = random.Random(7)
    for failed, base in enumerate(DEFAULT_RETRY_SCHEDULE_S, start=1):
        delays = {
            (at - NOW).total_seconds()
            for at in (schedule.next_attempt(failed, NOW, rng) for _ in range(200))
            if at is not None
        }
        assert min(delays) >= base * 0.9
        assert max(delays) <= base * 1.1
        assert len(delays) > 100  # jittered, not one value
    assert schedule.next_attempt(8, NOW, rng) is None  # exhausted: dead
    total = sum(DEFAULT_RETRY_SCHEDULE_S) / 3600
    assert 27.5 < total < 27.7


def test_an_endpoint_is_disabled_only_after_failing_for_the_whole_period() -> None:
    assert DEFAULT_DISABLE_AFTER_S == 5 * 86400
    assert disable_reason(None, NOW, 3600) is None
    since = NOW - timedelta(seconds=3599)
    assert disable_reason(since, NOW, 3600) is None
    reason = disable_reason(NOW - timedelta(hours=2), NOW, 3600)
    assert reason is not None
    assert "failed every attempt for 2.0 hours" in reason
    assert "re-enable" in reason

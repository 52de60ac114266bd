"""TokenBuckets: the bucket arithmetic, Retry-After, and memory that stays bounded."""

from __future__ import annotations

import pytest

from services.export.rate_limit import RateLimit, TokenBuckets


class FakeClock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_allowed_then_refused_until_a_token_refills() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(RateLimit(rate_per_s=2, burst=3, clock=clock))
    verdicts = [buckets.take("a") for _ in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert [v.remaining for v in verdicts] == [2, 1, 0, 0]
    assert verdicts[-1].retry_after_s == 1  # half a second, rounded up to a whole one
    clock.now += 0.5
    assert buckets.take("a").allowed
    assert not buckets.take("a").allowed


def test_retry_after_counts_down_with_the_clock() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(RateLimit(rate_per_s=0.1, burst=1, clock=clock))
    assert buckets.take("a").allowed
    assert buckets.take("a").retry_after_s == 10
    clock.now += 2.5
    refused = buckets.take("a")
    assert (refused.allowed, refused.retry_after_s, refused.reset_s) == (False, 8, 8)


def test_idle_buckets_are_dropped_once_full_again() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(RateLimit(rate_per_s=10, burst=20, clock=clock))
    for key in range(100):
        buckets.take(key)
    assert len(buckets) == 100
    clock.now += 2.0  # 20 tokens at 10/s: every bucket is full, like a new one
    buckets.take("fresh")
    assert len(buckets) == 1


def test_a_flood_of_distinct_keys_keeps_at_most_max_keys() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(RateLimit(rate_per_s=1, burst=1, max_keys=50, clock=clock))
    for key in range(10_000):
        assert buckets.take(key).allowed
    assert len(buckets) == 50
    assert not buckets.take(9_999).allowed  # the most recent ones are kept


@pytest.mark.parametrize(
    "options", [{"rate_per_s": 0}, {"rate_per_s": -1}, {"burst": 0}, {"max_keys": 0}]
)
def test_a_limit_that_could_never_allow_is_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="rate limit needs"):
        RateLimit(**options)  # type: ignore[arg-type]

"""Token buckets per key (a credential id), in memory, bounded in size.

Each process keeps its own buckets: with N replicas a client may make N times the rate.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

DEFAULT_RATE_PER_S = 20.0
DEFAULT_BURST = 40
DEFAULT_MAX_KEYS = 10_000


@dataclass(frozen=True)
class RateLimit:
    """The limit every key gets: `burst` requests at once, refilled at `rate_per_s`."""

    rate_per_s: float = DEFAULT_RATE_PER_S
    burst: int = DEFAULT_BURST
    max_keys: int = DEFAULT_MAX_KEYS  # buckets kept at most; the least recent go first
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        if not (self.rate_per_s > 0 and self.burst >= 1 and self.max_keys >= 1):
            raise ValueError("a rate limit needs rate_per_s > 0, burst >= 1, max_keys >= 1")


@dataclass(frozen=True)
class Verdict:
    """One request's answer: allowed or not, and what the RateLimit headers say."""

    allowed: bool
    limit: int
    remaining: int  # whole requests left now
    retry_after_s: int  # whole seconds until one request is allowed (0 when allowed)
    reset_s: int  # whole seconds until the bucket is full again


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """The buckets of one process. A bucket idle long enough to be full again is the
    same as a new one, so it is dropped; past `max_keys` the least recently used goes
    too (that key then starts with a full bucket: lenient, never unbounded)."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()
        self._refill_s = limit.burst / limit.rate_per_s

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable) -> Verdict:
        """Spend one token of `key`'s bucket if it has one."""
        now = self.limit.clock()
        self._evict_idle(now)
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(float(self.limit.burst), now)
        else:
            elapsed = max(now - bucket.updated, 0.0)
            bucket.tokens = min(self.limit.burst, bucket.tokens + elapsed * self.limit.rate_per_s)
            bucket.updated = now
        allowed = bucket.tokens >= 1.0
        if allowed:
            bucket.tokens -= 1.0
        self._buckets[key] = bucket  # the most recent at the end
        while len(self._buckets) > self.limit.max_keys:
            self._buckets.popitem(last=False)
        rate = self.limit.rate_per_s
        return Verdict(
            allowed=allowed,
            limit=self.limit.burst,
            remaining=math.floor(bucket.tokens),
            retry_after_s=0 if allowed else max(1, math.ceil((1.0 - bucket.tokens) / rate)),
            reset_s=math.ceil((self.limit.burst - bucket.tokens) / rate),
        )

    def _evict_idle(self, now: float) -> None:
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            if now - oldest.updated < self._refill_s:
                return
            del self._buckets[key]


DEFAULT_RATE_LIMIT = RateLimit()  # frozen: safe to share; each app makes its own buckets

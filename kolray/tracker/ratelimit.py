"""Token buckets that keep every poller, on every node, inside the RPC plan the user pays for.

A bucket hands out *reservations*: ``reserve(n)`` takes ``n`` tokens now, going into debt if
needed, and answers how long the caller must wait before using them. Waiting happens at the caller,
so the shared limiter (one Ray actor for the whole cluster) answers every call at once and never
holds a request open; callers that reserve later queue behind the debt in arrival order. After a
429 the endpoint is paused for ``Retry-After`` by pushing the bucket further into debt.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # most tokens that can pile up while idle
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    updated: float = field(init=False)
    granted: int = field(default=0, init=False)
    penalties: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError(
                f"token bucket needs rate > 0 and burst >= 1, got rate={self.rate} burst={self.burst}"
            )
        self.tokens = float(self.burst)
        self.updated = self.clock()

    def _refill(self) -> float:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return now

    def reserve(self, n: float = 1.0) -> float:
        """Take ``n`` tokens; return the seconds to wait before spending them (0 if available now)."""
        if n <= 0:
            return 0.0
        self._refill()
        self.tokens -= n
        self.granted += int(n)
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def pause(self, seconds: float) -> None:
        """The server said "slow down" (429 + Retry-After): nothing more for ``seconds``."""
        self._refill()
        self.penalties += 1
        self.tokens = min(self.tokens, -seconds * self.rate)


def endpoint_key(url: str) -> str:
    """A stable key per endpoint that reveals nothing of the URL (two keys on one host stay apart)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


class RateLimiter:
    """One token bucket per endpoint key. Plain object; ``kolray.tracker.actors`` shares it cluster-wide."""

    def __init__(
        self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def _bucket(self, key: str) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self.clock)
        return bucket

    def reserve(self, key: str, n: float = 1.0) -> float:
        return self._bucket(key).reserve(n)

    def pause(self, key: str, seconds: float) -> None:
        self._bucket(key).pause(seconds)

    def stats(self) -> dict[str, dict[str, float]]:
        return {
            k: {"granted": b.granted, "penalties": b.penalties, "tokens": b.tokens}
            for k, b in self._buckets.items()
        }

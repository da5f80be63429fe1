"""Token buckets: `rate` tokens a second up to `burst`, alone or in a table by key. Pure: the
clock is passed in.

The front door's admission takes one per order from each of its buckets; the worker releases
overflow tickets at a storefront's rate with one.
"""

from __future__ import annotations

from collections import OrderedDict

from engine.config.settings import Rate

MAX_TRACKED = 100_000


class TokenBucket:
    """rate tokens per second up to burst; O(1) per call."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def tokens_now(self, now: float) -> float:
        self._refill(now)
        return self.tokens

    def available(self, now: float, n: float = 1.0) -> bool:
        self._refill(now)
        return self.tokens >= n

    def take(self, now: float, n: float = 1.0) -> float:
        """0.0 when granted (tokens spent); else the seconds until n tokens are there."""
        self._refill(now)
        if self.tokens >= n:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate

    def wait(self, now: float, n: float = 1.0) -> float:
        self._refill(now)
        return 0.0 if self.tokens >= n else (n - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.burst


class BucketTable:
    """Buckets keyed by buyer, IP, storefront or SKU; idle (full) ones are dropped when the
    table grows, so a million one-time buyers cost no memory for long."""

    def __init__(self, rate: Rate, share: float) -> None:
        self.rate = rate
        self.share = share
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def get(self, key: str, now: float) -> TokenBucket:
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate.rate * self.share,
                                 max(1.0, self.rate.burst * self.share), now)
            self.buckets[key] = bucket
            if len(self.buckets) > MAX_TRACKED:
                self._prune(now)
        else:
            self.buckets.move_to_end(key)
        return bucket

    def _prune(self, now: float) -> None:
        for key in list(self.buckets)[: len(self.buckets) // 2]:
            if self.buckets[key].full(now):
                del self.buckets[key]

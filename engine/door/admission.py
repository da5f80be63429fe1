"""The admission decision over token buckets (pure: the clock is passed in).

Every order takes one token (per unit of work, not per code) from five buckets:
per buyer and per buyer_ip, both within the storefront (abuse: over either is always 429,
never queued, and taken whatever capacity says, so one buyer cannot fill the waiting line of a
busy shop), and global, per storefront and per SKU (capacity: over any of these the order
waits in line, or is 429 when the line is full or disabled). The capacity buckets are taken
all or nothing.

With several front-door processes each takes its share of the configured rates (rate / N,
N = front doors alive), so the fleet as a whole holds the configured rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from enum import IntEnum

from engine.config.settings import Rate, Settings
from engine.controls.token_bucket import BucketTable, TokenBucket


class Verdict(IntEnum):
    ADMIT = 0
    OVERFLOW = 1  # over a capacity bucket: a ticket in the waiting line
    LIMITED = 2  # over a buyer or IP bucket: 429


class Outcome:
    """What the door does with one order, and what it tells the client in headers."""

    __slots__ = ("cached", "limit", "remaining", "reset_s", "retry_after", "verdict")

    def __init__(self, verdict: Verdict, retry_after: float, limit: float, remaining: float,
                 reset_s: float) -> None:
        self.verdict = verdict
        self.retry_after = retry_after
        self.limit = limit
        self.remaining = remaining
        self.reset_s = reset_s
        self.cached: Mapping[str, str] | None = None

    def headers(self, window_s: int = 1) -> Mapping[str, str]:
        """IETF RateLimit-Policy / RateLimit (structured fields) for the tightest bucket.
        Read-only: the unlimited answer's mapping is shared by every request."""
        if self.cached is not None:
            return self.cached
        headers = {
            "RateLimit-Policy": _policy(max(1, int(self.limit)), window_s),
            "RateLimit": f'"orders";r={max(0, int(self.remaining))};t={math.ceil(self.reset_s)}',
        }
        if self.verdict != Verdict.ADMIT:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        self.cached = headers  # an order's answer asks more than once
        return headers


_POLICIES: dict[tuple[int, int], str] = {}


def _policy(limit: int, window_s: int) -> str:
    """The RateLimit-Policy value: the same few limits (the config's, as shares) each time."""
    found = _POLICIES.get((limit, window_s))
    if found is None:
        if len(_POLICIES) > 1024:
            _POLICIES.clear()
        found = _POLICIES[(limit, window_s)] = f'"orders";q={limit};w={window_s}'
    return found


UNLIMITED = Outcome(Verdict.ADMIT, 0.0, 1e9, 1e9, 0.0)
UNLIMITED.cached = UNLIMITED.headers()  # the same for every answer when no bucket is set


class Admission:
    """The five bucket tables of one front-door process."""

    def __init__(self, settings: Settings, now: float, share: float = 1.0) -> None:
        self.settings = settings
        self.share = share
        limits = settings.limits
        self.per_buyer = BucketTable(limits.per_buyer, share) if limits.per_buyer else None
        self.per_ip = BucketTable(limits.per_ip, share) if limits.per_ip else None
        self.per_storefront = (
            BucketTable(limits.per_storefront, share) if limits.per_storefront else None
        )
        self.global_ = (
            TokenBucket(limits.global_.rate * share, max(1.0, limits.global_.burst * share), now)
            if limits.global_ else None
        )
        self.per_sku = {
            s.id: BucketTable(s.limit, share) for s in settings.skus if s.limit is not None
        }
        # the points risk limits, per buyer: points granted a minute, orders paid with points
        # an hour (a bucket of that many a period, refilled evenly)
        points = settings.points
        self.points_grants = BucketTable(
            Rate(rate=points.grants_per_minute / 60, burst=points.grants_per_minute), share,
        ) if points.grants_per_minute else None
        self.redemptions = BucketTable(
            Rate(rate=points.redemptions_per_hour / 3600, burst=points.redemptions_per_hour),
            share) if points.redemptions_per_hour else None
        per_ip = settings.coupons.redemptions_per_ip_per_hour  # orders with coupons, per IP
        self.coupon_redemptions = BucketTable(
            Rate(rate=per_ip / 3600, burst=per_ip), share) if per_ip else None
        self._unlimited = self.unlimited

    def inherit(self, old: Admission) -> Admission:
        """Keep the old buckets whose limits did not change, tokens and all: a config change
        must not hand every buyer a fresh burst. Returns self."""
        if old.share != self.share:
            return self
        for name in ("per_buyer", "per_ip", "per_storefront", "points_grants", "redemptions",
                     "coupon_redemptions"):
            new, prev = getattr(self, name), getattr(old, name)
            if new is not None and prev is not None and new.rate == prev.rate:
                setattr(self, name, prev)
        for sku, table in self.per_sku.items():
            prev = old.per_sku.get(sku)
            if prev is not None and prev.rate == table.rate:
                self.per_sku[sku] = prev
        if self.global_ is not None and old.global_ is not None and \
                self.settings.limits.global_ == old.settings.limits.global_:
            self.global_ = old.global_
        return self

    def throttle(self, rate: float | None, now: float) -> None:
        """Follow the fleet's throttled rate (None: back to the configured global bucket)."""
        configured = self.settings.limits.global_
        if rate is None:
            if configured is None:
                self.global_ = None
            elif self.global_ is not None:
                self.global_.rate = configured.rate * self.share
        else:
            share = rate * self.share
            if self.global_ is None:
                self.global_ = TokenBucket(share, max(1.0, share), now)
            else:
                self.global_.rate = share
                self.global_.burst = min(self.global_.burst, max(1.0, share))
        self._unlimited = self.unlimited

    @property
    def unlimited(self) -> bool:
        return not (self.per_buyer or self.per_ip or self.per_storefront or self.global_
                    or self.per_sku)

    def decide(self, now: float, storefront: str, sku: str, buyer: str,
               buyer_ip: str | None) -> Outcome:
        if self._unlimited:
            return UNLIMITED
        abuse = []
        if self.per_buyer is not None:
            abuse.append(self.per_buyer.get(f"{storefront}\0{buyer}", now))
        if self.per_ip is not None and buyer_ip:
            # per storefront: one storefront's traffic never exhausts another's buyers
            abuse.append(self.per_ip.get(f"{storefront}\0{buyer_ip}", now))
        waits = [b.wait(now) for b in abuse]
        if any(waits):
            return self._outcome(Verdict.LIMITED, max(waits), abuse, now)
        # Taken whatever capacity says: a busy shop must not let one buyer fill the line.
        for bucket in abuse:
            bucket.take(now)
        capacity = []
        if self.global_ is not None:
            capacity.append(self.global_)
        if self.per_storefront is not None:
            capacity.append(self.per_storefront.get(storefront, now))
        table = self.per_sku.get(sku)
        if table is not None:
            capacity.append(table.get(sku, now))
        waits = [b.wait(now) for b in capacity]
        if any(waits):
            return self._outcome(Verdict.OVERFLOW, max(waits), capacity, now)
        for bucket in capacity:
            bucket.take(now)
        return self._outcome(Verdict.ADMIT, 0.0, abuse + capacity, now)

    def points_wait(self, now: float, storefront: str, buyer: str, points: int = 0,
                    redemption: bool = False) -> float:
        """0.0 when the buyer may be granted `points` now (or, `redemption`, pay an order with
        points), the tokens taken; else the seconds to wait (nothing taken)."""
        table = self.redemptions if redemption else self.points_grants
        if table is None:
            return 0.0
        bucket = table.get(f"{storefront}\0{buyer}", now)
        need = 1.0 if redemption else float(points)
        if need > bucket.burst:
            return 60.0 if not redemption else 3600.0  # more than a whole period allows
        return bucket.take(now, need)

    def coupon_wait(self, now: float, storefront: str, buyer_ip: str) -> float:
        """0.0 when an order from this address may redeem coupons now (a token taken); else
        the seconds to wait. An order without a buyer_ip counts under the empty address."""
        if self.coupon_redemptions is None:
            return 0.0
        return self.coupon_redemptions.get(f"{storefront}\0{buyer_ip}", now).take(now, 1.0)

    def policy_headers(self, storefront: str | None) -> Mapping[str, str]:
        """RateLimit headers for answers that take no token (reads, cancels)."""
        if self._unlimited:
            return UNLIMITED.headers()
        now = time.monotonic()
        bucket = None
        if storefront is not None and self.per_storefront is not None:
            bucket = self.per_storefront.get(storefront, now)
        elif self.global_ is not None:
            bucket = self.global_
        return self._outcome(Verdict.ADMIT, 0.0, [bucket] if bucket else [], now).headers()

    def _outcome(self, verdict: Verdict, retry_after: float, buckets: list[TokenBucket],
                 now: float) -> Outcome:
        if not buckets:
            return Outcome(verdict, retry_after, 1e9, 1e9, 0.0)
        tight = min(buckets, key=lambda b: b.tokens / b.burst)
        reset = (tight.burst - tight.tokens) / tight.rate if tight.rate else 0.0
        return Outcome(verdict, retry_after, tight.burst / self.share, tight.tokens, reset)

"""Sending one webhook: a signed POST with a time-out, at most `concurrency` in flight and at
most `per_storefront` of them to one storefront, only to public addresses (unless allowed),
and not at all to a destination that keeps failing until its back-off has passed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time

import aiohttp
import msgspec

from engine.config.settings import Webhooks
from engine.controls.destinations import AddressGuard


def signature(secret: str, body: bytes, at: int) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`."""
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def retry_delay(attempt: int, first: float, cap: float, rng: random.Random) -> float:
    """first * 2**(attempt-1), at most cap, times a jitter of 0.5-1.5."""
    return float(min(cap, first * 2 ** max(0, attempt - 1)) * rng.uniform(0.5, 1.5))


class Sent(msgspec.Struct, frozen=True):
    """How an attempt went: delivered (a 2xx), or not, and then how long its destination
    backs off (0: the order's own retry schedule decides)."""

    ok: bool
    back_off_s: float = 0.0


MAX_TRACKED_DESTINATIONS = 10_000


class HostBackoff:
    """Consecutive failures per destination — a storefront's host, so one storefront's
    failing orders never hold back another's receiver on the same host: after each, it is
    left alone for first * 2**(n-1) seconds (at most cap); one 2xx clears it."""

    def __init__(self) -> None:
        self._failures: dict[tuple[str, str], tuple[int, float]] = {}  # -> (failures, until)

    def wait_s(self, destination: tuple[str, str], now: float) -> float:
        found = self._failures.get(destination)
        return max(0.0, float(found[1]) - now) if found else 0.0

    def failed(self, destination: tuple[str, str], now: float, first: float,
               cap: float) -> float:
        failures = self._failures.get(destination, (0, 0.0))[0] + 1
        pause = float(min(cap, first * 2 ** (failures - 1)))
        self._failures[destination] = (failures, now + pause)
        if len(self._failures) > MAX_TRACKED_DESTINATIONS:
            # hosts are the storefronts' choice: forget the ones whose pause is over
            self._failures = {d: f for d, f in self._failures.items() if f[1] > now}
        return pause

    def succeeded(self, destination: tuple[str, str]) -> None:
        self._failures.pop(destination, None)


class WebhookSender:
    """The worker's HTTP client for webhooks."""

    def __init__(self, settings: Webhooks) -> None:
        self.settings = settings
        self.guard = AddressGuard(settings.allow_private)
        self.backoff = HostBackoff()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._per_storefront: dict[str, asyncio.Semaphore] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def use(self, settings: Webhooks) -> None:
        """Timeouts, back-off and allow_private change live; the caps at the next start."""
        self.settings = settings
        if self.guard.allow_private != settings.allow_private:
            self.guard.allow_private = settings.allow_private
            # kept-alive connections were checked under the old rule: none is reused
            stale, self._session = self._session, None
            if stale is not None:
                closing = asyncio.get_running_loop().create_task(stale.close())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        await asyncio.gather(*self._closing, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, storefront: str, host: str, url: str, body: bytes,
                   headers: dict[str, str]) -> Sent:
        hooks = self.settings
        destination = (storefront, host)
        waiting = self.backoff.wait_s(destination, time.monotonic())
        if waiting > 0:
            return Sent(False, waiting)  # this destination is backing off: not tried now
        slots = self._per_storefront.get(storefront)
        if slots is None:
            slots = self._per_storefront[storefront] = asyncio.Semaphore(hooks.per_storefront)
        async with slots, self._slots:
            ok = await self._post(url, body, headers)
        if ok:
            self.backoff.succeeded(destination)
            return Sent(True)
        pause = self.backoff.failed(destination, time.monotonic(), hooks.first_retry_s,
                                    hooks.max_retry_s)
        return Sent(False, pause)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> bool:
        if self._session is None:
            connector = aiohttp.TCPConnector(socket_factory=self.guard, limit=0)
            self._session = aiohttp.ClientSession(connector=connector)
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        try:
            async with self._session.post(url, data=body, headers=headers, timeout=timeout,
                                          allow_redirects=False) as resp:
                return 200 <= resp.status < 300
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return False

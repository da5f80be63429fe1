"""This process's reply channel: workers publish outcomes, waiting requests receive them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

from redis.asyncio import Redis
from redis.exceptions import RedisError

from engine.store import keys
from engine.tasks import stop_tasks
from engine.wire import Reply, decode_replies

log = logging.getLogger("kamigate.replies")


def _time_out(future: asyncio.Future[Reply | None]) -> None:
    if not future.done():
        future.set_result(None)


class ReplyHub:
    """Futures of orders waiting for their outcome, resolved from one pub/sub subscription."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.process_id = secrets.token_hex(6)
        self.channel = keys.reply_channel(self.process_id)
        self._waiters: dict[str, asyncio.Future[Reply | None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def expect(self, order_id: str) -> asyncio.Future[Reply | None]:
        """Register interest before the order is admitted, so no reply can slip past."""
        future: asyncio.Future[Reply | None] = asyncio.get_running_loop().create_future()
        self._waiters[order_id] = future
        return future

    def forget(self, order_id: str) -> None:
        self._waiters.pop(order_id, None)

    async def wait(
        self, order_id: str, future: asyncio.Future[Reply | None], ms: int
    ) -> Reply | None:
        """The reply, or None when none came within `ms`."""
        # A timer that resolves the future with None is cheaper than wait_for's extra task.
        timer = asyncio.get_running_loop().call_later(ms / 1000, _time_out, future)
        try:
            return await future
        finally:
            timer.cancel()
            self._waiters.pop(order_id, None)

    async def wait_many(self, waiters: dict[str, asyncio.Future[Reply | None]], ms: int) -> None:
        """Wait until every order id's future has its reply or `ms` passed; the futures still
        open then get None. One timer for all of them (the batch route), not one per order."""
        try:
            if waiters:
                await asyncio.wait(waiters.values(), timeout=ms / 1000)
        finally:
            for order_id, future in waiters.items():
                self._waiters.pop(order_id, None)
                _time_out(future)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen())
        await asyncio.wait_for(self._ready.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task])

    def _deliver(self, data: bytes) -> None:
        try:
            replies = decode_replies(data)
        except Exception:
            log.warning("undecodable message on %s dropped", self.channel)
            return
        for reply in replies:
            future = self._waiters.pop(reply.order_id, None)
            if future is not None and not future.done():
                future.set_result(reply)

    async def _listen(self) -> None:
        delay = 0.05
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._ready.set()
                delay = 0.05
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self._deliver(message["data"])
            except (RedisError, OSError) as exc:
                log.warning("reply channel lost (%s); resubscribing", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8

"""Helpers for crash-point tests: wait until a worker has killed itself at a failpoint, and
until orders are decided."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from redis.asyncio import Redis

from engine.store import records
from tests.conftest import engine_process


async def worker_killed_at(config_path: Path, place: str, timeout: float = 20) -> None:
    """Run a worker until it SIGKILLs itself at PLACE; fail if it never gets there."""
    with engine_process(["worker", "--config", str(config_path)], place) as doomed:
        deadline = time.monotonic() + timeout
        while doomed.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert doomed.returncode == -9, f"{place} was never reached"


async def decided(redis: Redis, order_ids: list[str]) -> bool:
    """True once every order has a record and none is pending."""
    for order_id in order_ids:
        record = await records.read(redis, order_id)
        if record is None or record.status == "pending":
            return False
    return True

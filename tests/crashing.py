"""Helpers for crash-point tests: a front door's address on a free port, an in-process door
without a worker, stock imported over HTTP, waiting until a worker has killed itself at a
failpoint, and until orders are decided."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from engine import config
from engine.store import records
from engine.store.embedded import free_port
from tests.conftest import OPERATOR_KEY, Engine, auth, engine_process


def door_server() -> tuple[dict[str, Any], str]:
    """The `[server]` section of a front door on a free port, and its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    return {"port": port, "public_url": base}, base


@contextlib.asynccontextmanager
async def door_without_worker(raw: dict[str, Any], url: str, imported: Sequence[str] = ()
                              ) -> AsyncIterator[tuple[Engine, str]]:
    """An in-process front door on `url` with no worker of its own (the test runs one that
    dies at a failpoint), `imported` codes of card-100 in stock; the engine and its base URL."""
    engine = Engine(config.from_mapping(raw, environ={}), url)
    await engine.start(worker=False)
    try:
        if imported:
            await engine.import_codes("card-100", list(imported))
        yield engine, str(engine.http.make_url("")).rstrip("/")
    finally:
        await engine.close()


async def import_over_http(session: aiohttp.ClientSession, base: str, codes: list[str],
                           sku: str = "card-100", lot: str = "d") -> None:
    async with session.post(f"{base}/admin/skus/{sku}/stock?lot={lot}", data="\n".join(codes),
                            headers={**auth(OPERATOR_KEY), "Content-Type": "text/plain"}
                            ) as resp:
        assert resp.status == 200, await resp.text()


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

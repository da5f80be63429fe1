"""Crash points: the worker and the front door SIGKILL themselves at named places
(KAMIGATE_FAILPOINT); after a restart every admitted order is decided once, no code is issued
twice or lost (C1–C5), and an order retried with its Idempotency-Key gets the same codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from engine.store import records
from engine.store.embedded import RedisProcess
from tests.conftest import (
    SHOP_A_KEY,
    auth,
    codes,
    engine_process,
    eventually,
    settings_dict,
    wait_ready,
    worker_process,
    write_config,
)
from tests.crashing import (
    decided,
    door_server,
    door_without_worker,
    import_over_http,
    worker_killed_at,
)
from tests.promises import assert_promises

WORKER_PLACES = ["worker.after_read", "worker.before_claim", "worker.after_claim"]


async def _order(session: aiohttp.ClientSession, base: str, buyer: str,
                 key: str) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{base}/v1/orders", json={
            "sku": "card-100", "qty": 1, "buyer": buyer, "wait_ms": 0},
            headers={**auth(SHOP_A_KEY), "Idempotency-Key": key}) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize("place", WORKER_PLACES)
async def test_worker_killed_at_a_crash_point_loses_nothing(
        place: str, redis: Redis, redis_server: RedisProcess, tmp_path: Path) -> None:
    raw = settings_dict(redis={"url": redis_server.url, "shards": 2})
    cfg = write_config(tmp_path / "k.toml", raw)
    imported = codes(f"CP{place[-5:]}", 40)
    async with door_without_worker(raw, redis_server.url, imported) as (_engine, base), \
            aiohttp.ClientSession() as session:
        answers = [await _order(session, base, f"b{i}", f"k-{i}") for i in range(30)]
        assert all(status == 202 for status, _ in answers)
        await worker_killed_at(cfg, place)
        admitted = [body["order_id"] for _, body in answers]
        with worker_process(cfg):
            await eventually(lambda: decided(redis, admitted), timeout=30)
        result = await assert_promises(redis, 2, ["card-100"], admitted, set(imported))
        assert result["statuses"] == {"fulfilled": 30}
        # C5: the same key and body answer the same order and codes
        again = [await _order(session, base, f"b{i}", f"k-{i}") for i in range(30)]
        assert [b["order_id"] for _, b in again] == admitted
        codes_by_order = {oid: (await records.read(redis, oid)).codes  # type: ignore[union-attr]
                          for oid in admitted}
        assert all(b["codes"] == codes_by_order[b["order_id"]] for _, b in again)


async def test_front_door_killed_after_admit_then_the_retry_gets_the_same_order(
        redis: Redis, redis_server: RedisProcess, tmp_path: Path) -> None:
    server, base = door_server()
    raw = settings_dict(redis={"url": redis_server.url, "shards": 2},
                        server=server)
    cfg = write_config(tmp_path / "k.toml", raw)
    imported = codes("CPD", 5)
    with worker_process(cfg):
        async with aiohttp.ClientSession() as session:
            with engine_process(["serve", "--config", str(cfg)], "door.after_admit") as door:
                await wait_ready(base)
                await import_over_http(session, base, imported)
                with pytest.raises(aiohttp.ClientError):
                    await _order(session, base, "lost-answer", "door-key")
                door.wait(10)
                assert door.returncode == -9
            with engine_process(["serve", "--config", str(cfg)]):
                await wait_ready(base)
                status, first = await _order(session, base, "lost-answer", "door-key")
                assert status == 200, first  # the order the dead door admitted
                await eventually(lambda: decided(redis, [first["order_id"]]), timeout=20)
                status, again = await _order(session, base, "lost-answer", "door-key")
                assert again["order_id"] == first["order_id"]
                assert again["status"] == "fulfilled" and len(again["codes"]) == 1
                _, third = await _order(session, base, "lost-answer", "door-key")
                assert third["codes"] == again["codes"]
    await assert_promises(redis, 2, ["card-100"], [first["order_id"]], set(imported))

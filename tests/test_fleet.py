"""Several front-door processes (kamigate serve --processes 2) hold the configured rates for
the whole fleet, not per process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from engine.clock import now_ms
from engine.http.fleet import HEARTBEAT_TTL_MS
from engine.store import keys, records
from engine.store.embedded import RedisProcess, free_port
from engine.store.heartbeat import alive
from tests.conftest import (
    ADMIN_KEY,
    SHOP_A_KEY,
    auth,
    eventually,
    post_many,
    settings_dict,
    wait_ready,
    worker_process,
    write_config,
)


async def _both_doors_take_half(redis: Redis) -> None:
    """Each door takes its share right after its heartbeat: once both are registered, a beat
    of each one later means each has counted two doors and holds half the rate."""
    async def two_alive() -> bool:
        return await alive(redis, keys.front_doors(), HEARTBEAT_TTL_MS) == 2

    await eventually(two_alive, what="two front doors alive")
    seen_both = now_ms()

    async def each_beat_since() -> bool:
        beats = await redis.zrange(keys.front_doors(), 0, -1, withscores=True)
        return len(beats) == 2 and all(score > seen_both for _, score in beats)

    await eventually(each_beat_since, what="a round of each door since")


async def test_two_front_doors_hold_the_global_rate_together(
    redis: Redis, redis_server: RedisProcess, tmp_path: Path,
) -> None:
    rate, burst = 100, 5
    port = free_port()
    raw: dict[str, Any] = settings_dict(
        server={"port": port, "public_url": f"http://127.0.0.1:{port}"},
        redis={"url": redis_server.url, "shards": 1},
        limits={"global": {"rate": rate, "burst": burst}},
    )
    config = write_config(tmp_path / "fleet.toml", raw)
    doors = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--config", str(config),
                              "--processes", "2"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        with worker_process(config):
            await wait_ready(base)
            await _both_doors_take_half(redis)
            async with aiohttp.ClientSession() as session:
                codes = "\n".join(f"FLEET-{i}" for i in range(1500))
                async with session.post(f"{base}/admin/skus/card-100/stock?lot=f", data=codes,
                                        headers={**auth(ADMIN_KEY),
                                                 "Content-Type": "text/plain"}) as resp:
                    assert resp.status == 200
            started = time.monotonic()
            answers = []
            for slice_ in range(20):  # 5x the rate for two seconds, many connections
                answers += await post_many(base, [
                    {"sku": "card-100", "qty": 1, "buyer": f"f{slice_}-{i}", "wait_ms": 0}
                    for i in range(5 * rate // 10)], key=SHOP_A_KEY, limit=50)
                await asyncio.sleep(max(0.0, started + (slice_ + 1) / 10 - time.monotonic()))
            assert not [s for s, _ in answers if s >= 500]
            order_ids = [b["order_id"] for _, b in answers]
            stamps: list[int] = []

            async def all_served() -> bool:
                found = [await records.read(redis, oid) for oid in order_ids]
                stamps[:] = sorted(r.admitted_ms for r in found
                                   if r is not None and r.status == "fulfilled")
                return len(stamps) == len(order_ids)

            await eventually(all_served, timeout=40, every=0.5, what="every order served")
            assert len(stamps) == 1000
    finally:
        doors.terminate()
        doors.wait(20)
    admitted_rate = (len(stamps) - 2 * burst) / ((stamps[-1] - stamps[0]) / 1000)
    print(f"fleet admitted {admitted_rate:.1f}/s for a configured {rate}/s")
    assert abs(admitted_rate - rate) / rate <= 0.10


async def test_the_other_doors_end_with_the_first_even_when_it_is_killed(
    redis: Redis, redis_server: RedisProcess, tmp_path: Path,
) -> None:
    """`serve --processes 3` (and `up`) starts two more doors on the port: when the first is
    SIGKILLed they end too, instead of serving the port on their own."""
    port = free_port()
    config = write_config(tmp_path / "doors.toml", settings_dict(
        server={"port": port, "public_url": f"http://127.0.0.1:{port}"},
        redis={"url": redis_server.url, "shards": 1}))
    first = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--config", str(config),
                              "--processes", "3"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        with worker_process(config):
            await wait_ready(f"http://127.0.0.1:{port}")
        children_file = Path(f"/proc/{first.pid}/task/{first.pid}/children")
        others: list[int] = []

        async def two_more() -> bool:
            others[:] = [int(pid) for pid in children_file.read_text().split()]
            return len(others) == 2 and await alive(redis, keys.front_doors(), 3000) >= 3

        await eventually(two_more, what="three doors")
        first.kill()
        first.wait(10)

        async def gone() -> bool:
            return not any(Path(f"/proc/{pid}").exists() and
                           "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
                           for pid in others)

        await eventually(gone, timeout=15, what="the other doors ended")
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)

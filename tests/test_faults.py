"""The promises under faults: a worker SIGKILLed mid-sale, Redis restarted, scripts flushed."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from engine import config
from engine.store import connection, keys, records
from engine.store.embedded import RedisProcess, free_port
from tests.cluster import Cluster
from tests.conftest import (
    STORES,
    Engine,
    EngineFactory,
    codes,
    make_settings,
    post_many,
    settings_dict,
    worker_process,
    write_config,
)
from tests.promises import assert_promises


async def _settle(redis: Redis, order_ids: list[str], timeout: float = 30.0) -> None:
    """Wait until no admitted order is still pending."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        pending = 0
        for oid in order_ids:
            record = await records.read(redis, oid)
            pending += record is None or record.status == "pending"
        if pending == 0:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{pending} admitted orders still pending")
        await asyncio.sleep(0.1)


def _bodies(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"sku": "card-100", "qty": 1 + i % 2, "buyer": f"k{start + i}", "wait_ms": 0}
            for i in range(n)]


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_worker_sigkill_mid_sale_then_restart(
    engine_factory: EngineFactory, redis: Redis, store: str, store_url: str, tmp_path: Path
) -> None:
    raw = settings_dict(redis={"url": store_url, "shards": 4, "cluster": store == "cluster"})
    settings = config.from_mapping(raw, environ={})
    engine = await engine_factory(settings, worker=False)
    imported = codes("KILL", 300)
    await engine.import_codes("card-100", imported)
    base = str(engine.http.make_url("")).rstrip("/")
    path = write_config(tmp_path / "k.toml", raw)
    admitted: list[str] = []
    with worker_process(path) as first:
        for round_ in range(3):
            answers = await post_many(base, _bodies(100, round_ * 100))
            assert all(s == 202 for s, _ in answers)
            admitted += [b["order_id"] for _, b in answers]
        first.send_signal(signal.SIGKILL)
        first.wait()
    # orders keep coming while no worker runs: they are admitted and wait in the stream
    answers = await post_many(base, _bodies(100, 300))
    admitted += [b["order_id"] for _, b in answers]
    with worker_process(path):
        await _settle(redis, admitted)
    result = await assert_promises(redis, 4, ["card-100"], admitted, set(imported))
    assert sum(len(c) for c in [result["issued"]]) <= 300
    assert result["statuses"].get("pending", 0) == 0


@pytest.mark.parametrize("store", STORES)
async def test_redis_restart_with_aof_loses_no_acknowledged_order(
    engine_factory: EngineFactory, tmp_path: Path, store: str
) -> None:
    """One server, or one master of a cluster, SIGKILLed mid-load and started again from its
    AOF (appendfsync always): every acknowledged order is there and the promises hold."""
    if store == "cluster":
        cluster = Cluster(tmp_path / "cluster", appendfsync="always")
        cluster.start()
        # the master of shard 0's orders (and, at 2 shards, of shard 1's too)
        server, url, stop = cluster.serving(keys.stream(0)), cluster.url, cluster.stop
    else:
        server = RedisProcess(tmp_path / "redis", port=free_port(), appendfsync="always")
        server.start()
        url, stop = server.url, server.stop
    try:
        raw = settings_dict(redis={"url": url, "shards": 2, "cluster": store == "cluster"})
        settings = config.from_mapping(raw, environ={})
        engine = Engine(settings, url)
        await engine.start()
        imported = codes("AOF", 150)
        await engine.import_codes("card-100", imported)
        base = str(engine.http.make_url("")).rstrip("/")
        acknowledged: list[str] = []

        async def load() -> None:
            for round_ in range(8):
                answers = await post_many(base, _bodies(40, round_ * 40))
                acknowledged.extend(b["order_id"] for s, b in answers if s in (201, 202))
                assert all(s in (201, 202, 503) for s, _ in answers), answers
                await asyncio.sleep(0.05)

        loader = asyncio.create_task(load())
        await asyncio.sleep(0.15)
        server.kill()
        server.start()
        if store == "cluster":
            cluster.wait_healthy()
        await loader
        check = connection.client(url, cluster=store == "cluster")
        try:
            await _settle(check, acknowledged)
            await assert_promises(check, 2, ["card-100"], acknowledged, set(imported))
        finally:
            await check.aclose()
            await engine.close()
    finally:
        stop()


async def test_script_flush_mid_run_fails_no_order(engine: Engine, redis: Redis) -> None:
    imported = codes("FLUSH", 400)
    await engine.import_codes("card-100", imported)
    base = str(engine.http.make_url("")).rstrip("/")
    stop = asyncio.Event()

    async def flusher() -> int:
        flushes = 0
        while not stop.is_set():
            await redis.script_flush()
            flushes += 1
            await asyncio.sleep(0.001)
        return flushes

    task = asyncio.create_task(flusher())
    answers = []
    for round_ in range(4):
        answers += await post_many(base, [{"sku": "card-100", "qty": 1, "buyer": f"f{round_}-{i}"}
                                          for i in range(100)])
    stop.set()
    assert await task >= 5
    assert [s for s, _ in answers] == [201] * 400
    await assert_promises(redis, 4, ["card-100"], [b["order_id"] for _, b in answers],
                          set(imported))


@pytest.mark.parametrize("n", [1])
async def test_entry_delivered_twice_is_claimed_once(engine: Engine, redis: Redis,
                                                     n: int) -> None:
    """At-least-once delivery: re-running a claimed entry writes nothing new."""
    await engine.import_codes("card-100", codes("TWICE", 5))
    status, body = await engine.order()
    assert status == 201
    worker = engine.worker
    assert worker is not None
    shard = 0
    from engine.store import keys

    for s in range(4):
        if await redis.exists(keys.order(body["order_id"], s)):
            shard = s
    entries = await redis.xrange(keys.stream(shard))
    order_entries = [e for e in entries if b"p" in e[1]]
    await worker.process(shard, order_entries)
    record = await records.read(redis, body["order_id"])
    assert record is not None and record.codes == body["codes"]
    levels = await redis.hgetall(keys.sku_counts("card-100", keys.shard_of_sku("card-100", 4)))
    assert int(levels[b"issued"]) == n


async def test_acknowledged_entries_are_trimmed_and_pending_ones_kept(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    from engine.store import keys
    from engine.worker.waiting import trim_stream

    engine = await engine_factory(make_settings(redis={"shards": 1}))
    await engine.import_codes("card-100", codes("TRIM", 50))
    base = str(engine.http.make_url("")).rstrip("/")
    await post_many(base, [{"sku": "card-100", "qty": 1, "buyer": f"t{i}"} for i in range(50)])
    await engine.stop_worker()
    assert int(await redis.xlen(keys.stream(0))) >= 50
    # delivered but never acknowledged (a worker died holding it), and not delivered at all
    await redis.xadd(keys.stream(0), {"kick": "card-100"})
    await redis.xreadgroup(keys.GROUP, "dead-worker", {keys.stream(0): ">"}, count=1)
    await redis.xadd(keys.stream(0), {"kick": "card-100"})
    await trim_stream(redis, keys.stream(0), keys.GROUP)
    kept = await redis.xrange(keys.stream(0))
    assert len(kept) == 2 and all(b"kick" in fields for _, fields in kept)
    await engine.start_worker()  # takes the shard over, reclaims the pending one

    async def drained() -> bool:
        pending = await redis.xpending(keys.stream(0), keys.GROUP)
        return int(pending["pending"]) == 0

    deadline = asyncio.get_running_loop().time() + 10
    while not await drained():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    await trim_stream(redis, keys.stream(0), keys.GROUP)
    assert int(await redis.xlen(keys.stream(0))) == 0

"""Crash points of an order paid with points (KAMIGATE_FAILPOINT, a SIGKILL as a power cut
would): between the reservation and the admission (front door), and between reading a settle
entry, settling the wallet and acknowledging the entry (worker). After a restart P1 and P2
hold, points are spent exactly once, and the stock promises C1-C5 hold too."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from redis.asyncio import Redis

from engine import config
from engine.clock import now_ms
from engine.door.ingest import Ingest
from engine.store import keys, records
from engine.store.embedded import RedisProcess
from engine.wallet import ledger
from engine.wallet.reconcile import reconcile_points
from engine.wire import StreamOrder
from engine.worker.settlement import GRACE_MS, Settlement
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
from tests.test_points import POINTS, PRICED


def _raw(redis_url: str, **extra: Any) -> dict[str, Any]:
    return settings_dict(redis={"url": redis_url, "shards": 2}, skus=PRICED,
                         points={**POINTS, "grants_per_minute": 0}, **extra)


async def _pay(session: aiohttp.ClientSession, base: str, buyer: str, key: str,
               points: int = 1000) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{base}/v1/orders", json={
            "sku": "card-100", "qty": 1, "buyer": buyer, "points": points, "wait_ms": 0},
            headers={**auth(SHOP_A_KEY), "Idempotency-Key": key}) as resp:
        return resp.status, await resp.json()


async def _grant(session: aiohttp.ClientSession, base: str, buyer: str, points: int) -> None:
    async with session.post(f"{base}/v1/buyers/{buyer}/points", json={"points": points},
                            headers=auth(SHOP_A_KEY)) as resp:
        assert resp.status == 201, await resp.text()


async def _points_hold(redis: Redis, buyer: str, spent: int, balance: int) -> None:
    report = await reconcile_points(redis, 2)
    assert report.ok, report.violations
    counts = await ledger.counters(redis, 2, "shop-a", buyer)
    assert (counts.get("spent", 0), counts.get("balance", 0), counts.get("reserved", 0)) == \
        (spent, balance, 0), counts


async def test_door_killed_after_reserving_then_the_retry_pays_once(
        redis: Redis, redis_server: RedisProcess, tmp_path: Path) -> None:
    server, base = door_server()
    raw = _raw(redis_server.url, server=server)
    cfg = write_config(tmp_path / "k.toml", raw)
    imported = codes("PCD", 5)
    with worker_process(cfg):
        async with aiohttp.ClientSession() as session:
            with engine_process(["serve", "--config", str(cfg)], "door.after_reserve") as door:
                await wait_ready(base)
                await import_over_http(session, base, imported)
                await _grant(session, base, "crash", 2500)
                with pytest.raises(aiohttp.ClientError):
                    await _pay(session, base, "crash", "pay-key")
                door.wait(10)
                assert door.returncode == -9
            with engine_process(["serve", "--config", str(cfg)]):
                await wait_ready(base)
                status, first = await _pay(session, base, "crash", "pay-key")
                assert status == 202, first  # admitted now, under the reserved order id
                await eventually(lambda: decided(redis, [first["order_id"]]), timeout=20)
                await eventually(lambda: _no_reservation(redis, "crash"), timeout=20)
                status, again = await _pay(session, base, "crash", "pay-key")
                assert again["order_id"] == first["order_id"]
                assert again["status"] == "fulfilled"
    await _points_hold(redis, "crash", spent=1000, balance=1500)
    await assert_promises(redis, 2, ["card-100"], [first["order_id"]], set(imported))


async def _no_reservation(redis: Redis, buyer: str) -> bool:
    return (await ledger.counters(redis, 2, "shop-a", buyer)).get("reserved", 0) == 0


async def test_a_reservation_whose_order_never_came_is_given_back_by_the_sweep(
        redis: Redis, redis_server: RedisProcess, tmp_path: Path) -> None:
    """The buyer gives up after the door died: the sweep finds the reservation without an
    order and gives its points back — only after the grace, never earlier."""
    server, base = door_server()
    raw = _raw(redis_server.url, server=server)
    cfg = write_config(tmp_path / "k.toml", raw)
    async with aiohttp.ClientSession() as session:
        with worker_process(cfg), \
                engine_process(["serve", "--config", str(cfg)], "door.after_reserve") as door:
            await wait_ready(base)
            await _grant(session, base, "gone", 1000)
            with pytest.raises(aiohttp.ClientError):
                await _pay(session, base, "gone", "abandoned")
            door.wait(10)
    assert (await ledger.counters(redis, 2, "shop-a", "gone"))["reserved"] == 1000
    settings = config.from_mapping(raw, environ={})
    sweep = Settlement(settings, redis, "w-test")
    shard = ledger.wallet_keys("shop-a", "gone", 2)[0]
    await sweep.sweep(shard, now_ms())  # within the grace: it may still be admitted
    assert (await ledger.counters(redis, 2, "shop-a", "gone"))["reserved"] == 1000
    await sweep.sweep(shard, now_ms() + GRACE_MS + 1000)
    await _points_hold(redis, "gone", spent=0, balance=1000)
    # The buyer comes back with the same key: its order id is fenced, never admitted late
    # (its points are back in the wallet), and the answer says so.
    async with aiohttp.ClientSession() as session:
        with engine_process(["serve", "--config", str(cfg)]):
            await wait_ready(base)
            status, problem = await _pay(session, base, "gone", "abandoned")
            assert status == 409 and problem["code"] == "order_abandoned", problem
    assert await records.read(redis, problem["order_id"]) is None
    await _points_hold(redis, "gone", spent=0, balance=1000)


@pytest.mark.parametrize("place", ["worker.before_settle", "worker.after_settle"])
async def test_worker_killed_while_settling_spends_points_exactly_once(
        place: str, redis: Redis, redis_server: RedisProcess, tmp_path: Path) -> None:
    raw = _raw(redis_server.url)
    cfg = write_config(tmp_path / "k.toml", raw)
    imported = codes(f"PW{place[-6:]}", 10)
    async with door_without_worker(raw, redis_server.url, imported) as (_engine, base):
        async with aiohttp.ClientSession() as session:
            await _grant(session, base, "settler", 10_000)
            answers = [await _pay(session, base, "settler", f"k-{i}") for i in range(6)]
            assert all(status == 202 for status, _ in answers), answers
            await worker_killed_at(cfg, place)
            admitted = [body["order_id"] for _, body in answers]
            with worker_process(cfg):
                await eventually(lambda: decided(redis, admitted), timeout=30)
                await eventually(lambda: _no_reservation(redis, "settler"), timeout=30)
        await _points_hold(redis, "settler", spent=6000, balance=4000)
        result = await assert_promises(redis, 2, ["card-100"], admitted, set(imported))
        assert result["statuses"] == {"fulfilled": 6}


async def test_a_door_that_stalled_past_the_sweep_cannot_admit_the_order_late(
        redis: Redis) -> None:
    """The door reserved, then stalled past the grace; the sweep fenced the order id and gave
    the points back. The late admission is refused: nothing is fulfilled without its points."""
    raw = _raw("redis://unused")
    settings = config.from_mapping(raw, environ={})
    await ledger.move(redis, 2, "shop-a", "slow", 1000, "grant", "test", 0, now_ms())
    order_shard = keys.shard_of_sku("card-100", 2)
    order = StreamOrder(keys.new_order_id(order_shard), "shop-a", "card-100", 1, "slow", 0,
                        now_ms(), amount=10_000, points=1000, cash_due=9000, priced=True)
    assert (await ledger.reserve(redis, 2, "shop-a", "slow", order.order_id, 1000,
                                 now_ms()))[0] == "ok"
    wallet_shard = ledger.wallet_keys("shop-a", "slow", 2)[0]
    await Settlement(settings, redis, "w-test").sweep(wallet_shard, now_ms() + GRACE_MS + 1)
    assert (await Ingest(redis, 2).admit(order, order_shard)).status == "abandoned"
    assert await records.read(redis, order.order_id) is None
    await _points_hold(redis, "slow", spent=0, balance=1000)
    # an order admitted before the sweep looked keeps its status, and its reservation
    admitted = msgspec.structs.replace(order, order_id=keys.new_order_id(order_shard))
    await ledger.reserve(redis, 2, "shop-a", "slow", admitted.order_id, 400, now_ms())
    assert (await Ingest(redis, 2).admit(admitted, order_shard)).status == "pending"
    assert await records.abandon(redis, admitted.order_id, now_ms(), 1000) == "pending"
    assert (await ledger.counters(redis, 2, "shop-a", "slow"))["reserved"] == 400


@pytest.mark.parametrize("place", ["worker.after_claim", "worker.before_compensate",
                                   "worker.after_compensate"])
async def test_worker_killed_around_a_late_orders_compensation_compensates_once(
        place: str, redis: Redis, redis_server: RedisProcess, tmp_path: Path) -> None:
    raw = _raw(redis_server.url, compensation={"delay_over_s": 1, "points": 150})
    cfg = write_config(tmp_path / "k.toml", raw)
    async with door_without_worker(raw, redis_server.url) as (engine, base):
        async with aiohttp.ClientSession() as session:
            await _grant(session, base, "latecomer", 3_000)
            answers = [await _pay(session, base, "latecomer", f"late-{place}-{i}")
                       for i in range(3)]
            assert all(status == 202 for status, _ in answers), answers
            await asyncio.sleep(1.2)  # the orders are late before they get codes
            imported = codes(f"PC{place[-6:]}", 3)
            await engine.import_codes("card-100", imported)
            await worker_killed_at(cfg, place)
            admitted = [body["order_id"] for _, body in answers]
            with worker_process(cfg):
                await eventually(lambda: decided(redis, admitted), timeout=30)
                await eventually(lambda: _no_reservation(redis, "latecomer"), timeout=30)
                await eventually(lambda: _compensated(redis, "latecomer", 3), timeout=30)
        await _points_hold(redis, "latecomer", spent=3_000, balance=3 * 150)
        result = await assert_promises(redis, 2, ["card-100"], admitted, set(imported))
        assert result["statuses"] == {"fulfilled": 3}


async def _compensated(redis: Redis, buyer: str, orders: int) -> bool:
    _, wallet = ledger.wallet_keys("shop-a", buyer, 2)
    kinds = [f[b"k"] for _, f in await redis.xrange(wallet.history)]
    return kinds.count(b"compensation") >= orders

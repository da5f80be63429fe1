"""Crash points of an order paid with a coupon (SIGKILL, as a power cut would): the front door
after reserving it, the worker before and after settling it. After a restart K1-K3 hold, the
coupon is redeemed exactly once or back for the next order, and C1-C5 hold too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from engine import config
from engine.clock import now_ms
from engine.store.embedded import RedisProcess
from engine.wallet import ledger
from engine.wallet.coupon_reconcile import reconcile_coupons
from engine.worker.settlement import GRACE_MS, Settlement
from tests.conftest import (
    SHOP_A_KEY,
    auth,
    codes,
    engine_process,
    eventually,
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
from tests.test_points_crash import _grant, _raw

TEMPLATE = {"id": "crash-off", "kind": "amount", "amount": 400, "per_buyer": 0}


def _settings(redis_url: str, **extra: Any) -> dict[str, Any]:
    return _raw(redis_url, coupon_templates=[TEMPLATE], **extra)


async def _coupon(session: aiohttp.ClientSession, base: str, buyer: str) -> str:
    async with session.post(f"{base}/v1/buyers/{buyer}/coupons",
                            json={"template": "crash-off"}, headers=auth(SHOP_A_KEY)) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["code"])


async def _pay(session: aiohttp.ClientSession, base: str, buyer: str, code: str, key: str
               ) -> tuple[int, dict[str, Any]]:
    """An order for a 10.00 card: the coupon takes 4.00 off, points pay the other 6.00, so
    it is fulfilled as soon as the worker claims it."""
    async with session.post(f"{base}/v1/orders", json={
            "sku": "card-100", "qty": 1, "buyer": buyer, "coupons": [code], "points": 600,
            "wait_ms": 0}, headers={**auth(SHOP_A_KEY), "Idempotency-Key": key}) as resp:
        return resp.status, await resp.json()


async def _statuses(session: aiohttp.ClientSession, base: str, buyer: str) -> list[str]:
    async with session.get(f"{base}/v1/buyers/{buyer}/coupons",
                           headers=auth(SHOP_A_KEY)) as resp:
        return [c["status"] for c in (await resp.json())["coupons"]]


async def _k_hold(redis: Redis, raw: dict[str, Any]) -> None:
    report = await reconcile_coupons(redis, config.from_mapping(raw, environ={}))
    assert report.ok, report.violations


async def test_door_killed_after_reserving_a_coupon_then_the_retry_redeems_it_once(
        redis: Redis, redis_server: RedisProcess, tmp_path: Path) -> None:
    server, base = door_server()
    raw = _settings(redis_server.url,
                    server=server)
    cfg = write_config(tmp_path / "k.toml", raw)
    imported = codes("CCD", 3)
    with worker_process(cfg):
        async with aiohttp.ClientSession() as session:
            with engine_process(["serve", "--config", str(cfg)], "door.after_reserve") as door:
                await wait_ready(base)
                await import_over_http(session, base, imported)
                await _grant(session, base, "cc", 600)
                code = await _coupon(session, base, "cc")
                with pytest.raises(aiohttp.ClientError):
                    await _pay(session, base, "cc", code, "cpay")
                door.wait(10)
                assert door.returncode == -9
            with engine_process(["serve", "--config", str(cfg)]):
                await wait_ready(base)
                assert await _statuses(session, base, "cc") == ["reserved"]
                status, first = await _pay(session, base, "cc", code, "cpay")
                assert status == 202, first  # admitted now, under the reserved order id
                await eventually(lambda: decided(redis, [first["order_id"]]), timeout=20)
                await eventually(lambda: _settled(session, base, "cc"), timeout=20)
                status, again = await _pay(session, base, "cc", code, "cpay")
                assert again["order_id"] == first["order_id"] and again["status"] == "fulfilled"
                assert again["price"]["discount"] == 400
    await _k_hold(redis, raw)
    await assert_promises(redis, 2, ["card-100"], [first["order_id"]], set(imported))


async def _settled(session: aiohttp.ClientSession, base: str, buyer: str) -> bool:
    return await _statuses(session, base, buyer) == ["redeemed"]


async def test_a_coupon_whose_order_never_came_is_given_back_by_the_sweep(
        redis: Redis, redis_server: RedisProcess, tmp_path: Path) -> None:
    server, base = door_server()
    raw = _settings(redis_server.url,
                    server=server)
    cfg = write_config(tmp_path / "k.toml", raw)
    async with aiohttp.ClientSession() as session:
        with worker_process(cfg), \
                engine_process(["serve", "--config", str(cfg)], "door.after_reserve") as door:
            await wait_ready(base)
            await _grant(session, base, "left", 600)
            code = await _coupon(session, base, "left")
            with pytest.raises(aiohttp.ClientError):
                await _pay(session, base, "left", code, "gone-key")
            door.wait(10)
        settings = config.from_mapping(raw, environ={})
        sweep = Settlement(settings, redis, "w-test")
        shard = ledger.wallet_keys("shop-a", "left", 2)[0]
        await sweep.sweep(shard, now_ms())  # within the grace: it may still be admitted
        with engine_process(["serve", "--config", str(cfg)]):
            await wait_ready(base)
            assert await _statuses(session, base, "left") == ["reserved"]
            await sweep.sweep(shard, now_ms() + GRACE_MS + 1000)
            assert await _statuses(session, base, "left") == ["active"]  # for the next order
    await _k_hold(redis, raw)
    assert (await ledger.counters(redis, 2, "shop-a", "left"))["balance"] == 600


@pytest.mark.parametrize("place", ["worker.before_settle", "worker.after_settle"])
async def test_worker_killed_while_settling_redeems_each_coupon_once(
        place: str, redis: Redis, redis_server: RedisProcess, tmp_path: Path) -> None:
    raw = _settings(redis_server.url)
    cfg = write_config(tmp_path / "k.toml", raw)
    imported = codes(f"CW{place[-6:]}", 4)
    async with door_without_worker(raw, redis_server.url, imported) as (_engine, base):
        async with aiohttp.ClientSession() as session:
            await _grant(session, base, "cw", 600 * 4)
            answers = [await _pay(session, base, "cw", await _coupon(session, base, "cw"),
                                  f"cw-{i}") for i in range(4)]
            assert all(status == 202 for status, _ in answers), answers
            await worker_killed_at(cfg, place)
            admitted = [body["order_id"] for _, body in answers]
            with worker_process(cfg):
                await eventually(lambda: decided(redis, admitted), timeout=30)
                await eventually(lambda: _all_redeemed(session, base, "cw"), timeout=30)
        await _k_hold(redis, raw)
        result = await assert_promises(redis, 2, ["card-100"], admitted, set(imported))
        assert result["statuses"] == {"fulfilled": 4}


async def _all_redeemed(session: aiohttp.ClientSession, base: str, buyer: str) -> bool:
    return await _statuses(session, base, buyer) == ["redeemed"] * 4

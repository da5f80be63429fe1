"""Retention: decided orders are archived and removed `[orders] retention_s` after they were
decided, orders that still wait are never touched (C4), and `kamigate export` writes the
archive as JSON lines (codes only when asked), removing what it wrote, at least once. The
worker's clock is driven through the retention window."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from engine.clock import now_ms
from engine.store import keys, records
from engine.store.embedded import RedisProcess
from tests.conftest import (
    SHOP_A_KEY,
    EngineFactory,
    auth,
    eventually,
    make_settings,
    settings_dict,
    write_config,
)
from tests.test_cli import kamigate

DAY_MS = 86_400_000
SKUS = [{"id": "card-100", "queue_ttl_s": 10 * 86400}, {"id": "card-reject",
                                                        "on_sold_out": "reject"}]


async def _orders(engine: Any, worker: Any) -> dict[str, str]:
    """One order of each ending, and one that still waits: their ids by what they are."""
    await engine.import_codes("card-100", ["KEEP-ME-1"])
    made = {}
    for name, body in (("fulfilled", {"buyer": "f"}), ("waiting", {"buyer": "w"}),
                       ("rejected", {"buyer": "r", "sku": "card-reject"}),
                       ("cancelled", {"buyer": "c"})):
        status, found = await engine.order(wait_ms=0, **body)
        assert status == 202, found
        made[name] = found["order_id"]
        await worker.drain()
    resp = await engine.http.delete(f"/v1/orders/{made['cancelled']}", headers=auth(SHOP_A_KEY))
    assert resp.status == 200
    return made


async def _status(redis: Redis, order_id: str) -> str | None:
    record = await records.read(redis, order_id)
    return None if record is None else record.status


async def test_decided_orders_leave_after_the_retention_and_waiting_ones_stay(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    engine = await engine_factory(make_settings(redis={"shards": 1}, skus=SKUS,
                                                orders={"retention_s": 86400}), worker=False)
    worker = engine.stepped_worker()
    made = await _orders(engine, worker)
    assert [await _status(redis, made[n]) for n in ("fulfilled", "waiting", "rejected",
                                                    "cancelled")] == \
        ["fulfilled", "queued", "rejected", "cancelled"]
    assert await redis.xlen(keys.decided(0)) == 3
    start = now_ms()
    for at in (start + DAY_MS - 60_000, start + DAY_MS // 2):  # not yet a day
        await worker.chores(at_ms=at)
    assert await redis.xlen(keys.archive(0)) == 0
    await worker.chores(at_ms=start + DAY_MS + 60_000)
    for name in ("fulfilled", "rejected", "cancelled"):
        assert not await redis.exists(keys.order(made[name], 0)), name
    assert await redis.xlen(keys.decided(0)) == 0 and await redis.xlen(keys.archive(0)) == 3
    # the waiting ticket is untouched, still in its line (C4)
    assert await _status(redis, made["waiting"]) == "queued"
    assert await redis.zscore(keys.line("card-100", 0), made["waiting"]) is not None
    resp = await engine.http.get(f"/v1/orders/{made['fulfilled']}", headers=auth(SHOP_A_KEY))
    assert resp.status == 404
    # decided later, retired later
    await engine.import_codes("card-100", ["LATER-1"], lot="later")
    await worker.drain()
    assert await _status(redis, made["waiting"]) == "fulfilled"
    await worker.chores(at_ms=now_ms() + DAY_MS + 60_000)
    assert await _status(redis, made["waiting"]) is None
    assert await redis.xlen(keys.archive(0)) == 4


async def test_an_order_whose_points_are_not_settled_is_kept(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    engine = await engine_factory(make_settings(redis={"shards": 1}, skus=SKUS),
                                  worker=False)
    worker = engine.stepped_worker()
    await engine.import_codes("card-100", ["PT-1"])
    status, order = await engine.order(buyer="pt", wait_ms=0)
    assert status == 202
    await worker.drain()
    record = keys.order(order["order_id"], 0)
    await redis.hset(record, "pt", 1)  # as a points order whose settlement lags behind
    later = now_ms() + 31 * DAY_MS
    await worker.chores(at_ms=later)
    assert await _status(redis, order["order_id"]) == "fulfilled"
    assert await redis.xlen(keys.decided(0)) == 1  # looked at again after a retention
    await redis.hset(record, "ps", 1)  # settled
    await worker.chores(at_ms=later + 31 * DAY_MS)
    assert await _status(redis, order["order_id"]) is None


async def _archived(engine_factory: EngineFactory, redis_server: RedisProcess
                    ) -> tuple[dict[str, Any], Any, Any, dict[str, str]]:
    """(raw settings, engine, its stepped worker, the orders made): three of them retired
    into the archive (see _orders), the waiting one expired meanwhile."""
    raw = settings_dict(redis={"url": redis_server.url, "shards": 1}, skus=SKUS)
    engine = await engine_factory(make_settings(**raw), worker=False)
    worker = engine.stepped_worker()
    made = await _orders(engine, worker)
    await worker.chores(at_ms=now_ms() + 31 * DAY_MS)
    return raw, engine, worker, made


async def test_export_writes_the_archive_and_trims_it(
    engine_factory: EngineFactory, redis: Redis, redis_server: RedisProcess, tmp_path: Path,
) -> None:
    raw, engine, _worker, made = await _archived(engine_factory, redis_server)
    assert await redis.xlen(keys.archive(0)) == 3
    cfg = str(write_config(tmp_path / "k.toml", raw))
    metrics = await (await engine.http.get("/metrics")).text()
    assert "kamigate_archived_orders 3.0" in metrics  # an operator sees it wait
    status = kamigate("status", "--config", cfg, env={**os.environ, "COLUMNS": "200"})
    assert "archived orders not yet exported" in status.stdout and "│ 3" in status.stdout
    future = kamigate("export", "--since", "2999-01-01T00:00:00Z", "--config", cfg)
    assert future.returncode == 0 and future.stdout == "", future.stderr
    assert await redis.xlen(keys.archive(0)) == 3  # nothing written, nothing removed
    plain = kamigate("export", "--config", cfg, env={"KAMIGATE_FAILPOINT": "export.after_write",
                                                     "PATH": "/usr/bin:/bin"})
    assert plain.returncode == -9  # stopped after writing, before trimming
    lines = [json.loads(line) for line in plain.stdout.splitlines()]
    assert sorted(o["status"] for o in lines) == ["cancelled", "fulfilled", "rejected"]
    assert all("codes" not in o and o["archived_at"] for o in lines)
    assert await redis.xlen(keys.archive(0)) == 3  # at least once: written again next time
    out = tmp_path / "orders.jsonl"
    done = kamigate("export", "--with-codes", "--output", str(out), "--config", cfg)
    assert done.returncode == 0 and "exported 3 orders" in done.stderr, done.stderr
    again = {o["order_id"]: o for o in map(json.loads, out.read_text().splitlines())}
    assert set(again) == {made["fulfilled"], made["rejected"], made["cancelled"]}
    assert again[made["fulfilled"]]["codes"] == ["KEEP-ME-1"]
    assert await redis.xlen(keys.archive(0)) == 0


async def test_export_follow_writes_what_comes_until_stopped(
    engine_factory: EngineFactory, redis: Redis, redis_server: RedisProcess, tmp_path: Path,
) -> None:
    raw, engine, worker, _made = await _archived(engine_factory, redis_server)
    out = tmp_path / "follow.jsonl"
    cfg = str(write_config(tmp_path / "k.toml", raw))
    follower = subprocess.Popen(
        [sys.executable, "-m", "engine", "export", "--follow", "--output", str(out),
         "--config", cfg], stderr=subprocess.PIPE, text=True)
    try:
        await eventually(lambda: out.exists() and len(out.read_text().splitlines()) == 3,
                         timeout=15)
        # decided later, archived later: the follower writes it too
        status, late = await engine.order(buyer="late", wait_ms=0, sku="card-reject")
        assert status == 202
        await worker.drain()
        await worker.chores(at_ms=now_ms() + 31 * DAY_MS)
        # with the ticket that waited: expired (its 10 days are over) at the round before
        await eventually(lambda: len(out.read_text().splitlines()) == 5, timeout=15)
    finally:
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=15)
    assert follower.returncode == 0 and "exported 5 orders" in err, err
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert late["order_id"] in {o["order_id"] for o in written}
    assert sorted(o["status"] for o in written[3:]) == ["expired", "rejected"]
    assert await redis.xlen(keys.archive(0)) == 0

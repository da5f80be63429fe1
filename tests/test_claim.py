"""The claim script applies a plan whole or refuses it whole; the worker then matches again."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from engine.clock import now_ms
from engine.store import keys, records
from engine.wire import decode_stream_order, msgpack_encode
from engine.worker.claim_plan import StalePlan, apply_plan, build_plan
from engine.worker.matching import match_batch
from engine.worker.matching_types import MatchOrder
from engine.worker.shard_view import ShardView
from tests.conftest import Engine, EngineFactory, codes, make_settings


async def _entries(redis: Redis, shard: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return [e for e in await redis.xrange(keys.stream(shard)) if b"p" in e[1]]


async def test_stale_plan_is_refused_whole_then_matched_again(
    engine_factory: object, redis: Redis,
) -> None:
    settings = make_settings(redis={"shards": 1})
    engine: Engine = await engine_factory(settings, worker=False)  # type: ignore[operator]
    await engine.import_codes("card-100", codes("ST", 2))
    _, first = await engine.order(wait_ms=0)
    _, second = await engine.order(buyer="b2", wait_ms=0)
    # read the entries as a worker would: they are now pending for this consumer
    await redis.xgroup_create(keys.stream(0), keys.GROUP, id="0")
    delivered = await redis.xreadgroup(keys.GROUP, "test-worker", {keys.stream(0): ">"})
    read = len(delivered[0][1])  # the two orders and the import's "run the line" entry
    entries = await _entries(redis, 0)
    orders = [decode_stream_order(fields[b"p"]) for _, fields in entries]
    policies = {s.id: s for s in settings.skus}

    # read and match, as the worker does ...
    view = ShardView(0, settings.worker.line_scan)
    snapshot = await view.snapshot(redis, policies, {"card-100"}, orders, check_statuses=True)
    batch = [MatchOrder(o.order_id, o.sku, o.qty, o.tier, int(f[b"s"]), o.buyer)
             for o, (_, f) in zip(orders, entries, strict=True)]
    now = now_ms()
    decisions = match_batch(batch, snapshot.books(policies, now // 1000, batch))
    plan = build_plan(0, policies, snapshot, batch, {o.order_id: o for o in orders},
                      decisions, now, {}, [e[0] for e in entries])
    # ... then stock changes under the plan: one lot is voided
    await engine.http.delete("/admin/skus/card-100/stock", params={"lot": "lot1"},
                             headers={"Authorization": "Bearer key-operator"})
    counts_before = await redis.hgetall(keys.sku_counts("card-100", 0))

    with pytest.raises(StalePlan):
        await apply_plan(redis, plan, now)

    # nothing was written: no code left a lot, no order changed, no entry was acknowledged
    assert await redis.hgetall(keys.sku_counts("card-100", 0)) == counts_before
    for oid in (first["order_id"], second["order_id"]):
        record = await records.read(redis, oid)
        assert record is not None and record.status == "pending" and record.codes == []
    pending = await redis.xpending(keys.stream(0), keys.GROUP)
    assert pending["pending"] == read == 3

    # the worker re-reads stock and decides both orders on what is there now
    worker = await engine.start_worker()
    await worker.drain()
    for oid in (first["order_id"], second["order_id"]):
        record = await records.read(redis, oid)
        assert record is not None and record.status == "queued"


async def test_worker_retries_when_its_view_went_stale(engine: Engine, redis: Redis) -> None:
    """The worker's cached view misses an import made behind its back: the claim refuses the
    plan, the worker reads again and fills from the new stock."""
    worker = engine.worker
    assert worker is not None
    await engine.import_codes("card-100", ["V-1"])
    status, body = await engine.order()
    assert status == 201 and body["codes"] == ["V-1"]
    shard = keys.shard_of_sku("card-100", 4)
    # stock arrives without the usual kick entry, so the view is not told
    from engine.stock import importer
    from engine.store import scripts

    await scripts.IMPORT(
        redis,
        [keys.sku_counts("card-100", shard), keys.lots("card-100", shard),
         keys.lot_expiry("card-100", shard), keys.seen("card-100", shard),
         keys.lot_codes("card-100", "quiet", shard), keys.stream(shard) + ":elsewhere",
         keys.shard_fingerprint(shard)],
        ["quiet", 0, "card-100",
         msgpack_encode([importer.ImportItem(importer.digest("V-2"), "V-2", "")]), "plain", 0],
    )
    status, body = await engine.order(buyer="b2")
    assert status == 201 and body["codes"] == ["V-2"]


async def test_a_long_line_behind_expired_stock_is_not_run_again_and_again(
        engine_factory: EngineFactory) -> None:
    """A sold-out line longer than one scan, and stock that is all in expired lots: the
    line is run once (nothing can be sold), not re-run for ever."""
    engine = await engine_factory(make_settings(worker={"line_scan": 3}), worker=False)
    worker = engine.stepped_worker()
    for i in range(5):
        status, _ = await engine.order(buyer=f"late{i}", wait_ms=0)
        assert status in (201, 202)
    await worker.drain()  # five tickets in the sold-out line
    soon = datetime.now(UTC) + timedelta(seconds=1)
    await engine.import_codes("card-100", codes("EXP", 4),
                              expires_at=soon.isoformat().replace("+00:00", "Z"))
    await asyncio.sleep(1.2)  # the lot is past its expiry when the line runs
    batches = await worker.drain(max_batches=50)
    assert batches < 50, "the line was run again and again"


async def test_a_long_line_that_moves_is_run_again_until_the_stock_is_gone(
        engine_factory: EngineFactory) -> None:
    engine = await engine_factory(make_settings(worker={"line_scan": 3}), worker=False)
    worker = engine.stepped_worker()
    ids = []
    for i in range(10):
        _, body = await engine.order(buyer=f"long{i}", wait_ms=0)
        ids.append(body["order_id"])
    await worker.drain()
    await engine.import_codes("card-100", codes("LONG", 8))
    await worker.drain()  # one scan of 3 per batch: the line is run again while it moves
    statuses = [(await engine.http.get(f"/v1/orders/{oid}", headers={
        "Authorization": "Bearer key-shop-a"})) for oid in ids]
    found = [(await r.json())["status"] for r in statuses]
    assert found == ["fulfilled"] * 8 + ["queued"] * 2, found

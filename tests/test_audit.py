"""The audit trail (GET /admin/audit): admin actions with who did them, and one code-issuance
event per served order with its SKU and lot counts, never a code; `since` and `limit`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from engine.clock import rfc3339
from engine.store import audit, keys, records
from tests.conftest import (
    ADMIN_KEY,
    OPERATOR_KEY,
    SHOP_A_KEY,
    VIEWER_KEY,
    Engine,
    EngineFactory,
    auth,
    codes,
    eventually,
    make_settings,
    settings_dict,
)


async def _audit(engine: Engine, key: str = VIEWER_KEY, **params: str
                 ) -> tuple[int, dict[str, Any], str]:
    resp = await engine.http.get("/admin/audit", params=params, headers=auth(key))
    text = await resp.text()
    return resp.status, await resp.json(), text


async def _admin(engine: Engine, method: str, path: str, **body: Any) -> int:
    resp = await engine.http.request(method, path, json=body, headers=auth(OPERATOR_KEY))
    assert resp.status == 200, await resp.text()
    return resp.status


async def _pages(engine: Engine, since: str, limit: str) -> list[dict[str, Any]]:
    """Every event from `since` on, page by page: `?after=<next>` until `next` is null."""
    found: list[dict[str, Any]] = []
    params = {"since": since, "limit": limit}
    for _ in range(50):
        status, body, _ = await _audit(engine, **params)
        assert status == 200, body
        assert len(body["events"]) <= int(limit)
        found += body["events"]
        if body["next"] is None:
            break
        assert body["next"] == body["events"][-1]["cursor"]
        params["after"] = body["next"]
    else:
        raise AssertionError("paging does not end")
    cursors = [e["cursor"] for e in found]
    assert len(set(cursors)) == len(cursors), "a page repeated an event"
    return found


async def _next_ms() -> int:
    """A millisecond strictly after everything so far, and the moment it begins."""
    mark = int(time.time() * 1000) + 1
    while int(time.time() * 1000) < mark:
        await asyncio.sleep(0.001)
    return mark


async def test_audit_lists_admin_actions_and_issuance_without_codes(
    engine: Engine, redis: Redis,
) -> None:
    start = await _next_ms()
    sold = [*codes("SECRET-AU", 6), "LOT2-ONLY-CODE"]
    await engine.import_codes("card-100", sold[:6], lot="lot-a")
    await engine.import_codes("card-100", sold[6:], lot="lot-b")
    await _admin(engine, "PUT", "/admin/maintenance", mode="read_only", reason="count")
    await _admin(engine, "PUT", "/admin/maintenance", mode="off")
    await _admin(engine, "POST", "/admin/pause", scope="sku:card-limited", reason="late")
    await _admin(engine, "POST", "/admin/resume", scope="sku:card-limited")
    served = []
    for i, qty in enumerate((1, 2, 4)):  # the last one takes from both lots
        status, body = await engine.order(buyer=f"au{i}", qty=qty)
        assert status == 201 and body["status"] == "fulfilled", body
        served.append(body)
    status, body, text = await _audit(engine, since=str(start))
    assert status == 200
    events = body["events"]
    admin = [e for e in events if e["kind"] == "admin"]
    assert [(e["who"], e["action"]) for e in admin] == [
        ("ops", "stock.import"), ("ops", "stock.import"), ("ops", "maintenance"),
        ("ops", "maintenance"), ("ops", "pause"), ("ops", "resume")]
    first = admin[0]["details"]
    assert first["sku"] == "card-100" and first["lot"] == "lot-a" and first["added"] == 6
    assert admin[2]["details"]["mode"] == "read_only" and admin[3]["details"]["mode"] == "off"
    assert admin[4]["details"]["scope"] == "sku:card-limited"
    assert admin[4]["details"]["reason"] == "late"
    assert admin[5]["details"] == {"scope": "sku:card-limited"}
    issuance = [e for e in events if e["kind"] == "issuance"]
    assert [e["order_id"] for e in issuance] == [o["order_id"] for o in served]
    for event, order, qty in zip(issuance, served, (1, 2, 4), strict=True):
        assert event["sku"] == "card-100" and event["status"] == "fulfilled"
        assert sum(event["lots"].values()) == qty == len(order["codes"])
    assert issuance[0]["lots"] == {"lot-a": 1}
    assert issuance[2]["lots"] == {"lot-a": 3, "lot-b": 1}
    # oldest first, distinct ids, times within the test
    stamps = [e["at_ms"] for e in events]
    assert stamps == sorted(stamps) and stamps[0] >= start
    assert len({e["cursor"] for e in events}) == len(events)
    # codes never enter the audit
    for code in sold:
        assert code not in text
    assert "SECRET" not in text
    # a storefront key is no admin; no key at all is unauthenticated
    resp = await engine.http.get("/admin/audit", headers=auth(SHOP_A_KEY))
    assert resp.status == 403
    assert (await engine.http.get("/admin/audit")).status == 401


async def test_held_then_failed_orders_in_the_audit(engine_factory: EngineFactory) -> None:
    engine = await engine_factory(make_settings(orders={"max_hold_s": 60}))
    start = await _next_ms()
    await engine.import_codes("card-100", ["HELD-CODE-1"], lot="h")
    status, held = await engine.order(buyer="h1", hold_s=30)
    assert status == 201 and held["status"] == "held"
    status, queued = await engine.order(buyer="h2")  # sold out: no issuance
    assert status == 202 and queued["status"] == "queued"
    _, body, text = await _audit(engine, since=str(start))
    issuance = [e for e in body["events"] if e["kind"] == "issuance"]
    assert [(e["order_id"], e["status"], e["lots"]) for e in issuance] == [
        (held["order_id"], "held", {"h": 1})]
    assert "HELD-CODE-1" not in text


async def test_review_decisions_are_audited(engine_factory: EngineFactory,
                                            redis: Redis) -> None:
    engine = await engine_factory(make_settings(skus=[
        {"id": "card-100", "review_over_qty": 1}]))
    await engine.import_codes("card-100", codes("RVA", 4))
    start = await _next_ms()
    _, approve = await engine.order(qty=2, buyer="r1")
    _, reject = await engine.order(qty=2, buyer="r2")
    assert approve["queue"]["reason"] == reject["queue"]["reason"] == "review"
    await _admin(engine, "POST", f"/admin/review/{approve['order_id']}", decision="approve")
    await _admin(engine, "POST", f"/admin/review/{reject['order_id']}", decision="reject")

    async def served() -> bool:
        record = await records.read(redis, approve["order_id"])
        return record is not None and record.status == "fulfilled"

    await eventually(served)
    _, body, _ = await _audit(engine, since=str(start))
    admin = [(e["who"], e["action"], e["details"]) for e in body["events"]
             if e["kind"] == "admin"]
    assert admin == [("ops", "review.approve", {"order_id": approve["order_id"]}),
                     ("ops", "review.reject", {"order_id": reject["order_id"]})]
    issuance = [e for e in body["events"] if e["kind"] == "issuance"]
    assert [e["order_id"] for e in issuance] == [approve["order_id"]]


async def test_since_filters(engine: Engine) -> None:
    await engine.import_codes("card-100", codes("SN", 3), lot="early")
    middle = await _next_ms()
    await engine.import_codes("card-100", codes("SN2", 3), lot="late")
    status, order = await engine.order(buyer="sn")
    assert status == 201
    for since in (str(middle), rfc3339(middle), rfc3339(middle).replace("Z", "+00:00")):
        status, body, _ = await _audit(engine, since=since)
        assert status == 200, since
        lots = [e["details"]["lot"] for e in body["events"] if e["kind"] == "admin"
                and e["action"] == "stock.import"]
        assert lots == ["late"], since
        assert [e["order_id"] for e in body["events"] if e["kind"] == "issuance"] == [
            order["order_id"]], since
        assert all(e["at_ms"] >= middle for e in body["events"])
    # default: the last hour, so all of it
    status, body, _ = await _audit(engine)
    assert status == 200
    assert [e["details"]["lot"] for e in body["events"]
            if e["kind"] == "admin" and e["action"] == "stock.import"] == ["early", "late"]
    # the future: nothing, and no next page
    later = str(int(time.time() * 1000) + 60_000)
    status, body, _ = await _audit(engine, since=later)
    assert status == 200 and body["events"] == [] and body["next"] is None


@pytest.mark.parametrize("since", [
    "yesterday", "-5", "2026-01-01", "2026-01-01T00:00:00", "1.5e12", "12:00", " ",
])
async def test_bad_since_is_422(engine: Engine, since: str) -> None:
    status, problem, _ = await _audit(engine, since=since)
    assert status == 422 and problem["code"] == "invalid_request"
    assert [e["field"] for e in problem["errors"]] == ["since"]


async def test_since_out_of_range_is_422_and_leaves_the_breaker_closed(engine: Engine) -> None:
    await engine.import_codes("card-100", codes("OOR", 1))
    for _ in range(6):  # more than [breaker] failures (5)
        status, problem, _ = await _audit(engine, since=str(2**64))
        assert status == 422 and problem["errors"][0]["field"] == "since"
    status, order = await engine.order(buyer="oor")
    assert status == 201, order


async def test_limit_bounds(engine: Engine) -> None:
    start = await _next_ms()
    for lot in ("l1", "l2", "l3"):
        await engine.import_codes("card-100", codes(f"LB{lot}", 1), lot=lot)
    status, body, _ = await _audit(engine, since=str(start), limit="1")
    assert status == 200 and len(body["events"]) == 1
    assert body["events"][0]["details"]["lot"] == "l1"
    assert body["next"] == body["events"][0]["cursor"]
    status, body, _ = await _audit(engine, since=str(start), limit="2")
    assert [e["details"]["lot"] for e in body["events"]] == ["l1", "l2"]
    status, body, _ = await _audit(engine, since=str(start), limit="1000")
    assert status == 200 and len(body["events"]) == 3
    for limit in ("0", "1001", "-1", "abc", "", "2.5"):
        status, problem, _ = await _audit(engine, since=str(start), limit=limit)
        assert status == 422, limit
        assert [e["field"] for e in problem["errors"]] == ["limit"], limit


async def test_paging_by_next_reaches_every_event(engine: Engine) -> None:
    start = await _next_ms()
    for lot in ("p1", "p2", "p3", "p4", "p5"):
        await engine.import_codes("card-100", codes(f"PG{lot}", 1), lot=lot)
        await _next_ms()
    events = await _pages(engine, str(start), "2")
    assert [e["details"]["lot"] for e in events] == ["p1", "p2", "p3", "p4", "p5"]
    # the same events as one page
    _, body, _ = await _audit(engine, since=str(start))
    assert body["events"] == events and body["next"] == events[-1]["cursor"]
    # an `after` that is no cursor of ours
    for after in ("yesterday", "1-2-3", "-1-0-0-0-0", "1-0-0-0-x"):
        status, problem, _ = await _audit(engine, since=str(start), after=after)
        assert status == 422 and [e["field"] for e in problem["errors"]] == ["after"], after


async def test_paging_through_one_claim_batch(engine: Engine) -> None:
    await engine.import_codes("card-100", codes("BATCH", 12))
    start = await _next_ms()
    await engine.stop_worker()
    resp = await engine.http.post("/v1/orders/batch", json={"orders": [
        {"sku": "card-100", "qty": 1, "buyer": f"bt{i}", "wait_ms": 0} for i in range(12)]},
        headers=auth(SHOP_A_KEY))
    assert resp.status == 200
    placed = [r["order_id"] for r in (await resp.json())["results"]]
    await engine.start_worker()  # one read, one claim, one issuance entry

    async def all_issued() -> bool:
        _, body, _ = await _audit(engine, since=str(start))
        return len([e for e in body["events"] if e["kind"] == "issuance"]) == 12

    await eventually(all_issued)
    events = await _pages(engine, str(start), "5")
    issued = [e["order_id"] for e in events if e["kind"] == "issuance"]
    assert sorted(issued) == sorted(placed)


async def test_config_change_is_audited(engine: Engine) -> None:
    start = await _next_ms()
    before = await (await engine.http.get("/admin/config", headers=auth(ADMIN_KEY))).json()
    resp = await engine.http.put("/admin/config", json=settings_dict(
        orders={"default_wait_ms": 100}), headers=auth(ADMIN_KEY))
    assert resp.status == 200
    after = await resp.json()
    _, body, _ = await _audit(engine, since=str(start))
    changes = [e for e in body["events"] if e["kind"] == "admin" and "config" in e["action"]]
    assert len(changes) == 1
    assert changes[0]["who"] == "root" and changes[0]["action"] == "config.change"
    assert (changes[0].get("before"), changes[0].get("after")) == (before["sha256"],
                                                                   after["sha256"])


async def test_retention_drops_old_entries(redis: Redis) -> None:
    old = int(time.time() * 1000) - 120_000
    await redis.xadd(keys.audit(), {"who": "ops", "action": "old", "details": "{}"},
                     id=f"{old}-0")
    await redis.xadd(keys.issued(0), {"e": "o_1 card-100 fulfilled lot:1"}, id=f"{old}-0")
    await audit.record(redis, "ops", "new", {})
    await audit.trim(redis, 4, retention_s=60)
    events = await audit.events(redis, 4, since_ms=0)
    assert [e.get("action") for e in events] == ["new"]

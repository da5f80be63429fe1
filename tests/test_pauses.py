"""Pauses of automatic delivery: holiday calendars and config windows (PauseBoard, pure), and an
operator's pause end to end: tickets with reason `paused`, served when the pause ends, in line
order, without any further action; resume; reject; the calendar and pause listings; expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from redis.asyncio import Redis

from engine.clock import parse_rfc3339
from engine.controls import pauses
from engine.controls.calendars import MAX_SPAN
from engine.controls.pauses import OperatorPause, PauseBoard
from engine.store import keys, records
from engine.worker.waiting import sweep
from tests.conftest import (
    OPERATOR_KEY,
    SHOP_A_KEY,
    SHOP_B_KEY,
    STORES,
    VIEWER_KEY,
    Engine,
    EngineFactory,
    auth,
    codes,
    eventually,
    make_settings,
)

CST = timezone(timedelta(hours=8))  # Asia/Shanghai has no DST
SPRING_FESTIVAL = "Chinese New Year (Spring Festival)"

CN_PAUSE = {
    "calendars": {"CN": {"country": "CN", "timezone": "Asia/Shanghai"}},
    "pauses": [{"scope": "sku:card-100", "calendar": "CN"}],
}




def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _pause(engine: Engine, key: str = OPERATOR_KEY, **body: Any
                 ) -> tuple[int, dict[str, Any]]:
    resp = await engine.http.post("/admin/pause", json=body, headers=auth(key))
    return resp.status, await resp.json()


async def _resume(engine: Engine, scope: str, key: str = OPERATOR_KEY
                  ) -> tuple[int, dict[str, Any]]:
    resp = await engine.http.post("/admin/resume", json={"scope": scope}, headers=auth(key))
    return resp.status, await resp.json()


async def _get(engine: Engine, order_id: str, key: str = SHOP_A_KEY) -> dict[str, Any]:
    resp = await engine.http.get(f"/v1/orders/{order_id}", headers=auth(key))
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


async def _door_sees_pauses(engine: Engine) -> None:
    """Wait for the front door's first refresh of its pause board (see the startup race)."""
    async def seen() -> bool:
        resp = await engine.http.get("/admin/pauses", headers=auth(VIEWER_KEY))
        return bool((await resp.json())["active"])

    await eventually(seen, timeout=3)


async def _footprint(redis: Redis) -> tuple[list[str], list[int]]:
    """What an order leaves in Redis: records, idempotency keys, lines, stream entries."""
    found: list[str] = []
    for pattern in ("*:o:*", "*:idem:*", "*:parked:*", "*:review", "*:overflow:*",
                    "*:line:*"):
        found += [k.decode() if isinstance(k, bytes) else k for k in await redis.keys(pattern)]
    streams = [int(await redis.xlen(keys.stream(s))) for s in range(4)]
    return sorted(found), streams


# ---------------------------------------------------------------------------------------------
# PauseBoard, pure: no Redis


def test_spring_festival_pauses_the_sku_for_the_whole_holiday_block() -> None:
    settings = make_settings(**CN_PAUSE)
    board = PauseBoard()
    board.refresh(settings, {}, now=datetime(2026, 2, 16, 12, 0, tzinfo=CST))
    found = board.lookup("shop-a", "card-100")
    assert found is not None
    assert found.holiday == SPRING_FESTIVAL
    assert found.reason == SPRING_FESTIVAL  # no reason configured: the holiday's name
    assert found.ends_at == datetime(2026, 2, 24, 0, 0, tzinfo=CST)
    assert found.action == "queue" and found.source == "calendar:CN"
    assert SPRING_FESTIVAL in found.notice()
    # every storefront's orders for that SKU, none for another SKU
    assert board.lookup("shop-b", "card-100") == found
    assert board.lookup("shop-a", "card-limited") is None


@pytest.mark.parametrize("now", [
    datetime(2026, 2, 14, 12, 0, tzinfo=CST),  # Saturday, a make-up workday before the holiday
    datetime(2026, 2, 24, 0, 0, tzinfo=CST),  # the first moment after the block
    datetime(2026, 2, 24, 9, 0, tzinfo=CST),
    datetime(2026, 2, 14, 23, 59, 59, tzinfo=CST),
])
def test_no_pause_on_make_up_workday_or_after_the_block(now: datetime) -> None:
    board = PauseBoard()
    board.refresh(make_settings(**CN_PAUSE), {}, now=now)
    assert board.lookup("shop-a", "card-100") is None


def test_block_starts_at_local_midnight() -> None:
    board = PauseBoard()
    # 2026-02-15T00:00+08:00 is still the 14th in UTC
    board.refresh(make_settings(**CN_PAUSE), {}, now=datetime(2026, 2, 14, 16, 0, tzinfo=UTC))
    found = board.lookup("shop-a", "card-100")
    assert found is not None and found.holiday == SPRING_FESTIVAL


def test_storefront_and_global_scopes() -> None:
    settings = make_settings(pauses=[
        {"scope": "storefront:shop-b", "reason": "supplier audit",
         "starts_at": "2026-03-01T00:00:00Z", "ends_at": "2026-03-02T00:00:00Z"},
    ])
    board = PauseBoard()
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    board.refresh(settings, {}, now=now)
    shop_b = board.lookup("shop-b", "card-100")
    assert shop_b is not None and shop_b.scope == "storefront:shop-b"
    assert shop_b.reason == "supplier audit" and shop_b.source == "config"
    assert shop_b.ends_at == datetime(2026, 3, 2, tzinfo=UTC)
    assert board.lookup("shop-b", "card-limited") is not None  # every SKU of that storefront
    assert board.lookup("shop-a", "card-100") is None
    # an operator's global pause, until resumed: every order; the longest pause wins
    operators = {"global": OperatorPause(scope="global", reason="incident", by="ops")}
    board.refresh(settings, operators, now=now)
    for storefront in ("shop-a", "shop-b"):
        found = board.lookup(storefront, "card-100")
        assert found is not None and found.scope == "global" and found.ends_at is None
        assert found.source == "operator:ops"
        assert "until an operator resumes it" in found.notice()
    # the window is over: only the operator's pause is left
    board.refresh(settings, operators, now=datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC))
    assert set(board.in_force) == {"global"}


def test_operator_pause_with_until_ends_by_itself() -> None:
    until = "2026-05-05T10:00:00+00:00"
    operators = {"sku:card-100": OperatorPause(scope="sku:card-100", until=until,
                                               action="reject")}
    board = PauseBoard()
    board.refresh(make_settings(), operators, now=datetime(2026, 5, 5, 9, 59, tzinfo=UTC))
    found = board.lookup("shop-a", "card-100")
    assert found is not None and found.action == "reject"
    assert found.ends_at == datetime(2026, 5, 5, 10, 0, tzinfo=UTC)
    board.refresh(make_settings(), operators, now=datetime(2026, 5, 5, 10, 0, tzinfo=UTC))
    assert board.lookup("shop-a", "card-100") is None


def test_operator_resume_overrides_a_calendar_window_until_its_end() -> None:
    settings = make_settings(**CN_PAUSE)
    resumed = {"sku:card-100": OperatorPause(scope="sku:card-100", resumed=True, by="ops",
                                             until="2026-02-24T00:00:00+08:00")}
    board = PauseBoard()
    board.refresh(settings, resumed, now=datetime(2026, 2, 16, 12, 0, tzinfo=CST))
    assert board.lookup("shop-a", "card-100") is None
    # the override ends with the window it overrode: the next holiday pauses again
    board.refresh(settings, resumed, now=datetime(2026, 4, 5, 12, 0, tzinfo=CST))
    found = board.lookup("shop-a", "card-100")
    assert found is not None and found.holiday == "Tomb-Sweeping Day"


def test_calendar_pause_keeps_its_action_without_a_reason() -> None:
    settings = make_settings(calendars=CN_PAUSE["calendars"], pauses=[
        {"scope": "sku:card-100", "calendar": "CN", "action": "reject"}])
    board = PauseBoard()
    board.refresh(settings, {}, now=datetime(2026, 2, 16, 12, 0, tzinfo=CST))
    found = board.lookup("shop-a", "card-100")
    assert found is not None and found.action == "reject"


def test_calendar_pause_with_a_reason_keeps_its_action() -> None:
    settings = make_settings(calendars=CN_PAUSE["calendars"], pauses=[
        {"scope": "sku:card-100", "calendar": "CN", "action": "reject",
         "reason": "holiday rest"}])
    board = PauseBoard()
    board.refresh(settings, {}, now=datetime(2026, 2, 16, 12, 0, tzinfo=CST))
    found = board.lookup("shop-a", "card-100")
    assert found is not None and found.action == "reject" and found.reason == "holiday rest"
    assert found.holiday == SPRING_FESTIVAL


# ---------------------------------------------------------------------------------------------
# End to end: an in-process front door and worker on the test Redis


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_paused_sku_queues_orders_and_serves_them_when_the_pause_ends(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    """The worker is stepped, and its clock driven past the pause's end: nothing is served
    while the pause lasts, everything in line order once it is over."""
    engine = await engine_factory(worker=False)
    worker = engine.stepped_worker()
    await engine.import_codes("card-100", codes("PZ", 10))
    await engine.import_codes("card-limited", codes("OTHER", 2))
    until = datetime.now(UTC) + timedelta(minutes=10)
    status, entry = await _pause(engine, scope="sku:card-100", reason="supplier late",
                                 until=_rfc3339(until))
    assert status == 200 and entry["scope"] == "sku:card-100" and entry["by"] == "ops"
    tiers = [0, 0, 1, 0, 1]
    tickets = []
    for i, tier in enumerate(tiers):
        status, body = await engine.order(buyer=f"pz{i}", tier=tier)
        assert status == 202, body
        assert body["status"] == "queued" and body["queue"]["reason"] == "paused"
        assert "supplier late" in body["notice"]
        eta = body["queue"]["eta_s"]
        assert eta is not None and 590 < eta <= 600
        tickets.append(body)
    resp = await engine.http.get("/admin/skus/card-100", headers=auth(OPERATOR_KEY))
    level = await resp.json()  # the paused tickets count as queued, and say where they wait
    assert level["queued"] == 5 and level["waiting"]["paused"] == 5, level
    # another storefront is paused too (the scope is the SKU); another SKU is not
    status, shop_b = await engine.order(key=SHOP_B_KEY, buyer="pzb")
    assert status == 202 and shop_b["queue"]["reason"] == "paused"
    status, other = await engine.order(sku="card-limited", buyer="other", wait_ms=0)
    assert status == 202 and other["status"] == "pending"
    await worker.drain()
    other = await _get(engine, other["order_id"])
    assert other["status"] == "fulfilled" and other["codes"] == ["OTHER-000000"]
    # the ticket looks the same when polled
    polled = await _get(engine, tickets[0]["order_id"])
    assert polled["status"] == "queued" and polled["queue"]["reason"] == "paused"
    assert polled["queue"]["position"] == 3  # the two tier-1 tickets went ahead of it
    # a whole round of the worker while the pause lasts (its own copy of it): still waiting
    await worker.chores()
    await worker.drain()
    for body in [*tickets, shop_b]:
        record = await records.read(redis, body["order_id"])
        assert record is not None and record.status == "queued"
    # the pause ends: the worker's next round moves the line on, the batch serves it
    until_ms = parse_rfc3339(_rfc3339(until))
    await worker.chores(at_ms=until_ms + 1)
    await worker.drain()
    for body in [*tickets, shop_b]:
        record = await records.read(redis, body["order_id"])
        assert record is not None and record.status == "fulfilled", body["order_id"]
    # served in line order: tier first, then arrival (codes leave the lot in import order)
    served = {}
    for body in tickets:
        fulfilled = await _get(engine, body["order_id"])
        assert fulfilled["status"] == "fulfilled" and len(fulfilled["codes"]) == 1
        assert "queue" not in fulfilled or fulfilled["queue"] is None
        served[body["order_id"]] = fulfilled["codes"][0]
    line = sorted(range(len(tiers)), key=lambda i: (-tiers[i], i))
    by_code = sorted(served, key=served.__getitem__)
    assert by_code == [tickets[i]["order_id"] for i in line]


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_polled_paused_ticket_carries_notice_and_eta(engine: Engine) -> None:
    until = datetime.now(UTC) + timedelta(seconds=30)
    assert (await _pause(engine, scope="sku:card-100", reason="supplier late",
                         until=_rfc3339(until)))[0] == 200
    status, body = await engine.order(buyer="poll")
    assert status == 202 and body["notice"] and body["queue"]["eta_s"]
    polled = await _get(engine, body["order_id"])
    assert polled["status"] == "queued" and polled["queue"]["reason"] == "paused"
    assert polled.get("notice") and "supplier late" in polled["notice"]
    assert polled["queue"]["eta_s"] is not None and 0 < polled["queue"]["eta_s"] <= 30


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_resume_ends_an_operator_pause_at_once(engine: Engine, redis: Redis) -> None:
    await engine.import_codes("card-100", codes("RS", 3))
    status, _ = await _pause(engine, scope="sku:card-100", reason="incident")  # until resumed
    assert status == 200
    status, ticket = await engine.order(buyer="rs")
    assert status == 202 and ticket["queue"]["reason"] == "paused"
    assert ticket["queue"]["eta_s"] is None  # no end known
    assert "until an operator resumes it" in ticket["notice"]
    status, resumed = await _resume(engine, "sku:card-100")
    assert status == 200 and resumed["scope"] == "sku:card-100"
    # served without any further action
    async def served() -> bool:
        record = await records.read(redis, ticket["order_id"])
        return record is not None and record.status == "fulfilled"

    await eventually(served)
    # the door stopped pausing at once
    status, after = await engine.order(buyer="rs2")
    assert status == 201 and after["status"] == "fulfilled"
    # nothing is paused any more
    status, problem = await _resume(engine, "sku:card-100")
    assert status == 404 and problem["code"] == "not_found"


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_storefront_pause_leaves_other_storefronts_alone(engine: Engine) -> None:
    await engine.import_codes("card-100", codes("SF", 2))
    assert (await _pause(engine, scope="storefront:shop-b", reason="unpaid invoice"))[0] == 200
    status, body = await engine.order(key=SHOP_B_KEY, buyer="sf-b")
    assert status == 202 and body["queue"]["reason"] == "paused"
    status, body = await engine.order(buyer="sf-a")
    assert status == 201 and body["status"] == "fulfilled"


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_pause_and_resume_validate_their_requests(engine: Engine) -> None:
    # resume of a scope nothing pauses
    status, problem = await _resume(engine, "sku:card-100")
    assert status == 404 and problem["code"] == "not_found"
    for scope in ("sku:no-such-sku", "storefront:nobody", "everything", "sku:", ""):
        status, problem = await _pause(engine, scope=scope)
        assert status == 422, scope
        assert problem["code"] == "invalid_request"
        assert [e["field"] for e in problem["errors"]] == ["scope"], scope
        status, problem = await _resume(engine, scope)
        assert status == 422 and problem["errors"][0]["field"] == "scope", scope
    past = _rfc3339(datetime.now(UTC) - timedelta(minutes=1))
    status, problem = await _pause(engine, scope="global", until=past)
    assert status == 422 and problem["errors"][0]["field"] == "until"
    status, problem = await _pause(engine, scope="global", until="tomorrow")
    assert status == 422 and problem["errors"][0]["field"] == "until"
    status, problem = await _pause(engine, scope="global", action="drop")
    assert status == 422
    status, problem = await _pause(engine, scope="global", color="red")
    assert status == 422
    # a viewer reads but may not pause or resume; a storefront key is no admin
    status, problem = await _pause(engine, key=VIEWER_KEY, scope="global")
    assert status == 403 and problem["code"] == "forbidden"
    status, problem = await _resume(engine, "global", key=VIEWER_KEY)
    assert status == 403 and problem["code"] == "forbidden"
    status, problem = await _pause(engine, key=SHOP_A_KEY, scope="global")
    assert status == 403
    resp = await engine.http.post("/admin/pause", json={"scope": "global"})
    assert resp.status == 401
    # nothing was paused by any of that
    status, _ = await engine.order(buyer="v")
    assert status != 503
    resp = await engine.http.get("/admin/pauses", headers=auth(VIEWER_KEY))
    listing = await resp.json()
    assert resp.status == 200 and listing["active"] == [] and listing["operators"] == []


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_reject_action_answers_503_paused_and_writes_nothing(
    engine: Engine, redis: Redis,
) -> None:
    await engine.import_codes("card-100", codes("RJ", 2))
    until = datetime.now(UTC) + timedelta(minutes=10)
    status, _ = await _pause(engine, scope="sku:card-100", reason="stocktaking",
                             until=_rfc3339(until), action="reject")
    assert status == 200
    before = await _footprint(redis)
    resp = await engine.http.post(
        "/v1/orders", json={"sku": "card-100", "qty": 1, "buyer": "rj"},
        headers={**auth(SHOP_A_KEY), "Idempotency-Key": "rj-1"})
    problem = await resp.json()
    assert resp.status == 503 and problem["code"] == "paused"
    assert resp.content_type == "application/problem+json"
    assert "stocktaking" in problem["notice"] and "order_id" not in problem
    retry_after = int(resp.headers["Retry-After"])
    assert 500 <= retry_after <= 600  # about the time left
    assert await _footprint(redis) == before  # no order, no idempotency key, no ticket
    sku = await (await engine.http.get("/admin/skus/card-100", headers=auth(VIEWER_KEY))).json()
    assert sku["available"] == 2
    # another SKU is not paused
    status, _ = await engine.order(sku="card-limited", buyer="rj2")
    assert status in (201, 202)


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_open_ended_reject_pause_asks_to_retry_later(engine: Engine) -> None:
    assert (await _pause(engine, scope="global", action="reject"))[0] == 200
    resp = await engine.http.post("/v1/orders", json={"sku": "card-100", "qty": 1, "buyer": "x"},
                                  headers=auth(SHOP_A_KEY))
    assert resp.status == 503 and (await resp.json())["code"] == "paused"
    assert int(resp.headers["Retry-After"]) > 0
    assert (await _resume(engine, "global"))[0] == 200
    status, _ = await engine.order(buyer="x2", wait_ms=0)
    assert status == 202


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_calendar_lists_holiday_windows(engine_factory: EngineFactory) -> None:
    engine = await engine_factory(make_settings(
        calendars={"CN": {"country": "CN", "timezone": "Asia/Shanghai"},
                   "US": {"country": "US", "timezone": "America/New_York"}},
        pauses=[{"scope": "sku:card-100", "calendar": "CN"},
                {"scope": "storefront:shop-b", "calendar": "US", "reason": "US holiday"}],
    ), worker=False)
    resp = await engine.http.get("/admin/calendar", params={"from": "2026-01-01",
                                                            "to": "2026-12-31"},
                                 headers=auth(VIEWER_KEY))
    assert resp.status == 200
    body = await resp.json()
    assert body["from"] == "2026-01-01" and body["to"] == "2026-12-31"
    windows = body["windows"]
    cn = {w["holiday"]: w for w in windows if w["source"] == "calendar:CN"}
    spring = cn[SPRING_FESTIVAL]
    assert spring["scope"] == "sku:card-100"
    assert datetime.fromisoformat(spring["starts_at"]) == datetime(2026, 2, 15, tzinfo=CST)
    assert datetime.fromisoformat(spring["ends_at"]) == datetime(2026, 2, 24, tzinfo=CST)
    assert spring["starts_at"].endswith("+08:00")
    national = cn["National Day"]
    assert datetime.fromisoformat(national["starts_at"]) == datetime(2026, 10, 1, tzinfo=CST)
    assert datetime.fromisoformat(national["ends_at"]) == datetime(2026, 10, 8, tzinfo=CST)
    us = {w["holiday"]: w for w in windows if w["source"] == "calendar:US"}
    thanksgiving = us["Thanksgiving Day"]
    assert thanksgiving["scope"] == "storefront:shop-b"
    assert thanksgiving["reason"] == "US holiday"
    starts = datetime.fromisoformat(thanksgiving["starts_at"])
    ends = datetime.fromisoformat(thanksgiving["ends_at"])
    assert starts.date().isoformat() == "2026-11-26" and starts.utcoffset() == timedelta(hours=-5)
    assert ends - starts == timedelta(days=1)
    # windows are sorted by start; each calendar's blocks listed too
    starts_all = [datetime.fromisoformat(w["starts_at"]) for w in windows]
    assert starts_all == sorted(starts_all)
    blocks = {b["holiday"]: b for b in body["calendars"]["CN"]}
    assert blocks[SPRING_FESTIVAL] == {"first_day": "2026-02-15", "last_day": "2026-02-23",
                                       "holiday": SPRING_FESTIVAL}
    assert {b["holiday"] for b in body["calendars"]["US"]} >= {"Thanksgiving Day"}
    # bad ranges
    for params in ({"from": "2026-12-31", "to": "2026-01-01"},
                   {"from": "2026-01-01", "to": "2026-01-01"},
                   {"from": "someday"}):
        resp = await engine.http.get("/admin/calendar", params=params, headers=auth(VIEWER_KEY))
        problem = await resp.json()
        assert resp.status == 422 and problem["code"] == "invalid_request", params
        assert problem["errors"][0]["field"] in ("from", "to")
    resp = await engine.http.get("/admin/calendar", params={"from": "2026-12-31",
                                                            "to": "2026-01-01"},
                                 headers=auth(VIEWER_KEY))
    assert (await resp.json())["errors"][0]["field"] == "to"
    assert (await engine.http.get("/admin/calendar", headers=auth(SHOP_A_KEY))).status == 403


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_pause_listing_shows_active_and_scheduled(engine_factory: EngineFactory) -> None:
    now = datetime.now(UTC)
    later = [_rfc3339(now + timedelta(days=2)), _rfc3339(now + timedelta(days=3))]
    engine = await engine_factory(make_settings(pauses=[
        {"scope": "storefront:shop-b", "reason": "contract renewal",
         "starts_at": later[0], "ends_at": later[1]},
    ]), worker=False)
    until = now + timedelta(hours=1)
    assert (await _pause(engine, scope="sku:card-100", reason="supplier late",
                         until=_rfc3339(until)))[0] == 200
    resp = await engine.http.get("/admin/pauses", headers=auth(VIEWER_KEY))
    assert resp.status == 200
    body = await resp.json()
    [active] = body["active"]
    assert active["scope"] == "sku:card-100" and active["reason"] == "supplier late"
    assert active["action"] == "queue" and active["source"] == "operator:ops"
    assert parse_rfc3339(active["until"]) == parse_rfc3339(_rfc3339(until))
    [scheduled] = body["scheduled"]
    assert scheduled["scope"] == "storefront:shop-b"
    assert scheduled["reason"] == "contract renewal" and scheduled["source"] == "config"
    assert parse_rfc3339(scheduled["starts_at"]) == parse_rfc3339(later[0])
    assert parse_rfc3339(scheduled["ends_at"]) == parse_rfc3339(later[1])
    [operator] = body["operators"]
    assert operator["scope"] == "sku:card-100" and operator["by"] == "ops"
    assert not operator["resumed"]
    # once resumed, it is no longer active
    assert (await _resume(engine, "sku:card-100"))[0] == 200
    body = await (await engine.http.get("/admin/pauses", headers=auth(VIEWER_KEY))).json()
    assert body["active"] == [] and len(body["scheduled"]) == 1


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_paused_ticket_lives_until_pause_end_plus_queue_ttl(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    """The expiry sweep, given each moment as `now`: the ticket outlives its own ttl while the
    pause lasts, and expires at the pause's end plus the ttl."""
    engine = await engine_factory(make_settings(skus=[
        {"id": "card-100", "queue_ttl_s": 1}]), worker=False)
    until = datetime.now(UTC) + timedelta(seconds=60)
    assert (await _pause(engine, scope="sku:card-100", until=_rfc3339(until)))[0] == 200
    status, ticket = await engine.order(buyer="ttl")  # no stock: it waits for a restock then
    assert status == 202 and ticket["queue"]["reason"] == "paused"
    until_ms = parse_rfc3339(_rfc3339(until))
    expires_ms = parse_rfc3339(ticket["queue"]["expires_at"])
    created_ms = parse_rfc3339(ticket["created_at"])
    assert created_ms < until_ms
    assert abs(expires_ms - (until_ms + 1000)) <= 1  # the pause's end + the SKU's ttl
    shard = keys.shard_of_order(ticket["order_id"])
    assert shard is not None
    # not expired when the ticket's own ttl (alone) has run out, nor just before the end + ttl
    for now in (created_ms + 1000 + 1, until_ms, expires_ms - 1):
        assert await sweep(redis, shard, now) == 0
        record = await records.read(redis, ticket["order_id"])
        assert record is not None and record.status == "queued", now
    assert await sweep(redis, shard, expires_ms) == 1
    record = await records.read(redis, ticket["order_id"])
    assert record is not None and record.status == "expired"
    assert record.updated_ms == expires_ms
    body = await _get(engine, ticket["order_id"])
    assert body["status"] == "expired"
    assert await redis.zscore(keys.parked_line("card-100", "shop-a", shard),
                              ticket["order_id"]) is None


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_resume_overrides_a_config_window_until_its_end(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    now = datetime.now(UTC)
    ends = now + timedelta(hours=1)
    engine = await engine_factory(make_settings(pauses=[
        {"scope": "sku:card-100", "reason": "night shift",
         "starts_at": _rfc3339(now - timedelta(hours=1)), "ends_at": _rfc3339(ends)}]))
    await engine.import_codes("card-100", codes("CW", 3))
    status, ticket = await engine.order(buyer="cw")
    assert status == 202 and ticket["queue"]["reason"] == "paused"
    assert "night shift" in ticket["notice"]
    assert 3500 <= ticket["queue"]["eta_s"] <= 3600
    listing = await (await engine.http.get("/admin/pauses", headers=auth(VIEWER_KEY))).json()
    assert [(p["scope"], p["source"]) for p in listing["active"]] == [("sku:card-100", "config")]
    status, resumed = await _resume(engine, "sku:card-100")
    assert status == 200 and resumed["resumed"] is True and resumed["by"] == "ops"
    assert parse_rfc3339(resumed["until"]) == parse_rfc3339(_rfc3339(ends))

    async def served() -> bool:
        record = await records.read(redis, ticket["order_id"])
        return record is not None and record.status == "fulfilled"

    await eventually(served)
    status, body = await engine.order(buyer="cw2")
    assert status == 201 and body["status"] == "fulfilled"
    listing = await (await engine.http.get("/admin/pauses", headers=auth(VIEWER_KEY))).json()
    assert listing["active"] == []


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_config_window_with_reject_action(engine_factory: EngineFactory) -> None:
    now = datetime.now(UTC)
    engine = await engine_factory(make_settings(pauses=[
        {"scope": "storefront:shop-a", "action": "reject",
         "starts_at": _rfc3339(now - timedelta(minutes=1)),
         "ends_at": _rfc3339(now + timedelta(minutes=5))}]), worker=False)
    await _door_sees_pauses(engine)
    resp = await engine.http.post("/v1/orders", json={"sku": "card-100", "qty": 1, "buyer": "w"},
                                  headers=auth(SHOP_A_KEY))
    assert resp.status == 503 and (await resp.json())["code"] == "paused"
    assert 200 <= int(resp.headers["Retry-After"]) <= 300
    status, _ = await engine.order(key=SHOP_B_KEY, buyer="w2", wait_ms=0)
    assert status == 202


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_cancelled_paused_ticket_stays_cancelled(engine: Engine, redis: Redis) -> None:
    await engine.import_codes("card-100", codes("CP", 2))
    assert (await _pause(engine, scope="sku:card-100"))[0] == 200
    status, ticket = await engine.order(buyer="cp")
    assert status == 202 and ticket["queue"]["reason"] == "paused"
    resp = await engine.http.delete(f"/v1/orders/{ticket['order_id']}", headers=auth(SHOP_A_KEY))
    assert resp.status == 200 and (await resp.json())["status"] == "cancelled"
    status, waiting = await engine.order(buyer="cp2")
    assert status == 202 and waiting["queue"]["position"] == 1  # the cancelled one left
    assert (await _resume(engine, "sku:card-100"))[0] == 200

    async def served() -> bool:
        record = await records.read(redis, waiting["order_id"])
        return record is not None and record.status == "fulfilled"

    await eventually(served)
    assert (await _get(engine, ticket["order_id"]))["status"] == "cancelled"
    sku = await (await engine.http.get("/admin/skus/card-100", headers=auth(VIEWER_KEY))).json()
    assert sku["available"] == 1 and sku["issued"] == 1


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_replayed_paused_ticket_carries_notice(engine: Engine) -> None:
    until = datetime.now(UTC) + timedelta(seconds=30)
    assert (await _pause(engine, scope="sku:card-100", reason="supplier late",
                         until=_rfc3339(until)))[0] == 200
    first = await engine.order(buyer="rp", idempotency_key="rp-1")
    resp = await engine.http.post("/v1/orders", json={"sku": "card-100", "qty": 1, "buyer": "rp"},
                                  headers={**auth(SHOP_A_KEY), "Idempotency-Key": "rp-1"})
    replay = await resp.json()
    assert resp.status == 200 and resp.headers.get("Idempotent-Replayed") == "true"
    assert replay["order_id"] == first[1]["order_id"]
    assert replay.get("notice") and "supplier late" in replay["notice"]
    assert replay["queue"]["eta_s"] is not None


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_far_until_is_refused_and_breaks_nothing(engine: Engine) -> None:
    """`until` is bounded (MAX_SPAN, about ten years): a far one is 422 naming the field, no
    pause is set, and orders go on as before."""
    status, problem = await _pause(engine, scope="sku:card-100", until="9999-12-31T23:59:59Z")
    assert status == 422 and problem["code"] == "invalid_request", problem
    assert [e["field"] for e in problem["errors"]] == ["until"]
    listing = await (await engine.http.get("/admin/pauses", headers=auth(VIEWER_KEY))).json()
    assert listing["active"] == []
    await engine.import_codes("card-100", codes("FAR", 1))
    status, order = await engine.order(buyer="far")
    assert status == 201 and order["status"] == "fulfilled", order
    # the longest `until` allowed is taken, and orders still get their tickets
    near_limit = datetime.now(UTC) + MAX_SPAN - timedelta(days=1)
    assert (await _pause(engine, scope="sku:card-100", until=_rfc3339(near_limit)))[0] == 200
    status, ticket = await engine.order(buyer="far2", wait_ms=0)
    assert status == 202 and ticket["queue"]["reason"] == "paused", ticket
    assert (await engine.http.get(f"/v1/orders/{ticket['order_id']}",
                                  headers=auth(SHOP_A_KEY))).status == 200


@pytest.mark.parametrize("params", [
    {"from": "9999-12-01"},
    {"from": "9999-01-01", "to": "9999-12-31"},
    {"from": "0001-01-01", "to": "0001-03-01"},
])
@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_calendar_far_dates_are_refused_naming_the_field(engine_factory: EngineFactory,
                                                               params: dict[str, str]) -> None:
    """The calendar answers for the years 1900 to 2200: beyond, 422 naming `from`."""
    engine = await engine_factory(make_settings(**CN_PAUSE), worker=False)
    resp = await engine.http.get("/admin/calendar", params=params, headers=auth(VIEWER_KEY))
    problem = await resp.json()
    assert resp.status == 422 and problem["code"] == "invalid_request", problem
    assert [e["field"] for e in problem["errors"]] == ["from"]


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_resume_after_the_pause_ran_out_is_404(engine: Engine, redis: Redis) -> None:
    """Once its `until` has passed (given as `now`), a pause is over: nothing is paused for the
    scope, the listing shows none, and resuming it finds nothing (the route's 404)."""
    until = datetime.now(UTC) + timedelta(minutes=10)
    assert (await _pause(engine, scope="sku:card-100", until=_rfc3339(until)))[0] == 200
    settings = engine.settings
    board = PauseBoard()
    before, after = until - timedelta(seconds=1), until + timedelta(seconds=1)
    board.refresh(settings, await pauses.load(redis), now=before)
    assert board.lookup("shop-a", "card-100") is not None  # still paused a second before
    board.refresh(settings, await pauses.load(redis), now=after)
    assert board.lookup("shop-a", "card-100") is None
    assert pauses.listing(board, settings, after)["active"] == []
    assert await pauses.resume(redis, board, settings, "sku:card-100", "ops", now=after) is None
    # and over HTTP, once nothing is paused, resume is 404
    status, problem = await _resume(engine, "sku:card-100")
    assert status == 404 and problem["code"] == "not_found"


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_config_pause_in_force_from_the_first_request(
    engine_factory: EngineFactory,
) -> None:
    now = datetime.now(UTC)
    engine = await engine_factory(make_settings(pauses=[
        {"scope": "sku:card-100", "reason": "closed",
         "starts_at": _rfc3339(now - timedelta(minutes=1)),
         "ends_at": _rfc3339(now + timedelta(minutes=5))}]), worker=False)
    status, body = await engine.order(buyer="first", wait_ms=0)
    assert status == 202 and body["status"] == "queued", body
    assert body["queue"]["reason"] == "paused"


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_without_a_waiting_room_paused_and_reviewed_orders_still_wait(
        engine_factory: EngineFactory) -> None:
    """The waiting room only bounds overflow: a pause or a review still makes a ticket."""
    engine = await engine_factory(make_settings(
        waiting_room={"enabled": False},
        skus=[{"id": "card-100", "max_qty": 10, "review_over_qty": 2},
              {"id": "card-limited", "max_qty": 5}]))
    await engine.import_codes("card-100", codes("NR", 5))
    status, reviewed = await engine.order(qty=3, buyer="big")
    assert status == 202 and reviewed["queue"]["reason"] == "review", reviewed
    status, _ = await _pause(engine, scope="sku:card-limited", reason="holiday")
    assert status == 200
    status, paused = await engine.order(sku="card-limited", buyer="p1")
    assert status == 202 and paused["queue"]["reason"] == "paused", paused

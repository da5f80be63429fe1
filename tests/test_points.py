"""Points: the wallet per (storefront, buyer), grants and deductions, the ledger, and the
promises P1 (conservation), P3 (no over-deduction) and P4 (idempotency) on a real Redis."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from engine.wallet import ledger
from tests.conftest import (
    SHOP_A_KEY,
    SHOP_B_KEY,
    Engine,
    EngineFactory,
    auth,
    make_settings,
    settings_dict,
)

POINTS = {"per_unit": 100, "earn_per_unit": 1, "expire_after_days": 730,
          "max_redeem_percent": 100, "remind_before_days": 30}
PRICED = [{"id": "card-100", "max_qty": 10, "price": 1000},
          {"id": "card-limited", "max_qty": 5, "buyer_limit": 3, "price": 500},
          {"id": "card-free", "max_qty": 10}]


def points_settings(**sections: Any) -> Any:
    raw = settings_dict(points={**POINTS, **sections.pop("points", {})}, skus=PRICED,
                        **sections)
    return make_settings(**raw)


async def wallet_of(engine: Engine, buyer: str, key: str = SHOP_A_KEY) -> dict[str, Any]:
    resp = await engine.http.get(f"/v1/buyers/{buyer}/points", headers=auth(key))
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def move(engine: Engine, buyer: str, points: int, key: str = SHOP_A_KEY,
               idempotency_key: str | None = None, **body: Any) -> tuple[int, dict[str, Any]]:
    headers = auth(key)
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    resp = await engine.http.post(f"/v1/buyers/{buyer}/points",
                                  json={"points": points, **body}, headers=headers)
    return resp.status, await resp.json()


async def assert_p1(redis: Redis, storefront: str, buyer: str, shards: int = 4) -> None:
    c = await ledger.counters(redis, shards, storefront, buyer)
    get = c.get
    assert get("granted", 0) - get("deducted", 0) - get("expired", 0) == \
        get("balance", 0) + get("reserved", 0) + get("spent", 0), c
    assert get("balance", 0) >= 0 and get("reserved", 0) >= 0, c


@pytest.fixture
async def engine(engine_factory: EngineFactory) -> Engine:
    return await engine_factory(points_settings())


async def test_a_buyer_never_seen_has_an_empty_wallet(engine: Engine) -> None:
    wallet = await wallet_of(engine, "nobody")
    assert wallet["balance"] == 0 and wallet["reserved"] == 0 and wallet["lots"] == []
    assert wallet["expiring"]["points"] == 0


async def test_grants_and_deductions_move_the_balance_and_the_ledger(
        engine: Engine, redis: Redis) -> None:
    status, first = await move(engine, "alice", 500, reason="signup")
    assert status == 201 and first["balance"] == 500
    status, second = await move(engine, "alice", 300, reason="promo",
                                expires_at="2099-01-01T00:00:00Z")
    assert status == 201 and second["balance"] == 800
    status, taken = await move(engine, "alice", -600, reason="manual")
    assert status == 201 and taken["balance"] == 200
    status, problem = await move(engine, "alice", -201)
    assert status == 409 and problem["code"] == "insufficient_points"
    wallet = await wallet_of(engine, "alice")
    assert wallet["balance"] == 200
    assert sum(lot["points"] for lot in wallet["lots"]) == 200
    resp = await engine.http.get("/v1/buyers/alice/points/history?limit=2",
                                 headers=auth(SHOP_A_KEY))
    page = await resp.json()
    assert [e["kind"] for e in page["entries"]] == ["deduct", "grant"]
    assert page["entries"][0]["points"] == 600 and page["next_cursor"]
    resp = await engine.http.get(f"/v1/buyers/alice/points/history?cursor="
                                 f"{page['next_cursor']}", headers=auth(SHOP_A_KEY))
    rest = await resp.json()
    assert [e["kind"] for e in rest["entries"]] == ["grant"] and rest["next_cursor"] is None
    assert rest["entries"][0]["reason"] == "signup"
    await assert_p1(redis, "shop-a", "alice")


async def test_a_deduction_takes_the_soonest_expiring_points_first(engine: Engine) -> None:
    await move(engine, "fefo", 100, expires_at="2099-01-01T00:00:00Z")
    await move(engine, "fefo", 100, expires_at="2030-01-01T00:00:00Z")
    await move(engine, "fefo", -150)
    wallet = await wallet_of(engine, "fefo")
    assert [(lot["points"], lot["expires_at"][:4]) for lot in wallet["lots"]] == [(50, "2099")]


async def test_a_wallet_belongs_to_one_storefront(engine: Engine) -> None:
    await move(engine, "shared-name", 700)
    assert (await wallet_of(engine, "shared-name", SHOP_B_KEY))["balance"] == 0
    status, problem = await move(engine, "shared-name", -1, key=SHOP_B_KEY)
    assert status == 409 and problem["code"] == "insufficient_points"


async def test_a_grant_replayed_with_its_key_moves_points_once(engine: Engine,
                                                              redis: Redis) -> None:
    """P4: the same Idempotency-Key and body answer the first grant; another body is 409."""
    answers = [await move(engine, "p4", 250, idempotency_key="grant-1", reason="r")
               for _ in range(3)]
    assert {s for s, _ in answers} == {201}
    assert len({b["entry_id"] for _, b in answers}) == 1
    assert (await wallet_of(engine, "p4"))["balance"] == 250
    status, problem = await move(engine, "p4", 999, idempotency_key="grant-1")
    assert status == 409 and problem["code"] == "idempotency_conflict"
    await assert_p1(redis, "shop-a", "p4")


@pytest.mark.parametrize(("path_buyer", "body", "field"), [
    ("alice", {"points": 0}, "points"),
    ("alice", {"points": 10**13}, "points"),
    ("alice", {"points": "many"}, "points"),
    ("alice", {"points": 5, "expires_at": "yesterday"}, "expires_at"),
    ("alice", {"points": 5, "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ("alice", {"points": 5, "reason": "x" * 201}, "reason"),
    ("alice", {"points": 5, "colour": "red"}, "colour"),
    ("a%20b", {"points": 5}, "buyer"),
    ("a" * 129, {"points": 5}, "buyer"),
])
async def test_bad_grants_are_422_and_write_nothing(engine: Engine, redis: Redis,
                                                    path_buyer: str, body: dict[str, Any],
                                                    field: str) -> None:
    resp = await engine.http.post(f"/v1/buyers/{path_buyer}/points", json=body,
                                  headers=auth(SHOP_A_KEY))
    problem = await resp.json()
    assert resp.status == 422 and problem["errors"][0]["field"] == field, problem
    assert await redis.keys("kg:{s*}:w*") == []


async def test_points_need_a_points_section(engine_factory: EngineFactory) -> None:
    engine = await engine_factory(make_settings(), worker=False)
    resp = await engine.http.get("/v1/buyers/alice/points", headers=auth(SHOP_A_KEY))
    assert resp.status == 404 and (await resp.json())["code"] == "not_found"


async def test_grants_over_the_buyers_rate_are_429(engine_factory: EngineFactory) -> None:
    engine = await engine_factory(points_settings(points={"grants_per_minute": 1000}),
                                  worker=False)
    assert (await move(engine, "quick", 800))[0] == 201
    status, problem = await move(engine, "quick", 300)
    assert status == 429 and problem["code"] == "rate_limited"
    assert (await move(engine, "someone-else", 900))[0] == 201


def test_earned_points_follow_cash_tier_and_bonus() -> None:
    from engine.config.settings import EarnBonus, Points
    from engine.wallet.pricing import earned

    rules = Points(earn_per_unit=1, tier_multipliers=(1.0, 1.1, 1.3),
                   earn_bonus=(EarnBonus(over=10_000, percent=10),))
    assert earned(rules, 2000, 0) == 20  # 20.00 paid: 20 points
    assert earned(rules, 2000, 1) == 22  # tier 1: x1.1
    assert earned(rules, 2000, 9) == 26  # past the list: its last multiplier
    assert earned(rules, 20_000, 0) == 220  # over 100.00: +10 %
    assert earned(rules, 0, 0) == 0
    assert earned(Points(enabled=False), 2000, 0) == 0


async def test_expired_lots_leave_the_balance(engine: Engine, redis: Redis) -> None:
    from engine.clock import parse_rfc3339
    from engine.store import wallet_keys

    await move(engine, "late", 300, expires_at="2030-01-01T00:00:00Z")
    await move(engine, "late", 200, expires_at="2099-01-01T00:00:00Z")
    shard = wallet_keys.shard_of_wallet("shop-a", "late", 4)
    assert await ledger.expire_due(redis, shard, parse_rfc3339("2029-12-31T00:00:00Z")) == 0
    assert await ledger.expire_due(redis, shard, parse_rfc3339("2030-01-02T00:00:00Z")) == 300
    wallet = await wallet_of(engine, "late")
    assert wallet["balance"] == 200 and len(wallet["lots"]) == 1
    counts = await ledger.counters(redis, 4, "shop-a", "late")
    assert counts["expired"] == 300
    await assert_p1(redis, "shop-a", "late")
    history = await (await engine.http.get("/v1/buyers/late/points/history",
                                           headers=auth(SHOP_A_KEY))).json()
    assert history["entries"][0]["kind"] == "expire" and history["entries"][0]["points"] == 300


async def test_the_wallet_says_what_expires_soon(engine: Engine) -> None:
    from datetime import UTC, datetime, timedelta

    soon = (datetime.now(UTC) + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await move(engine, "reminded", 120, expires_at=soon)
    await move(engine, "reminded", 80, expires_at="2099-01-01T00:00:00Z")
    assert (await wallet_of(engine, "reminded"))["expiring"]["points"] == 120


async def test_redemptions_over_the_buyers_hourly_limit_are_429(
        engine_factory: EngineFactory) -> None:
    engine = await engine_factory(points_settings(points={"redemptions_per_hour": 2}),
                                  worker=False)
    await move(engine, "often", 5000)
    statuses = [(await engine.order(buyer="often", points=100, wait_ms=0))[0]
                for _ in range(3)]
    assert statuses == [202, 202, 429]
    assert (await engine.order(buyer="often", wait_ms=0))[0] == 202  # paying cash: no limit

"""Coupons: templates, issuance within per_buyer and total under any concurrency (K2), the
buyer's list, campaigns, revocation, and codes kept secret."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from engine.store import wallet_keys
from engine.wallet import coupons
from engine.wallet.coupon_reconcile import reconcile_coupons
from tests.conftest import (
    OPERATOR_KEY,
    SHOP_A_KEY,
    SHOP_B_KEY,
    VIEWER_KEY,
    Engine,
    EngineFactory,
    auth,
    make_settings,
    settings_dict,
)

TEMPLATES = [
    {"id": "new-user-5", "kind": "amount", "amount": 500, "per_buyer": 1},
    {"id": "ten-off", "kind": "percent", "percent": 10, "max_discount": 2000, "per_buyer": 3},
    {"id": "flash-50", "kind": "threshold", "amount": 1000, "min_spend": 5000, "total": 50,
     "per_buyer": 1},
    {"id": "many", "kind": "amount", "amount": 100, "per_buyer": 0},
]
PRICED = [{"id": "card-100", "max_qty": 10, "price": 1000}, {"id": "card-free"}]


def coupon_settings(**sections: Any) -> Any:
    return make_settings(**settings_dict(skus=PRICED, coupon_templates=TEMPLATES, **sections))


@pytest.fixture
async def engine(engine_factory: EngineFactory) -> Engine:
    return await engine_factory(coupon_settings(), worker=False)


async def issue(engine: Engine, buyer: str, template: str, key: str = SHOP_A_KEY,
                idempotency_key: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = auth(key)
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    resp = await engine.http.post(f"/v1/buyers/{buyer}/coupons", json={"template": template},
                                  headers=headers)
    return resp.status, await resp.json()


async def listed(engine: Engine, buyer: str, key: str = SHOP_A_KEY, **query: str
                 ) -> list[dict[str, Any]]:
    resp = await engine.http.get(f"/v1/buyers/{buyer}/coupons", params=query,
                                 headers=auth(key))
    assert resp.status == 200, await resp.text()
    found: list[dict[str, Any]] = (await resp.json())["coupons"]
    return found


async def test_a_coupon_is_issued_with_its_templates_terms(engine: Engine) -> None:
    status, coupon = await issue(engine, "alice", "ten-off")
    assert status == 201, coupon
    assert coupon["code"].startswith("CP") and len(coupon["code"]) == 30
    assert (coupon["template"], coupon["kind"], coupon["percent"], coupon["max_discount"],
            coupon["status"]) == ("ten-off", "percent", 10, 2000, "active")
    assert coupon["valid_until"] > coupon["valid_from"]
    [mine] = await listed(engine, "alice")
    assert mine == coupon
    assert await listed(engine, "alice", status="redeemed") == []
    assert await listed(engine, "alice", key=SHOP_B_KEY) == []  # another storefront's buyer


async def test_an_issue_replayed_with_its_key_issues_once(engine: Engine) -> None:
    answers = [await issue(engine, "replayer", "many", idempotency_key="k-1") for _ in range(3)]
    assert {s for s, _ in answers} == {201}
    assert len({a["code"] for _, a in answers}) == 1
    assert len(await listed(engine, "replayer")) == 1
    status, problem = await issue(engine, "replayer", "ten-off", idempotency_key="k-1")
    assert status == 409 and problem["code"] == "idempotency_conflict"


async def test_per_buyer_holds_under_concurrency(engine: Engine) -> None:
    answers = await asyncio.gather(*(issue(engine, "eager", "ten-off") for _ in range(40)))
    statuses = sorted(s for s, _ in answers)
    assert statuses.count(201) == 3 and statuses.count(409) == 37
    assert {a["code"] for s, a in answers if s == 409} == {"coupon_limit"}
    assert len(await listed(engine, "eager")) == 3


async def test_a_limited_campaign_is_never_over_issued(engine: Engine, redis: Redis) -> None:
    """K2: 300 buyers at once for 50 coupons: exactly 50 are issued, the rest 409."""
    answers = await asyncio.gather(*(issue(engine, f"crowd-{i}", "flash-50")
                                     for i in range(300)))
    issued = [a for s, a in answers if s == 201]
    assert len(issued) == 50 and len({a["code"] for a in issued}) == 50
    assert all(s == 409 and a["code"] == "coupon_limit" for s, a in answers if s != 201)
    assert int(await redis.get(wallet_keys.template_issued("flash-50"))) == 50
    assert (await reconcile_coupons(redis, engine.settings)).ok
    await redis.set(wallet_keys.template_issued("flash-50"), 51)  # as an over-issue would
    violations = (await reconcile_coupons(redis, engine.settings)).violations
    assert [v for v in violations if v.startswith("K2 template flash-50")], violations


async def test_bad_issues_are_4xx_and_write_nothing(engine: Engine, redis: Redis) -> None:
    for buyer, body, field in [("alice", {"template": "nope"}, "template"),
                               ("alice", {"template": ""}, "template"),
                               ("alice", {}, "template"),
                               ("alice", {"template": "many", "x": 1}, "x"),
                               ("a b", {"template": "many"}, "buyer")]:
        resp = await engine.http.post(f"/v1/buyers/{buyer}/coupons", json=body,
                                      headers=auth(SHOP_A_KEY))
        problem = await resp.json()
        assert resp.status == 422, problem
        assert field in str(problem), problem
    assert await listed(engine, "alice") == []
    resp = await engine.http.post("/v1/buyers/alice/coupons", json={"template": "many"})
    assert resp.status == 401


async def test_a_campaign_issues_once_per_buyer_and_is_audited(engine: Engine) -> None:
    body = {"storefront": "shop-a", "template": "new-user-5", "campaign": "launch-12",
            "buyers": ["c1", "c2", "c3", "c1", "bad buyer"]}
    resp = await engine.http.post("/admin/coupons/issue", json=body, headers=auth(OPERATOR_KEY))
    assert resp.status == 200 and await resp.json() == {"issued": 3, "already": 0,
                                                        "limited": 0, "invalid": 1}
    resp = await engine.http.post("/admin/coupons/issue", json=body, headers=auth(OPERATOR_KEY))
    assert await resp.json() == {"issued": 0, "already": 3, "limited": 0, "invalid": 1}
    body["campaign"] = "launch-13"  # another campaign, but per_buyer = 1
    resp = await engine.http.post("/admin/coupons/issue", json=body, headers=auth(OPERATOR_KEY))
    assert await resp.json() == {"issued": 0, "already": 0, "limited": 3, "invalid": 1}
    assert len(await listed(engine, "c1")) == 1
    resp = await engine.http.post("/admin/coupons/issue", json=body, headers=auth(VIEWER_KEY))
    assert resp.status == 403
    resp = await engine.http.get("/admin/audit", headers=auth(OPERATOR_KEY))
    actions = [e for e in (await resp.json())["events"] if e.get("action") == "coupons.issue"]
    assert [a["details"]["issued"] for a in actions] == [3, 0, 0]


async def test_an_unused_coupon_can_be_revoked(engine: Engine, redis: Redis) -> None:
    _, coupon = await issue(engine, "revoked", "many")
    code = coupon["code"]
    for _ in range(2):  # revoking a revoked coupon is no error
        resp = await engine.http.delete(f"/admin/coupons/{code}", headers=auth(OPERATOR_KEY))
        assert resp.status == 204
    [shown] = await listed(engine, "revoked")
    assert shown["status"] == "revoked"
    unknown = "CP0000" + "A" * 24
    resp = await engine.http.delete(f"/admin/coupons/{unknown}", headers=auth(OPERATOR_KEY))
    assert resp.status == 404
    resp = await engine.http.delete("/admin/coupons/not-a-code", headers=auth(OPERATOR_KEY))
    assert resp.status == 404
    _, other = await issue(engine, "revoked", "many")
    resp = await engine.http.delete(f"/admin/coupons/{other['code']}", headers=auth(SHOP_A_KEY))
    assert resp.status in (401, 403)
    shard = wallet_keys.shard_of_wallet("shop-a", "revoked", 4)
    key = wallet_keys.coupon(coupons.coupon_id(other["code"]), shard)
    await redis.hset(key, "st", "redeemed")  # a used coupon stays as it is
    resp = await engine.http.delete(f"/admin/coupons/{other['code']}", headers=auth(OPERATOR_KEY))
    assert resp.status == 409 and (await resp.json())["code"] == "coupon_not_active"


async def test_codes_are_unguessable_sealed_at_rest_and_never_logged(
        engine_factory: EngineFactory, redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    key = "A" * 43 + "="  # 32 bytes, base64
    engine = await engine_factory(coupon_settings(codes={
        "keys": {"k1": key}, "current": "k1",
        "fingerprint_key": "fingerprint-key-of-at-least-32-characters"}), worker=False)
    caplog.set_level(logging.DEBUG)
    codes = [(await issue(engine, "sealed", "many"))[1]["code"] for _ in range(20)]
    assert len(set(codes)) == 20
    shard = wallet_keys.shard_of_wallet("shop-a", "sealed", 4)
    everything = b""
    for found in await redis.keys("*"):
        kind = await redis.type(found)
        if kind == b"hash":
            everything += b"".join(k + v for k, v in (await redis.hgetall(found)).items())
        everything += found
    assert all(code.encode() not in everything for code in codes)
    assert all(code not in caplog.text for code in codes)
    shown = await listed(engine, "sealed")  # newest first (issued in one ms: any order)
    assert sorted(c["code"] for c in shown) == sorted(codes)
    assert [c["valid_from"] for c in shown] == sorted((c["valid_from"] for c in shown),
                                                       reverse=True)
    assert all(coupons.shard_of_code(c, 4) == shard for c in codes)


async def test_an_expired_coupon_recycles_its_points_once(engine_factory: EngineFactory,
                                                           redis: Redis) -> None:
    templates = [{"id": "recycle", "kind": "amount", "amount": 100, "valid_days": 1,
                  "recycle_points": 300, "per_buyer": 0}]
    settings = make_settings(**settings_dict(skus=PRICED, coupon_templates=templates,
                                             points={"per_unit": 100}))
    engine = await engine_factory(settings, worker=False)
    _, kept = await issue(engine, "frugal", "recycle")
    _, revoked = await issue(engine, "frugal", "recycle")
    await engine.http.delete(f"/admin/coupons/{revoked['code']}", headers=auth(OPERATOR_KEY))
    shard = wallet_keys.shard_of_wallet("shop-a", "frugal", 4)
    now = int(time.time() * 1000)
    assert await coupons.sweep(redis, settings, shard, now) == 0  # not due yet
    later = now + 2 * 86_400_000
    assert await coupons.sweep(redis, settings, shard, later) == 1
    assert await coupons.sweep(redis, settings, shard, later) == 0
    statuses = {c["code"]: c["status"] for c in await listed(engine, "frugal")}
    assert statuses == {kept["code"]: "expired", revoked["code"]: "revoked"}
    resp = await engine.http.get("/v1/buyers/frugal/points", headers=auth(SHOP_A_KEY))
    assert (await resp.json())["balance"] == 300  # the revoked coupon recycles nothing
    assert await redis.zcard(wallet_keys.coupons_expiring(shard)) == 0

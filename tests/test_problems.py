"""Every problem code the engine produces today, provoked over HTTP, checked against the contract.

API.md: errors are RFC 9457 `application/problem+json` with type/title/status/code/detail;
`errors` (with field names) only on validation problems; `order_id` when the problem concerns an
existing order. The last tests walk every code errors.py defines, each provoked over HTTP.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import ClientResponse
from redis.asyncio import Redis

from engine import config, errors
from engine.clock import now_ms
from engine.door.ingest import Ingest
from engine.http.placement import request_digest
from engine.store import keys, wallet_keys
from engine.store.embedded import RedisProcess, free_port
from engine.wallet import coupons, ledger
from engine.wire import OrderRequest
from engine.worker.settlement import GRACE_MS, Settlement
from tests.conftest import (
    ADMIN_KEY,
    OPERATOR_KEY,
    SHOP_A_KEY,
    SHOP_B_KEY,
    VIEWER_KEY,
    Engine,
    EngineFactory,
    auth,
    codes,
    make_settings,
    settings_dict,
)

PROBLEM_JSON = "application/problem+json"
UNKNOWN_ID = "o_0000ffffffffffffffff"
ORDER = {"sku": "card-100", "qty": 1, "buyer": "b1"}


async def problem_of(resp: ClientResponse, status: int, code: str, *,
                     field: str | None = None, order_id: str | None = None) -> dict[str, Any]:
    """Check one problem answer against the contract and return its body."""
    text = await resp.text()
    assert resp.status == status, text
    assert resp.headers["Content-Type"].split(";")[0].strip() == PROBLEM_JSON, resp.headers
    assert "Traceback" not in text
    body: dict[str, Any] = await resp.json(content_type=None)
    assert body["type"] == f"/problems/{code}"
    assert body["code"] == code
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if code in ("invalid_request", "coupon_invalid"):  # one entry per field (coupon)
        assert isinstance(body["errors"], list) and body["errors"], body
        for error in body["errors"]:
            assert set(error) == {"field", "message"}
            assert isinstance(error["message"], str) and error["message"]
        if field is not None:
            assert field in [e["field"] for e in body["errors"]], body
    else:
        assert "errors" not in body, body
    if order_id is not None:
        assert body["order_id"] == order_id, body
    else:
        assert "order_id" not in body, body
    return body


def json_headers(key: str = SHOP_A_KEY, **extra: str) -> dict[str, str]:
    return {**auth(key), "Content-Type": "application/json", **extra}


# -- 401 unauthenticated -------------------------------------------------------------------------
ROUTES = [
    ("POST", "/v1/orders"),
    ("POST", "/v1/orders/batch"),
    ("GET", f"/v1/orders/{UNKNOWN_ID}"),
    ("DELETE", f"/v1/orders/{UNKNOWN_ID}"),
    ("POST", f"/v1/orders/{UNKNOWN_ID}/confirm"),
    ("GET", "/admin/skus"),
    ("GET", "/admin/skus/card-100"),
    ("POST", "/admin/skus/card-100/stock"),
    ("DELETE", "/admin/skus/card-100/stock"),
]
BAD_AUTH = {
    "missing": {},
    "unknown key": auth("key-nobody"),
    "empty bearer": {"Authorization": "Bearer "},
    "basic scheme": {"Authorization": f"Basic {SHOP_A_KEY}"},
    "no scheme": {"Authorization": SHOP_A_KEY},
    "key hash as key": auth("5" * 64),
}


@pytest.mark.parametrize("how", list(BAD_AUTH))
async def test_unauthenticated_on_every_route(engine: Engine, how: str) -> None:
    for method, path in ROUTES:
        resp = await engine.http.request(method, path, json=ORDER, headers=BAD_AUTH[how])
        await problem_of(resp, 401, "unauthenticated")


async def test_unauthenticated_before_validation(engine: Engine) -> None:
    """A missing key is 401 even when the body is also bad (auth comes first)."""
    resp = await engine.http.post("/v1/orders", data=b"not json",
                                  headers={"Content-Type": "application/json"})
    await problem_of(resp, 401, "unauthenticated")


# -- 403 forbidden -------------------------------------------------------------------------------
async def test_storefront_key_on_admin_route_is_forbidden(engine: Engine) -> None:
    resp = await engine.http.get("/admin/skus", headers=auth(SHOP_A_KEY))
    await problem_of(resp, 403, "forbidden")
    resp = await engine.http.get("/admin/skus/card-100", headers=auth(SHOP_B_KEY))
    await problem_of(resp, 403, "forbidden")


async def test_viewer_key_may_not_import_stock(engine: Engine) -> None:
    resp = await engine.http.post(
        "/admin/skus/card-100/stock", data="V-1\nV-2", params={"lot": "l1"},
        headers={**auth(VIEWER_KEY), "Content-Type": "text/plain"},
    )
    body = await problem_of(resp, 403, "forbidden")
    assert "operator" in body["detail"]
    resp = await engine.http.delete("/admin/skus/card-100/stock", params={"lot": "l1"},
                                    headers=auth(VIEWER_KEY))
    await problem_of(resp, 403, "forbidden")
    levels = await (await engine.http.get("/admin/skus/card-100", headers=auth(VIEWER_KEY))).json()
    assert levels["available"] == 0 and levels["imported"] == 0


@pytest.mark.parametrize("key", [ADMIN_KEY, OPERATOR_KEY, VIEWER_KEY])
async def test_admin_keys_on_order_routes_are_forbidden(engine: Engine, key: str) -> None:
    resp = await engine.http.post("/v1/orders", json=ORDER, headers=auth(key))
    await problem_of(resp, 403, "forbidden")
    resp = await engine.http.post("/v1/orders/batch", json={"orders": [ORDER]}, headers=auth(key))
    await problem_of(resp, 403, "forbidden")
    resp = await engine.http.get(f"/v1/orders/{UNKNOWN_ID}", headers=auth(key))
    await problem_of(resp, 403, "forbidden")


# -- 404 not_found -------------------------------------------------------------------------------
MALFORMED_IDS = ["nonsense", "o_", "o_zzzz0000000000000000", "o_0000ffffffffffffffffff",
                 "O_0000FFFFFFFFFFFFFFFF", "o_-0010000000000000000", "%E2%9C%93",
                 "o_0000ffff ffffffffff"]


@pytest.mark.parametrize("order_id", [UNKNOWN_ID, *MALFORMED_IDS])
async def test_unknown_or_malformed_order_id_is_not_found(engine: Engine, order_id: str) -> None:
    path = f"/v1/orders/{order_id}"
    for resp in (await engine.http.get(path, headers=auth(SHOP_A_KEY)),
                 await engine.http.delete(path, headers=auth(SHOP_A_KEY)),
                 await engine.http.post(f"{path}/confirm", headers=auth(SHOP_A_KEY))):
        await problem_of(resp, 404, "not_found")


async def test_foreign_order_is_not_found_exactly_like_unknown(engine: Engine) -> None:
    await engine.import_codes("card-100", codes("N", 2))
    status, order = await engine.order(key=SHOP_A_KEY, hold_s=60)
    assert status == 201, order
    foreign_id = order["order_id"]
    answers = []
    for order_id in (foreign_id, UNKNOWN_ID):
        path = f"/v1/orders/{order_id}"
        for resp in (await engine.http.get(path, headers=auth(SHOP_B_KEY)),
                     await engine.http.post(f"{path}/confirm", headers=auth(SHOP_B_KEY)),
                     await engine.http.delete(path, headers=auth(SHOP_B_KEY))):
            body = await problem_of(resp, 404, "not_found")
            answers.append({**body, "detail": body["detail"].replace(order_id, "<id>")})
    assert answers[:3] == answers[3:]
    # shop-b's attempts changed nothing: the order is still held by shop-a
    resp = await engine.http.get(f"/v1/orders/{foreign_id}", headers=auth(SHOP_A_KEY))
    assert resp.status == 200 and (await resp.json())["status"] == "held"


@pytest.mark.parametrize("path", ["/nope", "/v1", "/v1/nope", "/admin", "/admin/nope",
                                  "/v1/orders/o_0000ffffffffffffffff/nope", "/V1/orders"])
async def test_unknown_route_is_problem_json_404(engine: Engine, path: str) -> None:
    for method in ("GET", "POST"):
        resp = await engine.http.request(method, path, headers=auth(SHOP_A_KEY))
        await problem_of(resp, 404, "not_found")


# -- 404 unknown_sku -----------------------------------------------------------------------------
async def test_unknown_sku(engine: Engine) -> None:
    status, body = await engine.order(sku="no-such-sku")
    assert status == 404 and body["code"] == "unknown_sku", body
    resp = await engine.http.post("/v1/orders", json={**ORDER, "sku": "no-such-sku"},
                                  headers=auth(SHOP_A_KEY))
    await problem_of(resp, 404, "unknown_sku")
    resp = await engine.http.get("/admin/skus/no-such-sku", headers=auth(VIEWER_KEY))
    await problem_of(resp, 404, "unknown_sku")
    resp = await engine.http.post("/admin/skus/no-such-sku/stock", data="U-1",
                                  headers={**auth(OPERATOR_KEY), "Content-Type": "text/plain"})
    await problem_of(resp, 404, "unknown_sku")


# -- 422 invalid_request -------------------------------------------------------------------------
INVALID_ORDERS: dict[str, tuple[dict[str, Any], str]] = {
    "qty zero": ({**ORDER, "qty": 0}, "qty"),
    "qty over max_qty": ({**ORDER, "qty": 11}, "qty"),
    "qty over the SKU's own max_qty": ({**ORDER, "sku": "card-limited", "qty": 6}, "qty"),
    "qty a string": ({**ORDER, "qty": "1"}, "qty"),
    "buyer missing": ({"sku": "card-100", "qty": 1}, "buyer"),
    "sku missing": ({"qty": 1, "buyer": "b"}, "sku"),
    "buyer empty": ({**ORDER, "buyer": ""}, "buyer"),
    "buyer too long": ({**ORDER, "buyer": "b" * 129}, "buyer"),
    "sku pattern": ({**ORDER, "sku": "-card"}, "sku"),
    "unknown field": ({**ORDER, "colour": "red"}, "colour"),
    "engine-owned order_id": ({**ORDER, "order_id": "o_0000ffffffffffffffff"}, "order_id"),
    "engine-owned status": ({**ORDER, "status": "fulfilled"}, "status"),
    "engine-owned codes": ({**ORDER, "codes": ["FREE"]}, "codes"),
    "engine-owned storefront": ({**ORDER, "storefront": "shop-b"}, "storefront"),
    "bad buyer_ip": ({**ORDER, "buyer_ip": "999.1.1.1"}, "buyer_ip"),
    "tier out of range": ({**ORDER, "tier": 10}, "tier"),
    "wait_ms out of range": ({**ORDER, "wait_ms": 10001}, "wait_ms"),
    "hold_s over max_hold_s": ({**ORDER, "hold_s": 901}, "hold_s"),
    "notify_url not http": ({**ORDER, "notify_url": "ftp://example.com/x"}, "notify_url"),
    "metadata not strings": ({**ORDER, "metadata": {"a": 1}}, "metadata"),
    "metadata over 2 KiB": ({**ORDER, "metadata": {f"k{i}": "v" * 200 for i in range(12)}},
                            "metadata"),
}


@pytest.mark.parametrize("case", list(INVALID_ORDERS))
async def test_invalid_request_names_the_field(engine: Engine, case: str) -> None:
    body, field = INVALID_ORDERS[case]
    resp = await engine.http.post("/v1/orders", json=body, headers=auth(SHOP_A_KEY))
    problem = await problem_of(resp, 422, "invalid_request")
    fields = [e["field"] for e in problem["errors"]]
    assert any(f == field or f.startswith(f"{field}.") or f.startswith(f"{field}[")
               for f in fields), problem


async def test_invalid_json_body(engine: Engine) -> None:
    resp = await engine.http.post("/v1/orders", data=b'{"sku": "card-100", "qty": ',
                                  headers=json_headers())
    await problem_of(resp, 422, "invalid_request", field="body")
    resp = await engine.http.post("/v1/orders", data=b"", headers=json_headers())
    await problem_of(resp, 422, "invalid_request", field="body")


async def test_bad_idempotency_key_header(engine: Engine) -> None:
    for key in ("a" * 129, "with space", "ключ"):
        resp = await engine.http.post("/v1/orders", json=ORDER,
                                      headers={**auth(SHOP_A_KEY), "Idempotency-Key": key})
        await problem_of(resp, 422, "invalid_request", field="Idempotency-Key")


async def test_batch_validation_names_the_item(engine: Engine) -> None:
    batch = {"orders": [ORDER, {**ORDER, "qty": "two"}]}
    resp = await engine.http.post("/v1/orders/batch", json=batch, headers=auth(SHOP_A_KEY))
    await problem_of(resp, 422, "invalid_request", field="orders[1].qty")
    resp = await engine.http.post("/v1/orders/batch", json={"orders": []},
                                  headers=auth(SHOP_A_KEY))
    await problem_of(resp, 422, "invalid_request", field="orders")
    batch = {"orders": [{**ORDER, "order_id": "o_0000ffffffffffffffff"}]}
    resp = await engine.http.post("/v1/orders/batch", json=batch, headers=auth(SHOP_A_KEY))
    await problem_of(resp, 422, "invalid_request", field="orders[0].order_id")


async def test_batch_item_problems_are_inline_problems(engine: Engine) -> None:
    """Items that decode but fail the SKU checks answer inline, each a full problem document."""
    batch = {"orders": [{**ORDER, "sku": "no-such-sku"}, {**ORDER, "qty": 11},
                        {**ORDER, "buyer_ip": "nope"}]}
    resp = await engine.http.post("/v1/orders/batch", json=batch, headers=auth(SHOP_A_KEY))
    assert resp.status == 200
    results = (await resp.json())["results"]
    assert [r["code"] for r in results] == ["unknown_sku", "invalid_request", "invalid_request"]
    assert results[0]["status"] == 404 and results[0]["type"] == "/problems/unknown_sku"
    assert results[1]["errors"][0]["field"] == "orders[1].qty"
    assert results[2]["errors"][0]["field"] == "orders[2].buyer_ip"


async def test_stock_import_bad_lot_and_expiry(engine: Engine) -> None:
    headers = {**auth(OPERATOR_KEY), "Content-Type": "text/plain"}
    resp = await engine.http.post("/admin/skus/card-100/stock", data="X-1",
                                  params={"lot": "bad lot"}, headers=headers)
    await problem_of(resp, 422, "invalid_request", field="lot")
    resp = await engine.http.post("/admin/skus/card-100/stock", data="X-1",
                                  params={"lot": "l1", "expires_at": "tomorrow"}, headers=headers)
    await problem_of(resp, 422, "invalid_request", field="expires_at")
    resp = await engine.http.delete("/admin/skus/card-100/stock", headers=auth(OPERATOR_KEY))
    await problem_of(resp, 422, "invalid_request", field="lot")


# -- 409 -----------------------------------------------------------------------------------------
async def test_idempotency_conflict_names_the_order(engine: Engine) -> None:
    await engine.import_codes("card-100", codes("IC", 3))
    status, first = await engine.order(idempotency_key="same-key", qty=1)
    assert status == 201, first
    resp = await engine.http.post("/v1/orders", json={**ORDER, "qty": 2},
                                  headers={**auth(SHOP_A_KEY), "Idempotency-Key": "same-key"})
    await problem_of(resp, 409, "idempotency_conflict", order_id=first["order_id"])


async def test_sold_out_on_reject_sku_names_the_order(engine: Engine) -> None:
    resp = await engine.http.post("/v1/orders", json={**ORDER, "sku": "card-reject"},
                                  headers=auth(SHOP_A_KEY))
    body = await _with_order_id(resp, 409, "sold_out")
    get = await engine.http.get(f"/v1/orders/{body['order_id']}", headers=auth(SHOP_A_KEY))
    assert get.status == 200 and (await get.json())["status"] == "rejected"


async def _with_order_id(resp: ClientResponse, status: int, code: str) -> dict[str, Any]:
    body: dict[str, Any] = await resp.json(content_type=None)
    assert isinstance(body.get("order_id"), str) and body["order_id"].startswith("o_"), body
    return await problem_of(resp, status, code, order_id=body["order_id"])


async def test_limit_exceeded_names_the_order(engine: Engine) -> None:
    await engine.import_codes("card-limited", codes("LE", 10))
    status, _ = await engine.order(sku="card-limited", qty=3, buyer="greedy")
    assert status == 201
    resp = await engine.http.post("/v1/orders", json={**ORDER, "sku": "card-limited",
                                                      "buyer": "greedy"},
                                  headers=auth(SHOP_A_KEY))
    await _with_order_id(resp, 409, "limit_exceeded")


async def test_not_held_after_cancel(engine: Engine) -> None:
    await engine.import_codes("card-100", codes("NH", 2))
    status, held = await engine.order(hold_s=60)
    assert status == 201 and held["status"] == "held"
    resp = await engine.http.delete(f"/v1/orders/{held['order_id']}", headers=auth(SHOP_A_KEY))
    assert resp.status == 200
    resp = await engine.http.post(f"/v1/orders/{held['order_id']}/confirm",
                                  headers=auth(SHOP_A_KEY))
    await problem_of(resp, 409, "not_held", order_id=held["order_id"])


async def test_not_held_for_queued_and_rejected(engine: Engine) -> None:
    status, queued = await engine.order()
    assert status == 202 and queued["status"] == "queued"
    resp = await engine.http.post(f"/v1/orders/{queued['order_id']}/confirm",
                                  headers=auth(SHOP_A_KEY))
    await problem_of(resp, 409, "not_held", order_id=queued["order_id"])
    resp = await engine.http.post("/v1/orders", json={**ORDER, "sku": "card-reject"},
                                  headers=auth(SHOP_A_KEY))
    rejected = await _with_order_id(resp, 409, "sold_out")
    resp = await engine.http.post(f"/v1/orders/{rejected['order_id']}/confirm",
                                  headers=auth(SHOP_A_KEY))
    await problem_of(resp, 409, "not_held", order_id=rejected["order_id"])


async def test_not_held_for_fulfilled(engine: Engine) -> None:
    """API.md: confirm answers 409 not_held when the order is not held (… fulfilled)."""
    await engine.import_codes("card-100", codes("NF", 2))
    status, fulfilled = await engine.order()
    assert status == 201 and fulfilled["status"] == "fulfilled"
    resp = await engine.http.post(f"/v1/orders/{fulfilled['order_id']}/confirm",
                                  headers=auth(SHOP_A_KEY))
    await problem_of(resp, 409, "not_held", order_id=fulfilled["order_id"])


async def test_not_cancellable(engine: Engine) -> None:
    await engine.import_codes("card-100", codes("NC", 1))
    status, fulfilled = await engine.order()
    assert status == 201
    resp = await engine.http.delete(f"/v1/orders/{fulfilled['order_id']}",
                                    headers=auth(SHOP_A_KEY))
    await problem_of(resp, 409, "not_cancellable", order_id=fulfilled["order_id"])
    # still fulfilled, codes still shown
    resp = await engine.http.get(f"/v1/orders/{fulfilled['order_id']}", headers=auth(SHOP_A_KEY))
    again = await resp.json()
    assert again["status"] == "fulfilled" and again["codes"] == fulfilled["codes"]


async def test_rejected_order_is_not_cancellable(engine: Engine) -> None:
    resp = await engine.http.post("/v1/orders", json={**ORDER, "sku": "card-reject"},
                                  headers=auth(SHOP_A_KEY))
    rejected = await _with_order_id(resp, 409, "sold_out")
    resp = await engine.http.delete(f"/v1/orders/{rejected['order_id']}",
                                    headers=auth(SHOP_A_KEY))
    await problem_of(resp, 409, "not_cancellable", order_id=rejected["order_id"])


# -- 413, 415, 405 -------------------------------------------------------------------------------
async def test_payload_too_large_default_64_kib(engine: Engine) -> None:
    big = {**ORDER, "metadata": {"pad": "x" * (64 * 1024)}}
    resp = await engine.http.post("/v1/orders", json=big, headers=auth(SHOP_A_KEY))
    await problem_of(resp, 413, "payload_too_large")
    resp = await engine.http.post("/v1/orders/batch", json={"orders": [big]},
                                  headers=auth(SHOP_A_KEY))
    await problem_of(resp, 413, "payload_too_large")
    # just under the limit is read (and then rejected for what it says, not for its size)
    under = b'{"sku":"card-100","qty":1,"buyer":"b","x":"' + b"y" * (60 * 1024) + b'"}'
    resp = await engine.http.post("/v1/orders", data=under, headers=json_headers())
    await problem_of(resp, 422, "invalid_request", field="x")


async def test_payload_too_large_follows_config(engine_factory: EngineFactory) -> None:
    engine = await engine_factory(make_settings(server={"max_body_bytes": 2048}))
    body = {**ORDER, "buyer": "b", "metadata": {"pad": "x" * 3000}}
    resp = await engine.http.post("/v1/orders", json=body, headers=auth(SHOP_A_KEY))
    await problem_of(resp, 413, "payload_too_large")


@pytest.mark.parametrize("ctype", ["text/html", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "application/xml",
                                   "image/png"])
async def test_unsupported_media_type_on_orders(engine: Engine, ctype: str) -> None:
    for path in ("/v1/orders", "/v1/orders/batch"):
        resp = await engine.http.post(path, data=b'{"sku":"card-100","qty":1,"buyer":"b"}',
                                      headers={**auth(SHOP_A_KEY), "Content-Type": ctype})
        await problem_of(resp, 415, "unsupported_media_type")


async def test_unsupported_media_type_on_stock_import(engine: Engine) -> None:
    resp = await engine.http.post("/admin/skus/card-100/stock", json=["A-1"],
                                  headers=auth(OPERATOR_KEY))
    await problem_of(resp, 415, "unsupported_media_type")


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", "/v1/orders"), ("GET", "/v1/orders"), ("DELETE", "/v1/orders"),
    ("PATCH", "/v1/orders"), ("PUT", "/v1/orders/batch"), ("PUT", f"/v1/orders/{UNKNOWN_ID}"),
    ("PATCH", f"/v1/orders/{UNKNOWN_ID}"), ("GET", f"/v1/orders/{UNKNOWN_ID}/confirm"),
    ("POST", "/admin/skus"), ("PUT", "/admin/skus/card-100/stock"), ("POST", "/healthz"),
    ("DELETE", "/openapi.json"),
])
async def test_method_not_allowed(engine: Engine, method: str, path: str) -> None:
    resp = await engine.http.request(method, path, json=ORDER, headers=auth(SHOP_A_KEY))
    await problem_of(resp, 405, "method_not_allowed")


# -- every code of errors.py, provoked over HTTP ---------------------------------------------------
# One recipe per problem code the engine can answer: each runs against a real engine (and Redis)
# and returns the answer that must carry that code. The first test fails when errors.py gains a
# code without a recipe here.
Provoke = Callable[[EngineFactory, Redis, Path], Awaitable[ClientResponse]]
PROVOKE: dict[str, Provoke] = {}
WITH_ORDER_ID = {"sold_out", "limit_exceeded", "idempotency_conflict", "not_held",
                 "not_cancellable", "not_in_review", "order_abandoned", "recalled"}


def provokes(code: str) -> Callable[[Provoke], Provoke]:
    def register(recipe: Provoke) -> Provoke:
        PROVOKE[code] = recipe
        return recipe
    return register


def _post(engine: Engine, body: dict[str, Any], key: str = SHOP_A_KEY,
          **headers: str) -> Awaitable[ClientResponse]:
    return engine.http.post("/v1/orders", json=body, headers={**auth(key), **headers})


@provokes("invalid_request")
async def _invalid(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    return await _post(await make(worker=False), {**ORDER, "qty": 0})


@provokes("unauthenticated")
async def _unauthenticated(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    return await _post(await make(worker=False), ORDER, key="key-nobody")


@provokes("forbidden")
async def _forbidden(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    return await (await make(worker=False)).http.get("/admin/skus", headers=auth(SHOP_A_KEY))


@provokes("blocked")
async def _blocked(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    engine = await make(make_settings(blocklist={"buyers": ["mallory"]}), worker=False)
    return await _post(engine, {**ORDER, "buyer": "mallory"})


@provokes("not_found")
async def _not_found(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    return await (await make(worker=False)).http.get(f"/v1/orders/{UNKNOWN_ID}",
                                                     headers=auth(SHOP_A_KEY))


@provokes("unknown_sku")
async def _unknown_sku(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    return await _post(await make(worker=False), {**ORDER, "sku": "no-such-sku"})


@provokes("method_not_allowed")
async def _method(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    return await (await make(worker=False)).http.put("/v1/orders", json=ORDER,
                                                     headers=auth(SHOP_A_KEY))


@provokes("sold_out")
async def _sold_out(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    return await _post(await make(), {**ORDER, "sku": "card-reject"})


@provokes("limit_exceeded")
async def _limit(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    engine = await make()
    await engine.import_codes("card-limited", codes("WLE", 5))
    assert (await engine.order(sku="card-limited", qty=3, buyer="greedy"))[0] == 201
    return await _post(engine, {**ORDER, "sku": "card-limited", "buyer": "greedy"})


@provokes("idempotency_conflict")
async def _conflict(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    engine = await make()
    await engine.import_codes("card-100", codes("WIC", 3))
    assert (await engine.order(idempotency_key="walk-key"))[0] == 201
    return await _post(engine, {**ORDER, "qty": 2}, **{"Idempotency-Key": "walk-key"})


async def _queued(make: EngineFactory) -> tuple[Engine, str]:
    """An engine with one order waiting for stock (neither held nor in review)."""
    engine = await make()
    status, queued = await engine.order()
    assert status == 202 and queued["queue"]["reason"] == "sold_out"
    return engine, queued["order_id"]


@provokes("not_held")
async def _not_held(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    engine, order_id = await _queued(make)
    return await engine.http.post(f"/v1/orders/{order_id}/confirm", headers=auth(SHOP_A_KEY))


@provokes("lot_voided")
async def _lot_voided(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    engine = await make(worker=False)
    await engine.import_codes("card-100", codes("WLV", 2), lot="recalled")
    voided = await engine.http.delete("/admin/skus/card-100/stock", params={"lot": "recalled"},
                                      headers=auth(OPERATOR_KEY))
    assert voided.status == 200
    return await engine.http.post("/admin/skus/card-100/stock", data="WLV-NEW",
                                  params={"lot": "recalled"},
                                  headers={**auth(OPERATOR_KEY), "Content-Type": "text/plain"})


@provokes("not_in_review")
async def _not_in_review(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    engine, order_id = await _queued(make)
    return await engine.http.post(f"/admin/review/{order_id}", json={"decision": "approve"},
                                  headers=auth(OPERATOR_KEY))


@provokes("not_cancellable")
async def _not_cancellable(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    engine = await make()
    await engine.import_codes("card-100", codes("WNC", 1))
    status, fulfilled = await engine.order()
    assert status == 201
    return await engine.http.delete(f"/v1/orders/{fulfilled['order_id']}",
                                    headers=auth(SHOP_A_KEY))


class _Stalled:
    """A request whose body never finishes arriving, read back as the answer."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self._body = status, body
        self.headers = {"Content-Type": PROBLEM_JSON}

    async def text(self) -> str:
        return self._body.decode()

    async def json(self, content_type: str | None = None) -> Any:
        return json.loads(self._body)


@provokes("request_timeout")
async def _timeout(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    engine = await make(make_settings(server={"body_timeout_s": 0.5}), worker=False)
    server = engine.http.server
    reader, writer = await asyncio.open_connection(str(server.host), int(server.port or 0))
    writer.write(f"POST /v1/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SHOP_A_KEY}"
                 "\r\nContent-Type: application/json\r\nContent-Length: 200\r\n"
                 "Connection: close\r\n\r\n".encode() + b'{"sku": ')
    await writer.drain()
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        body = await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()
    assert b"application/problem+json" in head, head
    return _Stalled(int(head.split()[1]), body)  # type: ignore[return-value]


@provokes("payload_too_large")
async def _too_large(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    engine = await make(make_settings(server={"max_body_bytes": 1024}), worker=False)
    return await _post(engine, {**ORDER, "metadata": {"pad": "x" * 2000}})


@provokes("unsupported_media_type")
async def _media_type(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    return await (await make(worker=False)).http.post(
        "/v1/orders", data=b"<order/>",
        headers={**auth(SHOP_A_KEY), "Content-Type": "application/xml"})


@provokes("rate_limited")
async def _rate_limited(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    engine = await make(make_settings(limits={"per_buyer": {"rate": 0.01, "burst": 1}}))
    await engine.import_codes("card-100", codes("WRL", 2))
    assert (await engine.order(buyer="eager"))[0] == 201
    return await _post(engine, {**ORDER, "buyer": "eager"})


@provokes("internal")
async def _internal(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    """A record the store holds but nobody can read (not a client's doing): 500, as a problem
    document, without a traceback."""
    engine = await make(worker=False)
    order_id = keys.new_order_id(0)
    await redis.hset(keys.order(order_id, 0), mapping={"r": b"\xc1 not msgpack", "st": "held"})
    return await engine.http.get(f"/v1/orders/{order_id}", headers=auth(SHOP_A_KEY))


@provokes("unavailable")
async def _unavailable(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    server = RedisProcess(tmp / "redis", port=free_port())
    server.start()
    raw = settings_dict(redis={"url": server.url, "shards": 1})
    engine = Engine(config.from_mapping(raw, environ={}), server.url)
    await engine.start(worker=False)
    try:
        server.stop()
        resp = await _post(engine, {**ORDER, "wait_ms": 0})
        await resp.read()
        return resp
    finally:
        await engine.close()


@provokes("maintenance")
async def _maintenance(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    engine = await make(worker=False)
    closed = await engine.http.put("/admin/maintenance", json={"mode": "read_only"},
                                   headers=auth(OPERATOR_KEY))
    assert closed.status == 200
    return await _post(engine, ORDER)


@provokes("paused")
async def _paused(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    engine = await make(worker=False)
    paused = await engine.http.post("/admin/pause", json={"scope": "sku:card-100",
                                                          "action": "reject"},
                                    headers=auth(OPERATOR_KEY))
    assert paused.status == 200
    return await _post(engine, ORDER)


def _priced() -> config.Settings:
    raw = settings_dict(points={"grants_per_minute": 0},
                        skus=[{"id": "card-100", "price": 1000}, {"id": "card-free"}])
    return config.from_mapping(raw, environ={})


@provokes("insufficient_points")
async def _insufficient(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    engine = await make(_priced(), worker=False)
    return await _post(engine, {**ORDER, "points": 500})  # an empty wallet


@provokes("not_priced")
async def _not_priced(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    engine = await make(_priced(), worker=False)
    return await _post(engine, {**ORDER, "sku": "card-free", "points": 500})


@provokes("order_abandoned")
async def _abandoned(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    """A door reserved the key and the points, then died; the sweep fenced the order id and
    gave the points back; the buyer retries with the same key."""
    engine = await make(_priced(), worker=False)
    shards, body = engine.settings.redis.shards, {**ORDER, "points": 500}
    order_id = keys.new_order_id(keys.shard_of_sku("card-100", shards))
    digest = request_digest(msgspec.convert(body, OrderRequest))
    await Ingest(redis, shards).reserve_key("shop-a", "gone", order_id, digest)
    await ledger.move(redis, shards, "shop-a", "b1", 500, "grant", "test", 0, now_ms())
    await ledger.reserve(redis, shards, "shop-a", "b1", order_id, 500, now_ms())
    wallet_shard = ledger.wallet_keys("shop-a", "b1", shards)[0]
    await Settlement(engine.settings, redis, "w").sweep(wallet_shard, now_ms() + GRACE_MS + 1)
    return await _post(engine, body, **{"Idempotency-Key": "gone"})


@provokes("recalled")
async def _recalled(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    """The held codes' lot was recalled and the SKU has no others: confirm cancels it."""
    engine = await make(config.from_mapping(settings_dict(), environ={}))
    await engine.import_codes("card-100", codes("RCL", 1), lot="recalled")
    _, held = await engine.order(hold_s=60)
    await engine.http.delete("/admin/skus/card-100/stock", params={"lot": "recalled"},
                             headers=auth(OPERATOR_KEY))
    return await engine.http.post(f"/v1/orders/{held['order_id']}/confirm",
                                  headers=auth(SHOP_A_KEY))


def _with_templates() -> config.Settings:
    raw = settings_dict(coupon_templates=[
        {"id": "once", "kind": "amount", "amount": 100, "per_buyer": 1}])
    return config.from_mapping(raw, environ={})


@provokes("coupon_limit")
async def _coupon_limit(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    engine = await make(_with_templates(), worker=False)
    for _ in range(2):  # per_buyer = 1: the second is over it
        resp = await engine.http.post("/v1/buyers/b1/coupons", json={"template": "once"},
                                      headers=auth(SHOP_A_KEY))
    return resp


@provokes("coupon_not_active")
async def _coupon_not_active(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    """A coupon already used by an order cannot be revoked."""
    engine = await make(_with_templates(), worker=False)
    resp = await engine.http.post("/v1/buyers/b1/coupons", json={"template": "once"},
                                  headers=auth(SHOP_A_KEY))
    code = (await resp.json())["code"]
    shard = wallet_keys.shard_of_wallet("shop-a", "b1", engine.settings.redis.shards)
    await redis.hset(wallet_keys.coupon(coupons.coupon_id(code), shard), "st", "redeemed")
    return await engine.http.delete(f"/admin/coupons/{code}", headers=auth(OPERATOR_KEY))


@provokes("coupon_invalid")
async def _coupon_invalid(make: EngineFactory, redis: Redis, tmp: Path) -> ClientResponse:
    """Another buyer's coupon."""
    raw = settings_dict(skus=[{"id": "card-100", "price": 1000}], coupon_templates=[
        {"id": "once", "kind": "amount", "amount": 100}])
    engine = await make(config.from_mapping(raw, environ={}), worker=False)
    resp = await engine.http.post("/v1/buyers/someone/coupons", json={"template": "once"},
                                  headers=auth(SHOP_A_KEY))
    return await _post(engine, {**ORDER, "coupons": [(await resp.json())["code"]]})


def test_every_problem_code_has_a_recipe() -> None:
    defined = {value for value in vars(errors).values() if isinstance(value, type)
               and issubclass(value, errors.Problem) and value is not errors.Problem}
    assert defined == set(errors.ALL)
    assert {p.code for p in errors.ALL} == set(PROVOKE)


@pytest.mark.parametrize("problem", errors.ALL, ids=lambda p: p.code)
async def test_every_problem_code_over_http(problem: type[errors.Problem],
                                            engine_factory: EngineFactory, redis: Redis,
                                            tmp_path: Path) -> None:
    resp = await PROVOKE[problem.code](engine_factory, redis, tmp_path)
    body = await resp.json(content_type=None)
    order_id = body.get("order_id") if problem.code in WITH_ORDER_ID else None
    if problem.code in WITH_ORDER_ID:
        assert isinstance(order_id, str) and order_id.startswith("o_"), body
    await problem_of(resp, problem.status, problem.code, order_id=order_id)

"""Signed storefront requests: HMAC over the request within ±300 s, each nonce once; a
storefront may be made to sign; keys of one kind never open the other kind's routes."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from redis.asyncio import Redis

from engine.http.signing import SIGNATURE, sign
from tests.conftest import (
    ADMIN_KEY,
    SHOP_A_KEY,
    SHOP_B_KEY,
    EngineFactory,
    auth,
    codes,
    make_settings,
    settings_dict,
)

SECRET = "shop-a-signing-secret-of-32-characters"


def _settings(require: bool = False) -> Any:
    raw = settings_dict()
    raw["storefronts"][0] = {**raw["storefronts"][0], "signing_secret": SECRET,
                             "require_signature": require}
    return make_settings(storefronts=raw["storefronts"])


def _signed(body: dict[str, Any], t: int | None = None, nonce: str | None = None,
            secret: str = SECRET, path: str = "/v1/orders") -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    stamp = str(int(time.time()) if t is None else t)
    value = sign(secret, stamp, nonce or secrets.token_hex(16), "POST", path, raw)
    return raw, {"Kamigate-Storefront": "shop-a", SIGNATURE: value,
                 "Content-Type": "application/json"}


async def test_a_signed_request_is_accepted_once(engine_factory: EngineFactory,
                                                 redis: Redis) -> None:
    engine = await engine_factory(_settings())
    await engine.import_codes("card-100", codes("SG", 2))
    body, headers = _signed({"sku": "card-100", "qty": 1, "buyer": "s1"})
    resp = await engine.http.post("/v1/orders", data=body, headers=headers)
    assert resp.status == 201, await resp.text()
    replay = await engine.http.post("/v1/orders", data=body, headers=headers)
    problem = await replay.json()
    assert replay.status == 401 and "replay" in problem["detail"]


async def test_bad_signatures_are_refused(engine_factory: EngineFactory) -> None:
    engine = await engine_factory(_settings())
    order = {"sku": "card-100", "qty": 1, "buyer": "s2"}
    cases = [
        _signed(order, t=int(time.time()) - 301),  # too old
        _signed(order, t=int(time.time()) + 301),  # from the future
        _signed(order, secret="not-the-secret"),
        _signed(order, path="/v1/orders/batch"),  # signed for another route
    ]
    body, headers = _signed(order)
    cases.append((body.replace(b"s2", b"s3"), headers))  # body changed after signing
    cases.append((body, {**headers, SIGNATURE: "t=1,n=short,v1=00"}))
    cases.append((body, {**headers, "Kamigate-Storefront": "shop-b"}))  # no secret there
    for raw, hdrs in cases:
        resp = await engine.http.post("/v1/orders", data=raw, headers=hdrs)
        assert resp.status == 401, (hdrs, await resp.text())
        assert (await resp.json())["code"] == "unauthenticated"


async def test_require_signature_refuses_the_bearer_key_alone(
        engine_factory: EngineFactory) -> None:
    engine = await engine_factory(_settings(require=True))
    await engine.import_codes("card-100", codes("SR", 2))
    status, problem = await engine.order(key=SHOP_A_KEY)
    assert status == 401 and "sign" in problem["detail"]
    status, _ = await engine.order(key=SHOP_B_KEY)  # another storefront, bearer is fine
    assert status == 201
    body, headers = _signed({"sku": "card-100", "qty": 1, "buyer": "s4"})
    assert (await engine.http.post("/v1/orders", data=body, headers=headers)).status == 201


async def test_admin_and_storefront_keys_never_cross(engine_factory: EngineFactory) -> None:
    engine = await engine_factory(_settings())
    status, _ = await engine.order(key=ADMIN_KEY)
    assert status == 403
    resp = await engine.http.get("/admin/skus", headers=auth(SHOP_A_KEY))
    assert resp.status == 403
    resp = await engine.http.put("/admin/config", data="x", headers=auth(SHOP_A_KEY))
    assert resp.status == 403

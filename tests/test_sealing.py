"""Codes sealed at rest (AES-256-GCM, bound to SKU and lot), opened only in the Order object;
key rotation reseals the stock online; codes never reach the logs."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import pytest
from redis.asyncio import Redis

from engine import config
from engine.config.directory import Directory
from engine.stock.reconcile import reconcile
from engine.stock.rotate import rotate
from engine.store import keys
from engine.store.sealing import PLAIN, Sealer, SealError, decode_key
from tests.conftest import (
    ADMIN_KEY,
    EngineFactory,
    auth,
    codes,
    eventually,
    make_settings,
    post_many,
)

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 32).decode()
FINGERPRINT = "fingerprint-key-0123456789"


def _sealed(current: str = "k1", **extra: str) -> Any:
    return make_settings(redis={"shards": 1}, codes={
        "keys": {"k1": K1, **extra}, "current": current, "fingerprint_key": FINGERPRINT})


def test_seal_and_open_are_bound_to_sku_and_lot() -> None:
    sealer = Sealer({"k1": decode_key(K1)}, "k1", b"f" * 16)
    token = sealer.seal("card-100", "lot1", "SECRET-CODE")
    assert "SECRET-CODE" not in token and token.startswith("~k1$lot1$")
    assert sealer.open("card-100", token) == "SECRET-CODE"
    with pytest.raises(SealError):
        sealer.open("card-200", token)  # moved to another SKU
    with pytest.raises(SealError):
        sealer.open("card-100", token.replace("$lot1$", "$lot2$"))  # its lot relabelled
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(SealError):
        sealer.open("card-100", tampered)
    with pytest.raises(SealError):
        Sealer({"k2": decode_key(K2)}, "k2").open("card-100", token)  # key not configured
    assert sealer.open("card-100", "PLAIN-CODE") == "PLAIN-CODE"  # imported before sealing
    assert sealer.digest("X") != PLAIN.digest("X")  # keyed fingerprint


@pytest.mark.parametrize(("codes_section", "field"), [
    ({"keys": {"k1": "c2hvcnQ="}, "current": "k1", "fingerprint_key": FINGERPRINT},
     "codes.keys.k1"),
    ({"keys": {"k1": K1}, "current": "k9", "fingerprint_key": FINGERPRINT}, "codes.current"),
    ({"keys": {"k1": K1}, "current": "k1"}, "codes.fingerprint_key"),
    ({"keys": {"k1": "env:NO_SUCH_VARIABLE"}, "current": "k1",
      "fingerprint_key": FINGERPRINT}, "codes.keys.k1"),
])
def test_bad_sealing_config_names_the_key(codes_section: dict[str, Any], field: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        make_settings(codes=codes_section)
    assert any(e.startswith(field) for e in caught.value.errors), caught.value.errors


async def test_codes_are_sealed_in_redis_and_open_in_answers(
        engine_factory: EngineFactory, redis: Redis,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    engine = await engine_factory(_sealed())
    imported = codes("SEAL", 6)
    result = await engine.import_codes("card-100", imported)
    assert result["added"] == 6
    again = await engine.import_codes("card-100", imported[:2], lot="lot2")
    assert again["duplicates"] == 2  # the keyed fingerprint still catches duplicates
    stored = [v.decode() for v in await redis.lrange(keys.lot_codes("card-100", "lot1", 0),
                                                     0, -1)]
    assert stored and all(v.startswith("~k1$lot1$") for v in stored)
    assert not set(imported) & set(stored)
    status, body = await engine.order(qty=2)
    assert status == 201 and set(body["codes"]) <= set(imported)
    raw: Any = await redis.hget(keys.order(body["order_id"], 0), "codes")
    assert all(c.startswith("~k1$") for c in raw.decode().split("\n"))
    resp = await engine.http.get(f"/v1/orders/{body['order_id']}",
                                 headers=auth("key-shop-a"))
    assert (await resp.json())["codes"] == body["codes"]
    assert (await reconcile(redis, 1, ["card-100"])).ok
    dumped = await redis.execute_command("DUMP", keys.lot_codes("card-100", "lot1", 0))
    assert not any(code.encode() in dumped for code in imported)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(code in logged for code in imported)


async def test_rotation_reseals_stock_online_and_old_orders_still_open(
        engine_factory: EngineFactory, redis: Redis) -> None:
    engine = await engine_factory(_sealed())
    imported = codes("ROT", 1200)
    await engine.import_codes("card-100", imported)
    _, before = await engine.order(qty=1, buyer="early")
    rotated = _sealed(current="k2", k2=K2)
    resp = await engine.http.put("/admin/config", headers=auth(ADMIN_KEY), json=_doc(rotated))
    assert resp.status == 200, await resp.text()
    base = str(engine.http.make_url("")).rstrip("/")
    sealer = Directory(rotated).sealer
    # orders keep claiming codes while the stock is resealed
    orders = asyncio.create_task(post_many(base, [
        {"sku": "card-100", "qty": 1, "buyer": f"r{i}", "wait_ms": 2000} for i in range(300)]))
    done = await rotate(redis, sealer, 1, ["card-100"])
    answers = await orders
    assert done["card-100"] > 0
    stored = [v.decode() for v in await redis.lrange(keys.lot_codes("card-100", "lot1", 0),
                                                     0, -1)]
    assert all(v.startswith("~k2$") for v in stored)
    issued = [c for s, b in answers if s == 201 for c in b["codes"]] + before["codes"]
    assert len(issued) == len(set(issued)) == 301 and set(issued) <= set(imported)
    assert len(stored) == 1200 - 301
    assert {sealer.open("card-100", v) for v in stored} == set(imported) - set(issued)
    resp = await engine.http.get(f"/v1/orders/{before['order_id']}",
                                 headers=auth("key-shop-a"))
    assert (await resp.json())["codes"] == before["codes"]  # sealed with k1, still opens

    async def quiet() -> bool:
        return (await reconcile(redis, 1, ["card-100"])).ok

    await eventually(quiet)


def _doc(settings: Any) -> dict[str, Any]:
    import msgspec

    doc: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(settings))
    return doc

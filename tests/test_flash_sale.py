"""Flash sale (爆单): 2,000 buyers at once for 100 codes, then a restock serves the line."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from tests.conftest import SHOP_A_KEY, STORES, Engine, auth, codes, eventually, post_many
from tests.promises import assert_promises


async def _wait_decided(engine: Engine, order_ids: list[str], status: str) -> None:
    async def all_decided() -> bool:
        for oid in order_ids:
            resp = await engine.http.get(f"/v1/orders/{oid}", headers=auth(SHOP_A_KEY))
            if (await resp.json())["status"] != status:
                return False
        return True

    await eventually(all_decided, timeout=15, what=f"every order {status}")


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_flash_sale_never_oversells_and_serves_the_line_in_order(
    engine: Engine, redis: Redis
) -> None:
    imported = codes("FLASH", 100)
    await engine.import_codes("card-100", imported)
    bodies = [{"sku": "card-100", "qty": 1, "buyer": f"buyer-{i}"} for i in range(2000)]
    base = str(engine.http.make_url("")).rstrip("/")

    answers = await post_many(base, bodies)

    assert not [s for s, _ in answers if s >= 500], "5xx during the flash sale"
    fulfilled = [b for s, b in answers if s == 201]
    queued = [b for s, b in answers if s == 202 and b["status"] == "queued"]
    assert len(fulfilled) == 100
    assert len(queued) == 1900
    issued = [c for b in fulfilled for c in b["codes"]]
    assert len(set(issued)) == 100 and set(issued) == set(imported)

    # the line, as positions say it is now
    positions = {}
    for b in queued:
        resp = await engine.http.get(f"/v1/orders/{b['order_id']}", headers=auth(SHOP_A_KEY))
        positions[b["order_id"]] = (await resp.json())["queue"]["position"]
    assert sorted(positions.values()) == list(range(1, 1901))
    first_50 = sorted(positions, key=positions.__getitem__)[:50]

    restock = codes("RESTOCK", 50)
    await engine.import_codes("card-100", restock, lot="lot2")
    await _wait_decided(engine, first_50, "fulfilled")
    rest = sorted(positions, key=positions.__getitem__)[50:]
    resp = await engine.http.get(f"/v1/orders/{rest[0]}", headers=auth(SHOP_A_KEY))
    head = await resp.json()
    assert head["status"] == "queued" and head["queue"]["position"] == 1

    result = await assert_promises(
        redis, engine.settings.redis.shards, ["card-100"],
        [b["order_id"] for _, b in answers], set(imported) | set(restock),
    )
    assert result["statuses"] == {"fulfilled": 150, "queued": 1850}

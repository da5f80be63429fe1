"""The contracts between Python and the Lua scripts: array fields named the same, in the same
order, on both sides; the line score computed once; the record read through its named fields."""

from __future__ import annotations

import re
from importlib import resources

import msgspec
import pytest
from redis.asyncio import Redis

from engine.clock import now_ms
from engine.door.ingest import AdmitItem, Ingest
from engine.stock.importer import ImportItem
from engine.store import keys, records
from engine.store.records import line_score
from engine.wire import Reply, StreamOrder
from engine.worker import claim_plan
from engine.worker.claim_plan import ClaimRow

# `local A, B, C = 1, 2, 3` (may wrap over lines)
_LOCALS = re.compile(r"^local ((?:[A-Z_]+,\s*)*[A-Z_]+)\s*=\s*((?:\d+,\s*)*\d+)\s*$", re.M)


def _indices(script: str, prefix: str = "") -> dict[str, int]:
    """The constant field indices a script declares: name (without prefix) -> index."""
    source = resources.files("engine.lua").joinpath(f"{script}.lua").read_text()
    found: dict[str, int] = {}
    for names, numbers in _LOCALS.findall(source):
        pairs = zip([n.strip() for n in names.split(",")],
                    [int(v) for v in numbers.split(",")], strict=True)
        found.update((name[len(prefix):], i) for name, i in pairs if name.startswith(prefix)
                     and (prefix or not name.startswith("R_")))
    return found


def _fields(struct: type[msgspec.Struct]) -> dict[str, int]:
    return {name.upper(): i for i, name in enumerate(struct.__struct_fields__, start=1)}


@pytest.mark.parametrize(("script", "prefix", "struct"), [
    ("admit", "", AdmitItem),
    ("claim", "", ClaimRow),
    ("claim", "R_", Reply),
    ("import", "", ImportItem),
])
def test_lua_names_the_fields_of_the_python_struct(
    script: str, prefix: str, struct: type[msgspec.Struct]
) -> None:
    declared = _indices(script, prefix)
    if script == "claim" and not prefix:
        actions = {k: v for k, v in declared.items() if k in ("FILL", "QUEUE", "HOLD", "PARK")}
        assert actions == {"FILL": claim_plan.ACTION_FILL, "QUEUE": claim_plan.ACTION_QUEUE,
                           "HOLD": claim_plan.ACTION_HOLD, "PARK": claim_plan.ACTION_PARK}
        declared = {k: v for k, v in declared.items() if k not in actions}
    assert declared == _fields(struct)
    assert struct.__struct_config__.array_like


def test_the_parser_sees_a_wrong_order() -> None:
    """The check above can fail: a script that swapped two fields would be caught."""
    swapped = {**_fields(AdmitItem), "SKU": 6, "TTL_MS": 5}
    assert swapped != _indices("admit")


async def test_a_tickets_score_is_line_score_of_its_tier_and_arrival(redis: Redis) -> None:
    """admit.lua adds the arrival to the score base Python computed; the claim (Python) and
    the admit (Lua) agree on where a ticket of each tier stands."""
    ingest = Ingest(redis, 4, capacity=10)
    shard = keys.shard_of_sku("card-100", 4)
    admitted = []
    for tier in (0, 5, 9):
        order = StreamOrder(keys.new_order_id(shard), "shop-a", "card-100", 1, f"b{tier}", tier,
                            now_ms())
        result = await ingest.admit(order, shard, ticket=True, ttl_ms=60_000)
        assert result.status == "queued"
        admitted.append(order)
    line = keys.overflow_line("card-100", shard)
    for order in admitted:
        arrival = int(await redis.hget(keys.order(order.order_id, shard), records.ARRIVAL))
        assert await redis.zscore(line, order.order_id) == line_score(order.tier, arrival)
    # the highest tier stands first, whatever its arrival
    assert [m.decode() for m in await redis.zrange(line, 0, -1)] == \
        [o.order_id for o in reversed(admitted)]
    await ingest.close()

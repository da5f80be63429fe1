"""Turn the kernel's decisions into one claim plan and apply it with one Lua call."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import msgspec
from redis.asyncio import Redis

from engine.metrics import size_bucket
from engine.store import keys, replication, scripts
from engine.store.records import line_score
from engine.wire import StreamOrder, msgpack_encode
from engine.worker.book import Snapshot
from engine.worker.matching_types import FILL, NO_REASON, QUEUE, REASONS, Decision, MatchOrder
from engine.worker.pause_gate import Parking

ACTION_FILL, ACTION_QUEUE, ACTION_REJECT, ACTION_HOLD, ACTION_PARK = 1, 2, 3, 4, 5
PARK = 9  # beside the kernel's actions: the order's scope is paused (engine/worker/pause_gate)
PARKED = Decision(PARK, NO_REASON, [])


class ClaimRow(msgspec.Struct, array_like=True, frozen=True):
    """One order whose state the claim changes (claim.lua names these fields, in this order,
    in its header; tests/test_lua_contracts.py holds the two together). Keys are 1-based
    indexes into the call's KEYS."""

    record: int
    line: int  # the SKU's line (where a ticket waits, or leaves)
    expected_status: str  # "pending" or "queued": anything else makes the plan stale
    action: int  # ACTION_FILL, ACTION_QUEUE, ACTION_REJECT, ACTION_HOLD or ACTION_PARK
    order_id: str
    reason: str  # why it waits (QUEUE) or was rejected (REJECT)
    expires_ms: int  # when a hold ends (HOLD) or a ticket expires (QUEUE)
    score: int  # its place in the line (QUEUE, PARK)
    fills: list[tuple[int, int]]  # (code list key, n) for FILL and HOLD
    reply_channel: str  # the front door waiting for it ("" when none)
    notify: bool  # it has a notify_url: its new state goes to the outbox
    held_lots: str  # "lot:n,lot:n" for HOLD: where its codes go back to
    arrival: int
    parked_line: int = 0  # PARK: the parked line it waits in
    parking_member: str = ""  # PARK: that line's member of the shard's parking set


class ClaimPlan(msgspec.Struct, frozen=True):
    """ARGV[2] of claim.lua (a msgpack map): the shard's keys (KEYS indexes), the entries to
    acknowledge, the expected stock versions, the rows, and sums the script adds."""

    stream: int
    stats: int
    expiries: int
    outbox: int
    issued: int  # the shard's issuance audit stream
    settle: int  # the shard's settle stream (orders whose decision moves points)
    issued_text: str  # one line per order that got codes: "order_id sku status lot:n,..."
    group: str
    ack: list[str]
    skus: list[tuple[int, int]]  # (counters key, expected version)
    orders: list[ClaimRow]
    deltas: list[tuple[int, str, int]]  # (hash key, field, increment): stock, lots, bought
    counts: list[tuple[str, int]]  # (stats field, increment)
    late_before: int = 0  # orders made before (unix ms) that get codes now are compensated
    parking: int = 0  # the shard's set of non-empty parked lines
    decided: int = 0  # the shard's decided stream (the retention's index)


class StalePlan(Exception):
    """Stock or an order changed between the reads and the claim; nothing was written."""


class Plan(msgspec.Struct):
    names: list[str]  # KEYS of the claim call
    payload: bytes
    orders: int


class _KeyTable:
    """KEYS of the claim call, each listed once; the plan refers to them by 1-based index."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, name: str) -> int:
        index = self._index.get(name)
        if index is None:
            self.names.append(name)
            index = self._index[name] = len(self.names)
        return index


class _SkuKeys:
    """A SKU's key indexes in the claim call, looked up once per batch."""

    def __init__(self, table: _KeyTable, sku: str, shard: int) -> None:
        self._table, self._sku, self._shard = table, sku, shard
        self.counters = table(keys.sku_counts(sku, shard))
        self.lots = table(keys.lots(sku, shard))
        self.line = table(keys.line(sku, shard))
        self._codes: dict[str, int] = {}
        self._bought: dict[str, int] = {}

    def bought(self, buyer: str) -> int:
        index = self._bought.get(buyer)
        if index is None:
            index = self._bought[buyer] = self._table(keys.bought(self._sku, self._shard, buyer))
        return index

    def codes(self, lot: str) -> int:
        index = self._codes.get(lot)
        if index is None:
            index = self._codes[lot] = self._table(keys.lot_codes(self._sku, lot, self._shard))
        return index


def build_plan(
    shard: int,
    settings_skus: Mapping[str, object],
    snapshot: Snapshot,
    orders: Sequence[MatchOrder],
    requests: dict[str, StreamOrder],
    decisions: Sequence[Decision],
    now: int,
    channels: Mapping[str, str],
    ack: Sequence[bytes],
    notify: Mapping[str, str] | None = None,
    late_before: int = 0,
    tickets: Mapping[str, StreamOrder] | None = None,
    parking: Mapping[str, Parking] | None = None,
) -> Plan:
    """The claim plan of a batch: only the orders whose state changes are in it, and the
    batch's stream entries to acknowledge once it is applied. `requests`: the batch's new
    orders; `tickets`: the requests of the tickets in it (one served now is held for
    payment like a new order); `parking`: where the orders decided PARK wait."""
    notify = notify or {}
    parking = parking or {}
    table = _KeyTable()
    stream, stats = table(keys.stream(shard)), table(keys.stats(shard))
    expiry_index = table(keys.expiries(shard))
    outbox = table(keys.outbox(shard))
    issued_key = table(keys.issued(shard))
    settle_key = table(keys.settle(shard))
    decided_key = table(keys.decided(shard))
    parking_key = table(keys.parking(shard)) if parking else 0
    issued: list[str] = []  # the audit's code issuance lines: "order sku status lot:n,..."
    versions: dict[str, tuple[int, int]] = {}
    deltas: dict[tuple[int, str], int] = {}
    counts: dict[str, int] = {}
    rows: list[ClaimRow] = []

    def add(key: int, field: str, n: int) -> None:
        deltas[key, field] = deltas.get((key, field), 0) + n

    sku_keys: dict[str, _SkuKeys] = {}
    for order, decision in zip(orders, decisions, strict=True):
        was_queued = order.order_id not in requests
        if was_queued and decision.action == QUEUE:
            continue  # a ticket that stays in line: nothing to write
        sku = order.sku
        k = sku_keys.get(sku)
        if k is None:
            k = sku_keys[sku] = _SkuKeys(table, sku, shard)
            versions[sku] = (k.counters, snapshot.skus[sku].ver)
            add(k.counters, "ver", 1)
        counters = k.counters
        request = requests.get(order.order_id) or (tickets or {}).get(order.order_id)
        hold_s = request.hold_s if request is not None else 0
        fills = [(k.codes(lot), n) for lot, n in decision.fills]
        reason = REASONS[decision.reason]
        score, expiry, lots_text = 0, 0, ""
        parked_line, member = 0, ""
        if decision.action == PARK:
            action, status, reason = ACTION_PARK, "queued", "paused"
            score = line_score(order.tier, order.arrival)
            where = parking[order.order_id]
            expiry = where.expires_ms
            parked_line = table(keys.parked_line(sku, where.storefront, shard))
            member = f"{where.storefront}:{sku}"
        elif decision.action == FILL:
            action = ACTION_HOLD if hold_s > 0 else ACTION_FILL
            for lot, n in decision.fills:
                add(k.lots, lot, -n)
            add(counters, "available", -order.qty)
            add(counters, "held" if hold_s > 0 else "issued", order.qty)
            add(k.bought(order.buyer), order.buyer, order.qty)
            if hold_s > 0:
                expiry = now + hold_s * 1000
                lots_text = ",".join(f"{lot}:{n}" for lot, n in decision.fills)
            status = "held" if hold_s > 0 else "fulfilled"
            issued.append(f"{order.order_id} {sku} {status} "
                          + ",".join(f"{lot}:{n}" for lot, n in decision.fills))
        elif decision.action == QUEUE:
            action, status = ACTION_QUEUE, "queued"
            score = line_score(order.tier, order.arrival)
            policy = settings_skus.get(sku)
            expiry = now + getattr(policy, "queue_ttl_s", 1800) * 1000
        else:
            action, status = ACTION_REJECT, "rejected"
        counts[status] = counts.get(status, 0) + 1
        rows.append(ClaimRow(
            table(keys.order(order.order_id, shard)), k.line,
            "queued" if was_queued else "pending", action, order.order_id, reason, expiry,
            score, fills, channels.get(order.order_id, ""), bool(notify.get(order.order_id)),
            lots_text, order.arrival, parked_line, member,
        ))
    if rows:
        counts.update({"claim_batches": 1, "claim_orders": len(rows),
                       f"claim_size_le_{size_bucket(len(rows))}": 1})
    payload = msgpack_encode(ClaimPlan(
        stream=stream, stats=stats, expiries=expiry_index, outbox=outbox, issued=issued_key,
        settle=settle_key,
        issued_text="\n".join(issued), group=keys.GROUP, ack=[i.decode() for i in ack],
        skus=list(versions.values()), orders=rows,
        deltas=[(k, f, n) for (k, f), n in deltas.items() if n],
        counts=list(counts.items()), late_before=late_before, parking=parking_key,
        decided=decided_key,
    ))
    return Plan(table.names, payload, len(rows))


async def apply_plan(redis: Redis, plan: Plan, now: int) -> int:
    """Run claim.lua: orders decided; raise StalePlan when it refused the plan. With a
    replication policy the script hands the replies back instead of publishing them, and they
    go out only once the replicas acknowledged the claim (else NotReplicated is raised: the
    doors answer 202 and the buyers read their codes later, once replicated)."""
    deferred = replication.policy(redis) is not None
    result = await scripts.CLAIM(redis, plan.names, [now, plan.payload, int(deferred)])
    if result[0] == b"STALE":
        raise StalePlan(result[1].decode())
    if len(result) > 2:
        # one by one: redis-py's cluster pipeline refuses PUBLISH (a message reaches every
        # node of a cluster from any node)
        await asyncio.gather(*(redis.publish(result[at], result[at + 1])
                               for at in range(2, len(result), 2)))
    return int(result[1])

"""Model-based test (DESIGN.md section 7): a hypothesis state machine against real Redis.

The machine drives the real front door (the aiohttp app, in process, through a TestClient) and
a `Worker` that it steps itself (`drain`, `chores`; no background worker task), on the
redis-server of the session's `redis_server` fixture, flushed at the start of every example.
Each example runs on an event loop of its own, made in the machine's __init__; every rule is one
`loop.run_until_complete(...)`.

Rules: import codes (text/plain, duplicates included) into lots; orders from two storefronts
(qty 1-3, tiers 0-1, with and without hold_s, with and without an Idempotency-Key; a key from a
small pool, so the same key comes back with the same body or another one), either answered at
once (`wait_ms` 0: 202 pending) or served while the worker runs (outcome predicted exactly from
the model: codes, held, queue position, 409 sold_out / limit_exceeded / insufficient_points,
422 not_priced or over the amount); card-100 has a price, so an order of it waits `held` for
its payment unless points pay it all; served orders may pay with points; points granted
(some lots expiring soon, with and without an Idempotency-Key) and deducted; replays; worker steps;
worker kills (entries read by the dead worker's consumer and never claimed, or a drain cancelled
part way, then a new Worker takes the shards over); SCRIPT FLUSH and a Redis restart (AOF);
live config changes (PUT /admin/config: max_qty, buyer_limit); cancel; confirm; a clock
advanced past hold and queue expiry (the engine's own sweep, given a later "now"); void of a lot.

The model knows every code imported and where it is (the exact order of every lot's list: codes
leave a lot from the front, held codes come back to the front), every order the client got an id
for, what each order's status may become in each kind of step, the idempotency keys, and every
wallet's lots (tests/model_wallets.py): reserved at the door, spent or given back when the
worker settles (in the order of the wallet's history), earned, expired by the clock.

After every step: C1 reconcile; C2 no code in two orders, none from a voided lot; C3 the
counters equal the model (imported, voided, issued, held, available, each buyer's purchases),
buyer limits hold; C4 every order exists with a legal status reached by a legal transition,
none pending after a drain, no ticket left waiting that the stock could serve; C5 idempotency
records point at the order the client got, replays agree; C6 the other storefront gets 404;
P1 every wallet's counters and lots equal the model's (so granted - deducted - expired =
balance + reserved + spent); P2 an order's points are reserved while it waits, spent only if
fulfilled, given back only if it ended otherwise, and after a worker step settled once decided
(`kamigate reconcile`'s check too); P4 replays and replayed grants move nothing.

Size: KAMIGATE_MODEL_EXAMPLES (default 20) examples of KAMIGATE_MODEL_STEPS (default 25) steps.
Each engine bug the machine found has a small regression test at the end of this file.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from engine import config
from engine.clock import now_ms, rfc3339
from engine.config import live
from engine.door.ingest import Ingest
from engine.http.state import REPLIES
from engine.stock import lots
from engine.stock.reconcile import reconcile
from engine.store import connection, keys, records
from engine.store.embedded import RedisProcess, free_port
from engine.store.sealing import PLAIN
from engine.wallet import coupons, ledger
from engine.wallet.coupon_reconcile import reconcile_coupons
from engine.wallet.reconcile import reconcile_points
from engine.wire import StreamOrder
from engine.worker import book
from engine.worker.consumer import Worker
from engine.worker.waiting import sweep
from tests.conftest import (
    ADMIN_KEY,
    OPERATOR_KEY,
    SHOP_A_KEY,
    SHOP_B_KEY,
    Engine,
    EngineFactory,
    auth,
    make_settings,
    settings_dict,
)
from tests.model_coupons import DISCOUNT as COUPON_DISCOUNT
from tests.model_coupons import TEMPLATE as COUPON_TEMPLATE
from tests.model_coupons import MCoupon
from tests.model_wallets import NEVER, MReservation, MWallet

T = TypeVar("T")

EXAMPLES = int(os.environ.get("KAMIGATE_MODEL_EXAMPLES", "20"))
STEPS = int(os.environ.get("KAMIGATE_MODEL_STEPS", "25"))

SHARDS = 4
SKUS = ("card-100", "card-limited", "card-reject")
LOTS = ("lot1", "lot2", "lot3")
BUYERS = ("b1", "b2", "b3")
IDEM_KEYS = ("k1", "k2", "k3")
STOREFRONT_KEYS = {"shop-a": SHOP_A_KEY, "shop-b": SHOP_B_KEY}
OTHER = {"shop-a": "shop-b", "shop-b": "shop-a"}
HOLD_S = 60
POOL = 12  # codes per SKU the imports draw from: later imports repeat earlier codes
FINAL = frozenset({"fulfilled", "rejected", "expired", "cancelled"})
LEGAL = FINAL | {"held", "queued", "pending"}

PRICE = 100  # card-100's price in fen; a point is worth one fen
PRICED = {"card-100": PRICE}
POINTS = {"per_unit": 100, "earn_per_unit": 1, "tier_multipliers": [1.0], "earn_bonus": [],
          "expire_after_days": 0, "max_redeem_percent": 100, "grants_per_minute": 0,
          "redemptions_per_hour": 0}
SOON_S = 1000  # a "soon" lot expires this long after the machine starts: a clock step of
#                1801 s passes it, one of 61 s does not

COVERAGE: collections.Counter[str] = collections.Counter()


def model_config(policy: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The machine's config: the suite's SKUs (with `policy` applied), card-100 priced."""
    skus = [dict(s) for s in settings_dict()["skus"]]
    for s in skus:
        s.update((policy or {}).get(s["id"], {}))
        if s["id"] in PRICED:
            s["price"] = PRICED[s["id"]]
    return settings_dict(skus=skus, points=POINTS, coupon_templates=[COUPON_TEMPLATE],
                         pricing={"currency": "CNY", "payment_hold_s": HOLD_S})


def body_of(sku: str, qty: int, buyer: str, tier: int, hold_s: int,
            points: int = 0) -> dict[str, Any]:
    return {"sku": sku, "qty": qty, "buyer": buyer, "tier": tier, "hold_s": hold_s,
            "points": points}


def paid_body(sku: str, qty: int, buyer: str, tier: int, hold_s: int, pay: str
              ) -> dict[str, Any]:
    """An order that may pay with points: none, part, all of its amount, or more than it
    (422); on an unpriced SKU any points are 422 not_priced."""
    amount = PRICED.get(sku, PRICE) * qty
    points = {"cash": 0, "part": 50, "all": amount, "over": amount + 50}[pay]
    return body_of(sku, qty, buyer, tier, hold_s, points)


# (storefront, body, Idempotency-Key or None)
ORDER = st.tuples(
    st.sampled_from(sorted(STOREFRONT_KEYS)),
    st.builds(body_of, st.sampled_from(SKUS), st.integers(1, 3), st.sampled_from(BUYERS),
              st.integers(0, 1), st.sampled_from([0, 0, HOLD_S])),
    st.none() | st.sampled_from(IDEM_KEYS),
)
PAID_ORDER = st.tuples(
    st.sampled_from(sorted(STOREFRONT_KEYS)),
    st.builds(paid_body, st.sampled_from(("card-100", "card-100", *SKUS[1:])),
              st.integers(1, 3), st.sampled_from(BUYERS),
              st.integers(0, 1), st.sampled_from([0, 0, HOLD_S]),
              st.sampled_from(["cash", "cash", "part", "all", "all", "over"])),
    st.none() | st.sampled_from(IDEM_KEYS),
)


@dataclass
class MOrder:
    """An order the client got an id for, as the model knows it."""

    order_id: str
    storefront: str
    sku: str
    qty: int
    buyer: str
    tier: int
    hold_s: int
    key: str | None
    status: str
    codes: list[str] = field(default_factory=list)
    expect_codes: list[str] | None = None  # predicted exactly (orders served on a quiet engine)
    hold_expires_ms: int = 0
    queue_expires_ms: int = 0
    points: int = 0
    reservation: MReservation | None = None  # its points, when it pays with some

    def body(self) -> dict[str, Any]:
        return body_of(self.sku, self.qty, self.buyer, self.tier, self.hold_s, self.points)


def pick(data: st.DataObject, ids: list[str]) -> str:
    """One of ids. The draw does not depend on how many there are: what the engine decided
    (which a killed worker's timing can change) never changes the shape of the data drawn."""
    return ids[data.draw(st.integers(0, 1 << 16)) % len(ids)]


def code_name(sku: str, i: int) -> str:
    return f"{sku}-C{i:03d}"


class Step:
    """What the current step may change: worker steps decide orders; cancel, confirm and the
    sweep each change what they name; everything else changes no order status."""

    def __init__(self, kind: str = "none", target: str | None = None, at_ms: int = 0) -> None:
        self.kind, self.target, self.at_ms = kind, target, at_ms


class EngineModel(RuleBasedStateMachine):
    server: RedisProcess  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.settings = config.from_mapping(model_config(), environ={})
        self.engine = Engine(self.settings, self.server.url)
        self.redis: Redis = connection.client(self.server.url)
        self.worker: Worker | None = None
        self.follower: live.Follower | None = None
        self.worker_clients: list[Redis] = []
        # the model
        self.policy: dict[str, dict[str, Any]] = {
            s["id"]: {"max_qty": s.get("max_qty", 10), "buyer_limit": s.get("buyer_limit", 0),
                      "on_sold_out": s.get("on_sold_out", "queue")}
            for s in settings_dict()["skus"]
        }
        self.stock: dict[tuple[str, str], list[str]] = {}  # (sku, lot) -> the lot's list
        self.lot_of: dict[str, tuple[str, str]] = {}  # code -> (sku, lot)
        self.imported: dict[str, set[str]] = {s: set() for s in SKUS}
        self.voided: dict[str, int] = dict.fromkeys(SKUS, 0)
        self.voided_codes: set[str] = set()
        self.recalled: set[str] = set()  # codes held when their lot was voided
        self.voided_lots: set[tuple[str, str]] = set()
        self.orders: dict[str, MOrder] = {}
        # (storefront, key) -> (the order id it holds, or None while the key is bound to a
        # request refused for want of points: the same body later admits it), the body
        self.idem: dict[tuple[str, str], tuple[str | None, dict[str, Any]]] = {}
        self.step = Step()
        self.quiet = True  # every admitted order decided and no stock came back since
        self.took: dict[tuple[str, str], int] = {}  # (sku, buyer) -> qty taken in this step
        self.replays: list[tuple[str, dict[str, Any]]] = []  # (order id, a replay's answer)
        self.wallets: dict[tuple[str, str], MWallet] = {}  # (storefront, buyer)
        self.history_seen: dict[tuple[str, str], bytes] = {}  # the wallet's last entry read
        self.soon_ms = (now_ms() // 1000 + SOON_S) * 1000
        self.settled = True  # every decided order's points settled (after a worker step)
        self.coupons: list[MCoupon] = []
        try:
            self.run(self._start())
        except BaseException:
            self.teardown()
            raise

    # -- plumbing ---------------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def _start(self) -> None:
        await self.redis.flushall()
        await self.redis.script_flush()
        await self.engine.start(worker=False)
        await self._new_worker()

    async def _new_worker(self) -> None:
        redis = connection.client(self.server.url)
        blocking = connection.client(self.server.url, timeout=10)
        self.worker_clients += [redis, blocking]
        running = await live.read(redis)
        assert running is not None, "the front door published no config"
        worker = Worker(running.settings, redis, blocking)
        self.worker = worker
        self.follower = live.Follower(redis, running, lambda r: worker.use(r.settings))

    async def _drop_worker(self) -> None:
        """The worker process dies: its object is dropped, its sockets close, and its leases
        run out (deleted here instead of waiting lease_s)."""
        worker = self.worker
        assert worker is not None
        for shard in range(SHARDS):
            if await self.redis.get(keys.lease(shard)) == worker.worker_id.encode():
                await self.redis.delete(keys.lease(shard))
        clients, self.worker_clients = self.worker_clients, []
        for client in clients:
            await client.aclose()
        self.worker = None
        await self._new_worker()

    async def _drain(self) -> None:
        """One full worker step: adopt the fleet's config, process every stream, chores."""
        assert self.worker is not None and self.follower is not None
        await self.follower.check()
        await self.worker.drain()
        await self.worker.chores()

    @initialize(stock=st.lists(st.tuples(st.sampled_from(SKUS), st.integers(0, 6)),
                               max_size=3))
    def initial_stock(self, stock: list[tuple[str, int]]) -> None:
        """Most examples start with some stock, so that orders are served from step one."""
        for sku, n in stock:
            if n:
                self.import_codes(sku, "lot1", list(range(n)))

    def teardown(self) -> None:
        async def close() -> None:
            await self.engine.close()
            for client in self.worker_clients:
                await client.aclose()
            await self.redis.aclose()

        try:
            self.run(close())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    def begin(self, kind: str = "none", target: str | None = None, at_ms: int = 0) -> None:
        self.step = Step(kind, target, at_ms)
        self.took = {}
        self.settled = False

    def wallet(self, storefront: str, buyer: str) -> MWallet:
        return self.wallets.setdefault((storefront, buyer), MWallet())

    async def _post_order(self, storefront: str, body: dict[str, Any], key: str | None,
                          wait_ms: int) -> tuple[int, dict[str, Any]]:
        headers = auth(STOREFRONT_KEYS[storefront])
        if key is not None:
            headers["Idempotency-Key"] = key
        resp = await self.engine.http.post("/v1/orders", json={**body, "wait_ms": wait_ms},
                                           headers=headers)
        return resp.status, await resp.json()

    # -- model helpers ----------------------------------------------------------------------
    def available(self, sku: str) -> int:
        return sum(len(c) for (s, _), c in self.stock.items() if s == sku)

    def bought(self, sku: str, buyer: str) -> int:
        return sum(o.qty for o in self.orders.values()
                   if o.sku == sku and o.buyer == buyer and o.status in ("held", "fulfilled"))

    def next_codes(self, sku: str, qty: int) -> list[str]:
        """What the kernel takes: lots in order of lot id (none expires), each from the front."""
        out: list[str] = []
        for (s, _lot), codes in sorted(self.stock.items()):
            if s == sku:
                out += codes[: qty - len(out)]
        return out

    def expect_new(self, storefront: str, body: dict[str, Any], key: str | None
                   ) -> tuple[str, str | None]:
        """('invalid'|'not_priced'|'replay'|'conflict'|'new', order id of the key's holder).
        A retry of an admitted order is a replay even when the rules changed since (a lower
        max_qty)."""
        held = self.idem.get((storefront, key)) if key is not None else None
        if held is not None and held[0] is not None and held[1] == body:
            return "replay", held[0]
        if body["qty"] > self.policy[body["sku"]]["max_qty"]:
            return "invalid", None
        if body["points"] and body["sku"] not in PRICED:
            return "not_priced", None
        if body["points"] > PRICED.get(body["sku"], 0) * body["qty"]:
            return "invalid", None
        if held is not None and held[1] != body:
            return "conflict", held[0]
        return "new", None

    def check_answer(self, status: int, answer: dict[str, Any], storefront: str,
                     body: dict[str, Any], key: str | None, expected: str,
                     holder: str | None) -> MOrder | None:
        """Check the answer to an order request that needed no worker; the new order or None."""
        if expected in ("invalid", "not_priced"):
            code = "invalid_request" if expected == "invalid" else "not_priced"
            assert status == 422 and answer["code"] == code, (status, answer)
            COVERAGE[f"order: 422 {code}"] += 1
            return None
        if expected == "conflict":
            assert status == 409 and answer["code"] == "idempotency_conflict", (status, answer)
            assert holder is None or answer["order_id"] == holder
            COVERAGE["order: idempotency conflict"] += 1
            return None
        if expected == "replay":
            assert status == 200, (status, answer)
            assert answer["order_id"] == holder, "a replay answered another order (C5)"
            held = self.orders[holder]
            COVERAGE["order: replay"] += 1
            # the record is what the invariants compare; the answer must agree with it
            self.replays.append((holder, answer))
            assert answer["sku"] == held.sku and answer["qty"] == held.qty
            return None
        if body["points"] > self.wallet(storefront, body["buyer"]).balance:
            # P3: never reserved beyond the balance; the key stays bound to this body
            assert status == 409 and answer["code"] == "insufficient_points", (status, answer)
            if key is not None:
                self.idem.setdefault((storefront, key), (None, body))
            COVERAGE["order: 409 insufficient_points"] += 1
            return None
        return self.register(status, answer, storefront, body, key)

    def register(self, status: int, answer: dict[str, Any], storefront: str,
                 body: dict[str, Any], key: str | None) -> MOrder:
        order_id = answer["order_id"]
        assert order_id not in self.orders, "an order id was handed out twice"
        kind = answer["code"] if status == 409 else answer["status"]
        order = MOrder(order_id, storefront, body["sku"], body["qty"], body["buyer"],
                       body["tier"], body["hold_s"], key, "pending", points=body["points"])
        if body["sku"] in PRICED:
            discount = COUPON_DISCOUNT if body.get("coupons") else 0
            amount = PRICED[body["sku"]] * body["qty"]
            cash_due = amount - discount - body["points"]
            order.reservation = self.wallet(storefront, body["buyer"]).reserve(
                body["points"], cash_due // 100)  # earn_per_unit 1 on each yuan paid
            assert order.reservation is not None
            price = {"currency": "CNY", "amount": amount, "discount": discount,
                     "points": body["points"], "points_value": body["points"],
                     "cash_due": cash_due}
            assert status == 409 or answer["price"] == price, (answer, price)
            COVERAGE["order: priced" + (" with points" if body["points"] else "")] += 1
        self.orders[order_id] = order
        if key is not None:
            self.idem[storefront, key] = (order_id, body)
        COVERAGE[f"order: {status} {kind}"] += 1
        return order

    # -- rules: stock -------------------------------------------------------------------------
    @rule(sku=st.sampled_from(SKUS), lot=st.sampled_from(LOTS),
          picks=st.lists(st.integers(0, POOL - 1), min_size=1, max_size=6))
    def import_codes(self, sku: str, lot: str, picks: list[int]) -> None:
        self.begin()
        names = [code_name(sku, i) for i in picks]
        fresh: list[str] = []
        for name in names:
            if name not in self.imported[sku] and name not in fresh:
                fresh.append(name)

        async def go() -> tuple[int, dict[str, Any]]:
            resp = await self.engine.http.post(
                f"/admin/skus/{sku}/stock", data="\n".join(names) + "\n", params={"lot": lot},
                headers={**auth(OPERATOR_KEY), "Content-Type": "text/plain"})
            return resp.status, await resp.json()

        status, answer = self.run(go())
        if (sku, lot) in self.voided_lots:
            # a voided (recalled) lot id is never imported into again
            assert status == 409 and answer["code"] == "lot_voided", answer
            COVERAGE["import into a voided lot (refused)"] += 1
            return
        self.stock.setdefault((sku, lot), []).extend(fresh)
        self.imported[sku].update(fresh)
        for name in fresh:
            self.lot_of[name] = (sku, lot)
        assert status == 200, answer
        assert answer == {"sku": sku, "lot": lot, "added": len(fresh),
                          "duplicates": len(names) - len(fresh), "invalid": 0,
                          "available": self.available(sku)}, answer
        if fresh:
            self.quiet = False  # the line may be served now
        COVERAGE["import" + (" with duplicates" if len(fresh) < len(names) else "")] += 1

    @rule(sku=st.sampled_from(SKUS), lot=st.sampled_from(LOTS))
    def void(self, sku: str, lot: str) -> None:
        self.begin()

        async def go() -> tuple[int, dict[str, Any]]:
            resp = await self.engine.http.delete(f"/admin/skus/{sku}/stock",
                                                 params={"lot": lot}, headers=auth(OPERATOR_KEY))
            return resp.status, await resp.json()

        status, answer = self.run(go())
        gone = self.stock.pop((sku, lot), [])
        self.voided[sku] += len(gone)
        self.voided_codes.update(gone)
        self.recalled.update(c for o in self.orders.values() if o.status == "held"
                             for c in o.codes if self.lot_of[c] == (sku, lot))
        self.voided_lots.add((sku, lot))
        assert status == 200, answer
        assert answer == {"sku": sku, "lot": lot, "voided": len(gone),
                          "available": self.available(sku)}, answer
        COVERAGE["void" + (" (empty)" if not gone else "")] += 1

    @precondition(lambda self: any(o.status == "held" and o.codes
                                   for o in self.orders.values()))
    @rule(data=st.data(), restock=st.lists(st.integers(0, POOL - 1), max_size=4))
    def recall_a_held_lot(self, data: st.DataObject, restock: list[int]) -> None:
        """A supplier recalls the lot a held order's codes came from, and maybe sends others
        (then a confirm swaps them in, or cancels the order when too few are left)."""
        held = [oid for oid, o in self.orders.items() if o.status == "held" and o.codes]
        order = self.orders[pick(data, held)]
        sku, lot = self.lot_of[order.codes[0]]
        self.void(sku, lot)
        fresh = [other for other in LOTS if (sku, other) not in self.voided_lots]
        if restock and fresh:
            self.import_codes(sku, fresh[0], restock)
        COVERAGE["recall of a held order's lot"] += 1

    # -- rules: orders --------------------------------------------------------------------------
    @rule(batch=st.lists(ORDER, min_size=1, max_size=3))
    def order_now(self, batch: list[tuple[str, dict[str, Any], str | None]]) -> None:
        """Up to three orders at once (one coalesced pipeline), wait_ms 0: each answered at
        once (202 pending) and decided by a later worker step."""
        self.begin()

        async def go() -> list[tuple[int, dict[str, Any]]]:
            return list(await asyncio.gather(
                *(self._post_order(sf, body, key, 0) for sf, body, key in batch)))

        answers = self.run(go())
        fresh: dict[tuple[str, str], list[int]] = {}
        for i, ((sf, body, key), (status, answer)) in enumerate(zip(batch, answers,
                                                                    strict=True)):
            expected, holder = self.expect_new(sf, body, key)
            if expected == "new" and key is not None:
                fresh.setdefault((sf, key), []).append(i)  # decided below, as a group
                continue
            order = self.check_answer(status, answer, sf, body, key, expected, holder)
            if order is not None:
                assert status == 202 and answer["status"] == "pending", (status, answer)
                self.quiet = False
        for (sf, key), group in fresh.items():
            self._settle_key(sf, key, [(batch[i][1], *answers[i]) for i in group])
        if len(batch) > 1:
            COVERAGE[f"orders at once: {len(batch)}"] += 1

    def _settle_key(self, storefront: str, key: str,
                    tries: list[tuple[dict[str, Any], int, dict[str, Any]]]) -> None:
        """Requests sent at once with one new key: one of them reserves it; the others with
        the same body get that order (202, or 200 as a replay), the others 409."""
        holders = {answer["order_id"] for _, _, answer in tries}
        assert len(holders) == 1, f"C5: one key, several orders {holders}"
        bodies = [body for body, status, _ in tries if status != 409]
        assert bodies, f"every request with key {key} was refused: {tries}"
        assert all(b == bodies[0] for b in bodies), f"C5: key {key} served two bodies"
        for body, status, answer in tries:
            if body == bodies[0]:
                assert status in (200, 202) and answer["status"] == "pending", (status, answer)
            else:
                assert status == 409 and answer["code"] == "idempotency_conflict", answer
        first = next(t for t in tries if t[1] != 409)
        self.register(first[1], first[2], storefront, bodies[0], key)
        self.quiet = False
        if len(tries) > 1:
            COVERAGE["one new key sent concurrently"] += 1

    @rule(order=ORDER)
    def order_served(self, order: tuple[str, dict[str, Any], str | None]) -> None:
        """The worker keeps up: the answer is the outcome, predicted exactly by the model."""
        self.serve(order)

    @rule(order=PAID_ORDER)
    def order_paid_with_points(self, order: tuple[str, dict[str, Any], str | None]) -> None:
        """order_served, with points for some or all of it (or too many)."""
        self.serve(order)

    def serve(self, order: tuple[str, dict[str, Any], str | None]) -> None:
        self.begin("worker")
        storefront, body, key = order
        sku, qty, buyer, tier = body["sku"], body["qty"], body["buyer"], body["tier"]
        # held for its payment when it has one; cash_due > 0 (no points for all of it) too
        hold = body["hold_s"] > 0 or PRICED.get(sku, 0) * qty > body["points"]
        if not self.quiet or body["points"]:
            # the prediction needs a quiet engine, and the model's wallet needs every earlier
            # decision settled before this reservation: the worker catches up first
            self.run(self._drain())
            self.run(self._observe())
            self.quiet = True
        expected, holder = self.expect_new(storefront, body, key)
        policy = self.policy[sku]

        async def go() -> tuple[int, dict[str, Any]]:
            post = asyncio.ensure_future(self._post_order(storefront, body, key, 2000))
            deadline = time.monotonic() + 10
            try:
                while not post.done():
                    assert time.monotonic() < deadline, "the order got no answer"
                    await self._drain()
                    await asyncio.sleep(0.002)
            finally:
                if not post.done():
                    post.cancel()
                    await asyncio.gather(post, return_exceptions=True)
            return await post

        status, answer = self.run(go())
        self.settled = True  # its decision (if final) was settled by the drain that made it
        made = self.check_answer(status, answer, storefront, body, key, expected, holder)
        if made is None:
            return
        limit = policy["buyer_limit"]
        if limit > 0 and limit - self.bought(sku, buyer) < qty:
            assert status == 409 and answer["code"] == "limit_exceeded", (status, answer)
        elif qty <= self.available(sku):
            assert status == 201, (status, answer)
            made.expect_codes = self.next_codes(sku, qty)
            if hold:
                assert answer["status"] == "held" and "codes" not in answer, answer
                assert answer["hold_expires_at"]
            else:
                assert answer["status"] == "fulfilled", answer
                assert answer["codes"] == made.expect_codes, "not the codes the model expects"
        elif policy["on_sold_out"] == "reject":
            assert status == 409 and answer["code"] == "sold_out", (status, answer)
        else:
            # the batch runs the line too (when there is stock): a ticket whose buyer is now
            # over a lowered limit is rejected there and leaves the line
            runs = limit > 0 and self.available(sku) > 0
            ahead = sum(1 for o in self.orders.values()
                        if o.sku == sku and o.status == "queued" and o.tier >= tier
                        and not (runs and limit - self.bought(sku, o.buyer) < o.qty))
            assert status == 202 and answer["status"] == "queued", (status, answer)
            assert answer["queue"]["reason"] == "sold_out"
            assert answer["queue"]["position"] == ahead + 1, (answer["queue"], ahead)

    @precondition(lambda self: any(o.key is not None for o in self.orders.values()))
    @rule(data=st.data(), same=st.booleans())
    def replay(self, data: st.DataObject, same: bool) -> None:
        """A retry with the key of an earlier order: the same body, or another one."""
        self.begin()
        keyed = [oid for oid, o in self.orders.items() if o.key is not None]
        order = self.orders[pick(data, keyed)]
        body = order.body()
        if not same:
            body = {**body, "buyer": "other" if body["buyer"] != "other" else "b1"}
        expected, holder = self.expect_new(order.storefront, body, order.key)
        status, answer = self.run(self._post_order(order.storefront, body, order.key, 0))
        self.check_answer(status, answer, order.storefront, body, order.key, expected, holder)

    @precondition(lambda self: bool(self.orders))
    @rule(data=st.data(), foreign=st.booleans())
    def cancel(self, data: st.DataObject, foreign: bool) -> None:
        held = [oid for oid, o in self.orders.items() if o.status == "held"]
        prefer_held = data.draw(st.booleans())  # holds are few: cancel them more often
        order = self.orders[pick(data, held if prefer_held and held else list(self.orders))]
        self.begin("none" if foreign else "cancel", order.order_id)
        who = OTHER[order.storefront] if foreign else order.storefront

        async def go() -> tuple[int, dict[str, Any]]:
            resp = await self.engine.http.delete(f"/v1/orders/{order.order_id}",
                                                 headers=auth(STOREFRONT_KEYS[who]))
            return resp.status, await resp.json()

        status, answer = self.run(go())
        if foreign:
            assert status == 404 and answer["code"] == "not_found", (status, answer)
            COVERAGE["cancel: foreign 404"] += 1
        elif order.status in ("pending", "queued", "held", "cancelled"):
            # (a DELETE of a cancelled order answers it again: DELETE is idempotent)
            assert status == 200 and answer["status"] == "cancelled", (status, answer)
            COVERAGE[f"cancel: {order.status}"] += 1
            if order.status == "held":
                self.quiet = False  # codes came back: the line may be served
        else:
            assert status == 409 and answer["code"] == "not_cancellable", (status, answer)
            COVERAGE[f"cancel: {order.status} refused"] += 1

    @precondition(lambda self: bool(self.orders))
    @rule(data=st.data(), foreign=st.booleans())
    def confirm(self, data: st.DataObject, foreign: bool) -> None:
        held = [oid for oid, o in self.orders.items() if o.status == "held"]
        prefer_held = data.draw(st.booleans())
        order = self.orders[pick(data, held if prefer_held and held else list(self.orders))]
        self.begin("none" if foreign else "confirm", order.order_id)
        who = OTHER[order.storefront] if foreign else order.storefront

        async def go() -> tuple[int, dict[str, Any]]:
            resp = await self.engine.http.post(f"/v1/orders/{order.order_id}/confirm",
                                               headers=auth(STOREFRONT_KEYS[who]))
            return resp.status, await resp.json()

        status, answer = self.run(go())
        if foreign:
            assert status == 404 and answer["code"] == "not_found", (status, answer)
            COVERAGE["confirm: foreign 404"] += 1
        elif order.status == "held" and any(c in self.recalled for c in order.codes):
            # recalled while held: swapped for codes of other lots, or cancelled when too few
            recalled = sum(c in self.recalled for c in order.codes)
            if self.available(order.sku) >= recalled:
                assert status == 200 and answer["status"] == "fulfilled", (status, answer)
                COVERAGE["confirm: recalled codes swapped"] += 1
            else:
                assert status == 409 and answer["code"] == "recalled", (status, answer)
                COVERAGE["confirm: recalled, nothing to swap: cancelled"] += 1
        elif order.status == "held":
            assert status == 200 and answer["status"] == "fulfilled", (status, answer)
            assert answer["codes"] == order.codes, "confirm showed other codes than were held"
            COVERAGE["confirm: held"] += 1
        else:
            assert status == 409 and answer["code"] == "not_held", (status, answer)
            COVERAGE[f"confirm: {order.status} refused"] += 1

    @rule(seconds=st.sampled_from([HOLD_S + 1, 1800 + 1]))
    def advance_clock(self, seconds: int) -> None:
        """Run the expiry sweep of every shard as if `seconds` had passed."""
        at = now_ms() + seconds * 1000
        due_holds = [o for o in self.orders.values()
                     if o.status == "held" and o.hold_expires_ms <= at]
        self.begin("sweep", at_ms=at)

        async def go() -> int:
            for shard in range(SHARDS):
                await ledger.expire_due(self.redis, shard, at)
            return sum([await sweep(self.redis, shard, at) for shard in range(SHARDS)])

        expired = self.run(go())
        for wallet in self.wallets.values():
            wallet.expire(at)
        if due_holds:
            self.quiet = False
        COVERAGE[f"clock +{seconds}s" + (" expired some" if expired else "")] += 1

    # -- rules: points ------------------------------------------------------------------------
    @rule(storefront=st.sampled_from(sorted(STOREFRONT_KEYS)), buyer=st.sampled_from(BUYERS),
          points=st.sampled_from([100, 300, 300, -50]), soon=st.booleans(),
          key=st.none() | st.sampled_from(("g1", "g2")))
    def grant(self, storefront: str, buyer: str, points: int, soon: bool,
              key: str | None) -> None:
        """POST /v1/buyers/{buyer}/points: a grant (a lot that never expires, or expires
        soon) or a deduction; a key used before answers its first result or 409 (P4)."""
        self.begin()
        self._grant(storefront, buyer, points, soon, key)

    @initialize(grants=st.lists(st.tuples(st.sampled_from(sorted(STOREFRONT_KEYS)),
                                          st.sampled_from(BUYERS),
                                          st.sampled_from([100, 300, 600])), max_size=4))
    def initial_points(self, grants: list[tuple[str, str, int]]) -> None:
        for storefront, buyer, points in grants:
            self._grant(storefront, buyer, points, False, None)

    def _grant(self, storefront: str, buyer: str, points: int, soon: bool,
               key: str | None) -> None:
        wallet = self.wallet(storefront, buyer)
        body = {"points": points, "reason": "model",
                "expires_at": rfc3339(self.soon_ms) if soon and points > 0 else None}

        async def go() -> tuple[int, dict[str, Any], bool]:
            headers = auth(STOREFRONT_KEYS[storefront])
            if key is not None:
                headers["Idempotency-Key"] = key
            resp = await self.engine.http.post(f"/v1/buyers/{buyer}/points", json=body,
                                               headers=headers)
            replayed = resp.headers.get("Idempotent-Replayed") == "true"
            return resp.status, await resp.json(), replayed

        status, answer, replayed = self.run(go())
        used = wallet.grant_keys.get(key) if key is not None else None
        if used is not None:
            if used == body:
                assert status == 201 and replayed, (status, answer)
                COVERAGE["points: replayed grant"] += 1
            else:
                assert status == 409 and answer["code"] == "idempotency_conflict", answer
                COVERAGE["points: key reused with another body"] += 1
            return
        if points > 0:
            wallet.grant(points, self.soon_ms if soon else NEVER)
            COVERAGE["points: grant" + (" expiring soon" if soon else "")] += 1
        elif not wallet.deduct(-points):
            assert status == 409 and answer["code"] == "insufficient_points", (status, answer)
            COVERAGE["points: deduction refused"] += 1
            return
        else:
            COVERAGE["points: deduction"] += 1
        assert status == 201 and not replayed, (status, answer)
        assert answer["balance"] == wallet.balance, (answer, wallet)
        if key is not None:
            wallet.grant_keys[key] = body

    # -- rules: coupons -----------------------------------------------------------------------
    @rule(storefront=st.sampled_from(sorted(STOREFRONT_KEYS)), buyer=st.sampled_from(BUYERS))
    def issue_coupon(self, storefront: str, buyer: str) -> None:
        """A coupon of the model's template: per_buyer 2, total 5 (K2)."""
        self.begin()
        mine = sum(1 for c in self.coupons if (c.storefront, c.buyer) == (storefront, buyer))

        async def go() -> tuple[int, dict[str, Any]]:
            resp = await self.engine.http.post(
                f"/v1/buyers/{buyer}/coupons", json={"template": COUPON_TEMPLATE["id"]},
                headers=auth(STOREFRONT_KEYS[storefront]))
            return resp.status, await resp.json()

        status, answer = self.run(go())
        if mine >= COUPON_TEMPLATE["per_buyer"] or len(self.coupons) >= COUPON_TEMPLATE["total"]:
            assert status == 409 and answer["code"] == "coupon_limit", (status, answer)
            COVERAGE["coupon: limit"] += 1
            return
        assert status == 201 and answer["status"] == "active", (status, answer)
        self.coupons.append(MCoupon(answer["code"], storefront, buyer))
        COVERAGE["coupon: issued"] += 1

    @precondition(lambda self: bool(self.coupons))
    @rule(data=st.data(), owner=st.booleans(), pay=st.sampled_from(("cash", "rest")),
          hold=st.booleans())
    def order_with_coupon(self, data: st.DataObject, owner: bool, pay: str,
                          hold: bool) -> None:
        """An order naming one of the coupons, by its owner or by someone else; paid in
        cash or with points for the rest. Admitted when the coupon is active (K1: a coupon
        an order holds serves no other), 409 coupon_invalid otherwise, nothing written."""
        coupon = self.coupons[data.draw(st.integers(0, len(self.coupons) - 1))]
        self.begin("worker")
        self.run(self._drain())  # the coupon's status as the model expects it, settled
        self.run(self._observe())
        self.quiet = self.settled = True
        buyer = coupon.buyer if owner else data.draw(st.sampled_from(
            [b for b in BUYERS if b != coupon.buyer]))
        rest = PRICE - COUPON_DISCOUNT if pay == "rest" else 0
        body = {**body_of("card-100", 1, buyer, 0, HOLD_S if hold else 0, rest),
                "coupons": [coupon.code]}
        usable = owner and self._coupon_status(coupon) == "active"
        if usable and rest > self.wallet(coupon.storefront, buyer).balance:
            body["points"] = rest = 0  # a wallet too short would be 409 insufficient_points
        status, answer = self.run(self._post_order(coupon.storefront, body, None, 0))
        if not usable:
            assert status == 409 and answer["code"] == "coupon_invalid", (status, answer)
            COVERAGE["coupon: refused in an order"] += 1
            return
        assert status in (201, 202), (status, answer)
        order = self.register(status, answer, coupon.storefront, body, None)
        coupon.order_id = order.order_id
        self.quiet = self.settled = False
        COVERAGE["coupon: in an order" + (" with points" if rest else "")] += 1

    @rule()
    def coupon_sweep(self) -> None:
        """The coupon sweep as if two days had passed: active coupons end (expired)."""
        self.begin("worker")
        self.run(self._drain())  # settled first: which coupons are active is then known
        self.run(self._observe())
        self.quiet = self.settled = True
        at = now_ms() + 2 * 86_400_000

        async def go() -> None:
            for shard in range(SHARDS):
                await coupons.sweep(self.redis, self.engine.settings, shard, at)

        before = {c.code: self._coupon_status(c) for c in self.coupons}
        self.run(go())
        for c in self.coupons:
            if before[c.code] == "active":
                c.ended = True
        COVERAGE["coupon: sweep"] += 1

    def _coupon_status(self, coupon: MCoupon) -> str:
        order = self.orders.get(coupon.order_id) if coupon.order_id else None
        return coupon.expected(order.status if order is not None else None)

    # -- rules: worker and faults ------------------------------------------------------------
    @rule()
    def worker_step(self) -> None:
        self.begin("worker")
        self.run(self._drain())
        self.quiet = True
        self.settled = True
        COVERAGE["worker step"] += 1

    @rule(how=st.sampled_from(["after read", "mid drain"]), n=st.integers(0, 40))
    def kill_worker(self, how: str, n: int) -> None:
        """The worker dies and a new one takes the shards over. "after read": it had read up
        to n+1 entries of each stream (XREADGROUP as its consumer) and claimed none; the
        next one reclaims them. "mid drain": it dies at an await point of a drain (the task
        is cancelled after n turns of the event loop)."""
        self.begin("worker")
        worker = self.worker
        assert worker is not None and self.follower is not None

        async def after_read() -> bool:
            read = 0
            for shard in range(SHARDS):
                try:
                    reply: Any = await self.redis.xreadgroup(
                        keys.GROUP, worker.worker_id, {keys.stream(shard): ">"}, count=n + 1)
                except ResponseError:  # NOGROUP: no worker took this shard yet
                    continue
                read += sum(len(entries) for _, entries in reply or [])
            return read > 0

        async def mid_drain() -> bool:
            await self.follower.check()
            task = asyncio.ensure_future(worker.drain())
            for _ in range(n):
                await asyncio.sleep(0)
            cut = not task.done()
            task.cancel()
            for result in await asyncio.gather(task, return_exceptions=True):
                if not isinstance(result, (int, asyncio.CancelledError)):
                    raise result  # the drain failed by itself before it was cut
            return cut

        async def go() -> bool:
            hit = await (after_read() if how == "after read" else mid_drain())
            await self._drop_worker()
            return hit

        hit = self.run(go())
        COVERAGE[f"kill {how}" + (" (something in flight)" if hit else "")] += 1

    @rule(kind=st.sampled_from(["script flush", "restart"]))
    def redis_fault(self, kind: str) -> None:
        """SCRIPT FLUSH (the engine loads its scripts again), or a clean restart of Redis
        (SIGTERM, AOF): nothing is lost and every client carries on."""
        self.begin()
        if kind == "restart" and os.environ.get("KAMIGATE_MODEL_RESTART", "1") == "0":
            kind = "script flush"
        if kind == "script flush":
            self.run(self.redis.script_flush())
        else:
            self.server.stop()
            self.server.start()
            self.run(self._after_restart())
        COVERAGE[f"redis {kind}"] += 1

    async def _after_restart(self) -> None:
        app = self.engine.http.server.app
        # a running process's event loop sees the old server's sockets close; the
        # connections notice that before their next command (engine/connection.py)
        await asyncio.sleep(0.2)
        # The front door's reply channel comes back by itself; wait until a reply reaches
        # it, so that the answers of order_served stay predictable. (Until then a reply is
        # lost and its order answers 202 pending after wait_ms, as the contract allows.)
        hub = app[REPLIES]
        probe = [["o_probe", "pending", 0, [], "", 0, 0]]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            waiter = hub.expect("o_probe")
            try:
                await self.redis.publish(hub.channel, msgspec.msgpack.encode(probe))
                await asyncio.wait_for(waiter, 0.2)
                return
            except (RedisError, OSError, TimeoutError):
                hub.forget("o_probe")
        raise AssertionError("the front door did not subscribe its reply channel again")

    @rule(sku=st.sampled_from(("card-100", "card-limited")), max_qty=st.integers(1, 10),
          buyer_limit=st.sampled_from([0, 1, 2, 3, 4]))
    def reload_config(self, sku: str, max_qty: int, buyer_limit: int) -> None:
        """PUT /admin/config with one SKU's max_qty and buyer_limit changed."""
        self.begin()
        switched_on = self.policy[sku]["buyer_limit"] == 0 and buyer_limit > 0
        policy = {s: {"max_qty": p["max_qty"], "buyer_limit": p["buyer_limit"]}
                  for s, p in self.policy.items()}
        policy[sku] = {"max_qty": max_qty, "buyer_limit": buyer_limit}
        document = model_config(policy)

        async def go() -> tuple[int, dict[str, Any]]:
            resp = await self.engine.http.put("/admin/config", json=document,
                                              headers=auth(ADMIN_KEY))
            return resp.status, await resp.json()

        status, answer = self.run(go())
        assert status == 200, answer
        shown = {s["id"]: s for s in answer["config"]["skus"]}[sku]
        assert (shown["max_qty"], shown["buyer_limit"]) == (max_qty, buyer_limit)
        self.policy[sku].update(max_qty=max_qty, buyer_limit=buyer_limit)
        COVERAGE["config reload" + (" (buyer limit switched on)" if switched_on else "")] += 1

    # -- invariants -------------------------------------------------------------------------
    # hypothesis runs invariants in the order of their names: inv_0_observe reads Redis once
    # per step and brings the model up to date; the others check the promises against it.

    @invariant()
    def inv_0_observe(self) -> None:
        self.run(self._observe())

    async def _observe(self) -> None:
        found: dict[str, records.OrderRecord] = {}
        for order_id in self.orders:
            record = await records.read(self.redis, order_id)
            assert record is not None, f"C4: admitted order {order_id} is lost"
            found[order_id] = record
        in_redis = 0
        for shard in range(SHARDS):
            async for _ in self.redis.scan_iter(match=keys.orders_pattern(shard), count=1000):
                in_redis += 1
        assert in_redis == len(self.orders), \
            f"C5: {in_redis} order records in Redis, the clients got {len(self.orders)} ids"
        returns: list[tuple[int, str, MOrder]] = []
        takes: list[tuple[MOrder, list[str]]] = []
        swaps: list[tuple[MOrder, list[str]]] = []  # codes that replaced recalled ones
        for order_id, record in found.items():
            order = self.orders[order_id]
            before, after = order.status, record.status
            assert after in LEGAL, f"C4: {order_id} has status {after!r}"
            if before != after:
                self._transition(order, before, after, record)
                COVERAGE[f"transition {before} -> {after}"] += 1
                self._codes_moved(order, before, after, record, returns, takes, swaps)
            elif after in ("held", "fulfilled"):
                assert record.codes == order.codes, f"C5: the codes of {order_id} changed"
        if self.step.kind == "sweep":
            for order_id, record in found.items():
                due = (record.status == "held" and record.hold_expires_ms <= self.step.at_ms) \
                    or (record.status == "queued" and record.queue_expires_ms <= self.step.at_ms)
                assert not due, f"{order_id} is {record.status} past its expiry after a sweep"
        for _, _, order in sorted(returns, key=lambda r: (r[0], r[1])):
            self._give_back(order.codes)
        self._take(takes)
        self._swap(swaps)
        for order_id, record in found.items():
            order = self.orders[order_id]
            order.status, order.codes = record.status, list(record.codes)
            order.hold_expires_ms = record.hold_expires_ms
            order.queue_expires_ms = record.queue_expires_ms
        await self._compare_stock()
        await self._observe_wallets()

    async def _observe_wallets(self) -> None:
        """The settlements since the last step, in the order of each wallet's history: a
        spend or a refund of an order's points, or what it earned (P2: each only when the
        order's status allows it, and once)."""
        for (storefront, buyer), wallet in self.wallets.items():
            w = ledger.wallet_keys(storefront, buyer, SHARDS)[1]
            seen = self.history_seen.get((storefront, buyer))
            entries: Any = await self.redis.xrange(
                w.history, min=f"({seen.decode()}" if seen else "-")
            for entry_id, fields in entries:
                self.history_seen[storefront, buyer] = entry_id
                kind, order_id = fields[b"k"].decode(), fields[b"o"].decode()
                if not order_id or kind not in ("spend", "refund", "grant"):
                    continue  # the model moved these itself (grants, deductions, reserves)
                order = self.orders[order_id]
                moved = order.reservation
                assert moved is not None, f"P2: points moved for {order_id}, which has none"
                if kind == "spend":
                    assert order.status == "fulfilled", f"P2: {order_id} spent {order.status}"
                    wallet.settle(moved, post=True)
                elif kind == "refund":
                    assert order.status in FINAL - {"fulfilled"}, \
                        f"P2: {order_id} given back while {order.status}"
                    wallet.settle(moved, post=False)
                else:
                    assert order.status == "fulfilled" and not moved.earned, \
                        f"P2: {order_id} earned points while {order.status} (or twice)"
                    wallet.earn(moved)
                COVERAGE[f"points: {kind} of an order"] += 1

    def _transition(self, order: MOrder, before: str, after: str,
                    record: records.OrderRecord) -> None:
        step, oid = self.step, order.order_id
        what = f"{oid}: {before} -> {after} in a {step.kind} step"
        assert before not in FINAL, f"C4: a final order changed: {what}"
        recalled = [c for c in order.codes if c in self.recalled]
        if after == "cancelled" and step.kind == "confirm":
            assert step.target == oid and before == "held" and recalled, what
            assert record.reason == "recalled", f"{what}: reason {record.reason!r}"
        elif after == "cancelled":
            assert step.kind == "cancel" and step.target == oid, what
        elif after == "expired":
            assert before in ("held", "queued") and step.kind == "sweep", what
        elif before == "held":
            assert after == "fulfilled" and step.kind == "confirm" and step.target == oid, what
            kept = [c for c in order.codes if c not in self.recalled]
            assert record.codes[:len(kept)] == kept and len(record.codes) == order.qty, \
                f"{oid}: confirmed with other codes than held (recalled: {recalled})"
        else:
            assert step.kind == "worker" and after != "pending", what
        if after in ("held", "fulfilled"):
            assert len(record.codes) == order.qty, f"C3: {oid} holds {len(record.codes)} codes"
            if order.expect_codes is not None and before != "held":
                assert record.codes == order.expect_codes, f"{oid}: not the predicted codes"
        if after == "rejected":
            assert record.reason in ("sold_out", "limit_exceeded"), record.reason

    def _codes_moved(self, order: MOrder, before: str, after: str,
                     record: records.OrderRecord, returns: list[tuple[int, str, MOrder]],
                     takes: list[tuple[MOrder, list[str]]],
                     swaps: list[tuple[MOrder, list[str]]]) -> None:
        """Where the order's change sends codes: back to their lots, out of them, or (a
        confirm after a recall) the recalled ones voided and others out in their place."""
        if before == "held" and after in ("cancelled", "expired"):
            returns.append((record.hold_expires_ms, order.order_id, order))
        if before in ("pending", "queued") and after in ("held", "fulfilled"):
            takes.append((order, record.codes))
        if before == "held" and after == "fulfilled":
            recalled = sum(c in self.recalled for c in order.codes)
            swaps.append((order, record.codes[len(record.codes) - recalled:]))

    def _swap(self, swaps: list[tuple[MOrder, list[str]]]) -> None:
        for order, replacements in swaps:
            for code in order.codes:
                if code in self.recalled:  # voided: never sold
                    self.voided[order.sku] += 1
                    self.voided_codes.add(code)
            self._take([(order, replacements)], purchase=False)

    def _give_back(self, codes: list[str]) -> None:
        """A held order ended: its codes go back to the front of their lots, in order; those
        of a lot voided meanwhile (a supplier recall) are voided, never sold again."""
        by_lot: dict[tuple[str, str], list[str]] = {}
        for code in codes:
            if code in self.recalled:
                self.voided[self.lot_of[code][0]] += 1
                self.voided_codes.add(code)
                continue
            by_lot.setdefault(self.lot_of[code], []).append(code)
        for lot, back in by_lot.items():
            self.stock[lot] = back + self.stock.get(lot, [])

    def _take(self, takes: list[tuple[MOrder, list[str]]], purchase: bool = True) -> None:
        """Codes left their lots in this step: from the front of each lot, and a lot only
        once every lot before it (by lot id) was empty. `purchase`: they count toward the
        buyer's limit (not so codes that replace recalled ones)."""
        by_lot: dict[tuple[str, str], list[str]] = {}
        for order, codes in takes:
            key = (order.sku, order.buyer)
            if purchase:
                self.took[key] = self.took.get(key, 0) + order.qty
            for code in codes:
                assert code not in self.voided_codes, "C2: a voided code was issued"
                assert code in self.lot_of, "C2: a code that was never imported was issued"
                lot = self.lot_of[code]
                assert lot[0] == order.sku, "C2: a code of another SKU was issued"
                by_lot.setdefault(lot, []).append(code)
        for lot, taken in by_lot.items():
            head = self.stock.get(lot, [])[: len(taken)]
            assert sorted(taken) == sorted(head), \
                f"codes left {lot} from elsewhere than the front of its list"
            self.stock[lot] = self.stock[lot][len(taken):]
        for sku, lot in by_lot:
            for other, codes in self.stock.items():
                if other[0] == sku and other[1] < lot:
                    assert not codes, f"{sku}: codes taken from {lot} while {other[1]} has some"

    async def _compare_stock(self) -> None:
        for sku in SKUS:
            shard = keys.shard_of_sku(sku, SHARDS)
            counts: Any = await self.redis.hgetall(keys.lots(sku, shard))
            counts = {k.decode(): int(v) for k, v in counts.items()}
            for lot in sorted(set(counts) | {lot for s, lot in self.stock if s == sku}):
                listed: Any = await self.redis.lrange(keys.lot_codes(sku, lot, shard), 0, -1)
                want = self.stock.get((sku, lot), [])
                assert [c.decode() for c in listed] == want, f"{sku}/{lot}: the lot's list"
                assert counts.get(lot, 0) == len(want), f"{sku}/{lot}: the lot's count"

    @invariant()
    def inv_c1_conservation(self) -> None:
        report = self.run(reconcile(self.redis, SHARDS, SKUS))
        assert report.ok, report.violations

    @invariant()
    def inv_c2_one_order_per_code(self) -> None:
        issued = [c for o in self.orders.values() if o.status in ("held", "fulfilled")
                  for c in o.codes]
        assert len(issued) == len(set(issued)), "C2: a code is in two orders"
        assert not set(issued) & self.voided_codes, "C2: a voided code is in an order"
        for order in self.orders.values():
            for code in order.codes:
                assert self.lot_of[code][0] == order.sku, "C2: a code of another SKU"

    @invariant()
    def inv_c3_no_oversell(self) -> None:
        levels = {level.sku: level for level in self.run(lots.levels(self.redis, SHARDS, SKUS))}
        for sku in SKUS:
            level = levels[sku]
            mine = [o for o in self.orders.values() if o.sku == sku]
            issued = sum(o.qty for o in mine if o.status == "fulfilled")
            held = sum(o.qty for o in mine if o.status == "held")
            model = (len(self.imported[sku]), self.voided[sku], issued, held, self.available(sku))
            counters = (level.imported, level.voided, level.issued, level.held, level.available)
            assert counters == model, \
                f"C3 {sku}: (imported, voided, issued, held, available) {counters} != {model}"
            assert issued + held <= len(self.imported[sku]) - self.voided[sku]
        self.run(self._check_bought())

    async def _check_bought(self) -> None:
        for sku in SKUS:
            in_redis = await book.purchases(self.redis, sku, keys.shard_of_sku(sku, SHARDS))
            model: dict[str, int] = {}
            for o in self.orders.values():
                if o.sku == sku and o.status in ("held", "fulfilled"):
                    model[o.buyer] = model.get(o.buyer, 0) + o.qty
            assert in_redis == model, f"{sku}: purchases per buyer {in_redis} != {model}"
            limit = self.policy[sku]["buyer_limit"]
            for (s, buyer), _ in self.took.items():
                if s == sku and limit > 0:
                    assert model.get(buyer, 0) <= limit, \
                        f"{sku}: {buyer} was served beyond the buyer limit {limit}"

    @invariant()
    def inv_c4_no_lost_order(self) -> None:
        if not self.quiet:
            return
        for order in self.orders.values():
            assert order.status != "pending", f"C4: {order.order_id} pending after a drain"
            if order.status == "queued":
                assert order.qty > self.available(order.sku), \
                    f"{order.order_id} waits in line although the stock could serve it"

    @invariant()
    def inv_c5_idempotency(self) -> None:
        async def check() -> None:
            for (storefront, key), (order_id, _) in self.idem.items():
                shard = keys.shard_of_idempotency(storefront, key, SHARDS)
                holder: Any = await self.redis.hget(keys.idempotency(shard, storefront, key), "o")
                assert holder is not None, f"C5: key {key} of {storefront} was dropped"
                # (a key refused for want of points holds an order id the client never saw)
                assert order_id is None or holder.decode() == order_id, \
                    f"C5: key {key} of {storefront} points at another order"

        self.run(check())
        for order_id, answer in self.replays:
            order = self.orders[order_id]
            assert answer["status"] == order.status, f"C5: a replay of {order_id} disagrees"
            if order.status == "fulfilled":
                assert answer["codes"] == order.codes, "C5: a replay showed other codes"
        self.replays = []

    @invariant()
    def inv_p1_p2_wallets(self) -> None:
        """P1: each wallet's counters and lots are the model's; P2: each order's reservation
        is in the state the model saw it reach, and settled once its order is decided after a
        worker step."""
        async def check() -> None:
            for (storefront, buyer), wallet in self.wallets.items():
                w = ledger.wallet_keys(storefront, buyer, SHARDS)[1]
                raw: Any = await self.redis.hgetall(w.counts)
                counts = {k.decode(): int(v) for k, v in raw.items()
                          if int(v) and k != b"lot_seq"}
                assert counts == wallet.counters(), \
                    f"P1 {storefront}/{buyer}: {counts} != {wallet.counters()}"
                states: Any = await self.redis.hgetall(w.reservations)
                mine = {o.order_id: o.reservation.state for o in self.orders.values()
                        if o.storefront == storefront and o.buyer == buyer
                        and o.reservation is not None and o.points}
                assert {k.decode(): v[:1].decode() for k, v in states.items()
                        if not k.startswith(b"c:")} == mine, \
                    f"P2 {storefront}/{buyer}: reservations differ from the model"
            if self.settled:
                report = await reconcile_points(self.redis, SHARDS)
                assert report.ok, report.violations

        self.run(check())
        if not self.settled:
            return
        for order in self.orders.values():
            moved = order.reservation
            if moved is None:
                continue
            if order.points:
                want = {"fulfilled": "S", "rejected": "V", "expired": "V",
                        "cancelled": "V"}.get(order.status, "R")
                assert moved.state == want, \
                    f"P2: {order.order_id} is {order.status}, its points {moved.state}"
            if order.status == "fulfilled":
                assert moved.earned == (moved.earn > 0), f"{order.order_id}: earned points"

    @invariant()
    def inv_k1_k3_coupons(self) -> None:
        """K2 always (never more issued than per_buyer and total allow); once settled, every
        coupon's status follows from its order's (K1: redeemed only by its fulfilled order;
        K3: no decided order holds one), and reconcile agrees."""
        async def check() -> None:
            for coupon in self.coupons:
                found = [c for c in await coupons.of_buyer(
                    self.redis, SHARDS, PLAIN, coupon.storefront,
                    coupon.buyer, now_ms(), None, 50) if c.code == coupon.code]
                assert len(found) == 1, f"K2: coupon {coupon.code} is not listed once"
                if self.settled:
                    want = self._coupon_status(coupon)
                    assert found[0].status == want or (want == "active" and coupon.ended), \
                        f"K1/K3: coupon {coupon.code} is {found[0].status}, expected {want}"
            if self.settled:
                report = await reconcile_coupons(self.redis, self.engine.settings)
                assert report.ok, report.violations

        assert len(self.coupons) <= COUPON_TEMPLATE["total"]
        self.run(check())

    @invariant()
    def inv_c6_isolation(self) -> None:
        async def check() -> None:
            for order in self.orders.values():
                foreign = STOREFRONT_KEYS[OTHER[order.storefront]]
                resp = await self.engine.http.get(f"/v1/orders/{order.order_id}",
                                                  headers=auth(foreign))
                body = await resp.json()
                assert resp.status == 404 and body["code"] == "not_found", \
                    f"C6: {order.storefront}'s order readable by the other storefront"

        self.run(check())


# A longer run than the default sets its own size; the suite's per-test timeout (300 s) would
# stop it mid-step, and hypothesis would then report a flaky strategy instead of the timeout.
# KAMIGATE_MODEL_TIMEOUT (seconds, 0 = none) bounds a long run instead.
LONG_RUN = "KAMIGATE_MODEL_EXAMPLES" in os.environ or "KAMIGATE_MODEL_STEPS" in os.environ
TIMEOUT_S = int(os.environ.get("KAMIGATE_MODEL_TIMEOUT", "0" if LONG_RUN else "300"))


@pytest.mark.timeout(TIMEOUT_S)
def test_model(redis_server: RedisProcess) -> None:
    EngineModel.server = redis_server
    COVERAGE.clear()
    started = time.monotonic()
    run_state_machine_as_test(EngineModel, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))
    print(f"\nmodel: {EXAMPLES} examples x {STEPS} steps in {time.monotonic() - started:.1f} s")
    for name, n in sorted(COVERAGE.items()):
        print(f"  {n:5d}  {name}")


# -- regressions: engine bugs the machine found ------------------------------------------------
# One small test per bug, each fixed since.


async def _put_skus(engine: Engine, **changes: Any) -> list[dict[str, Any]]:
    """PUT /admin/config with card-100 changed; the SKU list it sent."""
    skus = [dict(s) for s in settings_dict()["skus"]]
    skus[0].update(changes)
    resp = await engine.http.put("/admin/config", json=settings_dict(skus=skus),
                                 headers=auth(ADMIN_KEY))
    assert resp.status == 200, await resp.text()
    return skus


async def _void(engine: Engine, lot: str) -> tuple[int, dict[str, Any]]:
    resp = await engine.http.delete("/admin/skus/card-100/stock", params={"lot": lot},
                                    headers=auth(OPERATOR_KEY))
    return resp.status, await resp.json()


async def test_void_of_a_lot_with_no_code_left(engine_factory: EngineFactory) -> None:
    """void.lua sent HINCRBY by -n; for n = 0 Lua sends "-0", which Redis refuses: the script
    failed after its first write and the door answered 503."""
    engine = await engine_factory(worker=False)
    await engine.import_codes("card-100", ["E-1", "E-2"])
    assert await _void(engine, "lot1") == (200, {"sku": "card-100", "lot": "lot1", "voided": 2,
                                                 "available": 0})
    # the same recall sent twice, and a lot that never existed: nothing to void, not an error
    assert await _void(engine, "lot1") == (200, {"sku": "card-100", "lot": "lot1", "voided": 0,
                                                 "available": 0})
    assert (await _void(engine, "nope"))[0] == 200


async def test_replay_after_max_qty_lowered_returns_the_order(engine: Engine) -> None:
    """The qty check ran before the Idempotency-Key lookup: once max_qty was lowered, a retry of
    an order already fulfilled answered 422 instead of the order and its codes (C5)."""
    await engine.import_codes("card-100", ["R-1", "R-2", "R-3"])
    status, first = await engine.order(qty=3, idempotency_key="r-1")
    assert status == 201 and first["status"] == "fulfilled"
    await _put_skus(engine, max_qty=2)
    status, again = await engine.order(qty=3, idempotency_key="r-1")
    assert status == 200, again
    assert again["order_id"] == first["order_id"] and again["codes"] == first["codes"]


async def test_buyer_limit_switched_on_counts_earlier_purchases(engine: Engine) -> None:
    """While a SKU had no buyer_limit the worker never read purchases, yet counted each fill
    into its cached `bought` from 0; once a limit was set it trusted those partial counts."""
    await engine.import_codes("card-100", ["B-1", "B-2"])
    assert (await engine.order(qty=2, buyer="x"))[0] == 201
    # an import makes the worker read the SKU's stock anew (its cached purchases start at 0)
    await engine.import_codes("card-100", ["B-3", "B-4", "B-5"], lot="lot2")
    assert (await engine.order(qty=1, buyer="x"))[0] == 201  # x has 3 codes now
    skus = await _put_skus(engine, buyer_limit=3)
    assert engine.worker is not None
    engine.worker.use(make_settings(skus=skus))  # what the worker's config follower does
    status, body = await engine.order(qty=1, buyer="x")
    assert status == 409 and body["code"] == "limit_exceeded", (status, body)


async def test_held_codes_of_a_voided_lot_are_not_sold_again(engine: Engine,
                                                             redis: Redis) -> None:
    """Codes held when their lot was voided (a supplier recall) went back to the lot when the
    hold ended, and were sold to the next order."""
    await engine.import_codes("card-100", ["V-1", "V-2"])
    status, held = await engine.order(qty=1, hold_s=60)
    assert status == 201 and held["status"] == "held"
    assert await _void(engine, "lot1") == (200, {"sku": "card-100", "lot": "lot1", "voided": 1,
                                                 "available": 0})
    resp = await engine.http.delete(f"/v1/orders/{held['order_id']}", headers=auth(SHOP_A_KEY))
    assert resp.status == 200
    status, later = await engine.order(qty=1)
    assert status == 202 and later["status"] == "queued", later
    [level] = await lots.levels(redis, SHARDS, ["card-100"])
    assert (level.available, level.voided) == (0, 2)


async def test_held_codes_of_a_voided_lot_stay_voided_when_the_lot_id_is_reused(
        engine: Engine, redis: Redis) -> None:
    """An import into the voided lot id used to clear its recall mark, so codes held at the
    recall went back on sale; a voided lot id is now refused for imports (409 lot_voided)."""
    await engine.import_codes("card-100", ["W-1", "W-2"])
    status, held = await engine.order(qty=1, hold_s=60)
    assert status == 201 and held["status"] == "held"
    assert (await _void(engine, "lot1"))[1]["voided"] == 1
    resp = await engine.http.post("/admin/skus/card-100/stock", data="W-3",
                                  params={"lot": "lot1"},
                                  headers={**auth(OPERATOR_KEY), "Content-Type": "text/plain"})
    assert resp.status == 409 and (await resp.json())["code"] == "lot_voided"
    await engine.import_codes("card-100", ["W-3"], lot="lot2")  # a new delivery, a new lot id
    resp = await engine.http.delete(f"/v1/orders/{held['order_id']}", headers=auth(SHOP_A_KEY))
    assert resp.status == 200
    [level] = await lots.levels(redis, SHARDS, ["card-100"])
    assert (level.available, level.voided) == (1, 2), "the recalled code is on sale again"


async def test_reconcile_accepts_one_code_text_in_two_skus(engine_factory: EngineFactory,
                                                           redis: Redis) -> None:
    """reconcile kept one code -> place map for all SKUs while imports dedupe per SKU: one code
    text imported for two SKUs was reported as a C2 violation."""
    engine = await engine_factory(worker=False)
    await engine.import_codes("card-100", ["SAME-1"])
    await engine.import_codes("card-limited", ["SAME-1"])
    report = await reconcile(redis, SHARDS, SKUS)
    assert report.ok, report.violations


async def _admit_twice(engine: Engine, redis: Redis, drain_between: bool) -> StreamOrder:
    """The race of two requests at once with one new Idempotency-Key: B finds the key reserved
    and no record yet and re-admits; its admit reaches Redis before A's first one, e.g. when A's
    waits for the NOSCRIPT round trip after a SCRIPT FLUSH or a Redis restart, or A is on a
    slower front door. Over HTTP, 3000 rounds of SCRIPT FLUSH + two same-key POSTs at once
    admitted 4 orders twice, when admit.lua looked for a record only on a re-admit."""
    shard = keys.shard_of_sku("card-100", SHARDS)
    order = StreamOrder(keys.new_order_id(shard), "shop-a", "card-100", 2, "b1", 0, now_ms())
    ingest = Ingest(redis, SHARDS)
    worker = Worker(engine.settings, redis, redis)
    assert (await ingest.admit(order, shard)).status == "pending"  # B
    if drain_between:
        await worker.drain()
    await ingest.admit(order, shard)  # A
    await worker.drain()
    return order


async def _filled_once(redis: Redis, order: StreamOrder, codes: list[str]) -> None:
    record = await records.read(redis, order.order_id)
    assert record is not None and record.status == "fulfilled"
    [level] = await lots.levels(redis, SHARDS, ["card-100"])
    assert (level.issued, level.available) == (2, 2), "the order was filled twice"
    assert record.codes == codes, "the order's codes changed"
    report = await reconcile(redis, SHARDS, ["card-100"])
    assert report.ok, report.violations


async def test_an_order_admitted_twice_is_filled_once(engine_factory: EngineFactory,
                                                      redis: Redis) -> None:
    """Both entries of an order admitted twice were in one batch and claim.lua filled it twice:
    the record kept the second codes, the first were counted issued and belonged to no order."""
    engine = await engine_factory(worker=False)
    await engine.import_codes("card-100", ["T-1", "T-2", "T-3", "T-4"])
    order = await _admit_twice(engine, redis, drain_between=False)
    await _filled_once(redis, order, ["T-1", "T-2"])


async def test_an_order_admitted_twice_is_filled_once_across_batches(
        engine_factory: EngineFactory, redis: Redis) -> None:
    engine = await engine_factory(worker=False)
    await engine.import_codes("card-100", ["U-1", "U-2", "U-3", "U-4"])
    order = await _admit_twice(engine, redis, drain_between=True)
    await _filled_once(redis, order, ["U-1", "U-2"])


async def test_client_carries_on_after_a_redis_restart(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path / "redis", port=free_port())
    server.start()
    client = connection.client(server.url)
    try:
        assert await client.ping()
        server.stop()
        server.start()
        await asyncio.sleep(0.2)  # the loop runs on meanwhile, as in any running process
        assert await client.ping()
    finally:
        await client.aclose()
        server.stop()

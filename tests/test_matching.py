"""The matching rules, one example each, run against both kernels (DESIGN.md section 4)."""

from __future__ import annotations

import collections
import copy
import os
import subprocess
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from engine.worker import matching
from engine.worker.matching_types import (
    FILL,
    LIMIT_EXCEEDED,
    NO_REASON,
    QUEUE,
    REJECT,
    SOLD_OUT,
    Decision,
    Lot,
    MatchOrder,
    SkuBook,
)

Kernel = Callable[[Sequence[MatchOrder], Mapping[str, SkuBook]], list[Decision]]

NO_C = matching.match_batch_c is None
KERNELS = [
    pytest.param(matching.match_batch_py, id="py"),
    pytest.param(
        matching.match_batch_c,
        id="c",
        marks=pytest.mark.skipif(NO_C, reason="compiled kernel not built"),
    ),
]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=KERNELS)
def match(request: pytest.FixtureRequest) -> Kernel:
    kernel: Kernel = request.param
    return kernel


def order(oid: str, qty: int = 1, tier: int = 0, arrival: int = 0, buyer: str = "b",
          sku: str = "s") -> MatchOrder:
    return MatchOrder(oid, sku, qty, tier, arrival, buyer)


def book(*lots: Lot, reject: bool = False, limit: int = 0,
         allowances: dict[str, int] | None = None) -> SkuBook:
    return SkuBook(list(lots), reject, limit, allowances)


def fill(*fills: tuple[str, int]) -> Decision:
    return Decision(FILL, NO_REASON, list(fills))


QUEUED = Decision(QUEUE, SOLD_OUT, [])
SOLD_OUT_REJECTED = Decision(REJECT, SOLD_OUT, [])
OVER_LIMIT = Decision(REJECT, LIMIT_EXCEEDED, [])


def test_empty_batch(match: Kernel) -> None:
    assert match([], {}) == []
    assert match([], {"s": book(Lot("l", 3, 0))}) == []


def test_tier_first_then_arrival(match: Kernel) -> None:
    orders = [order("late", arrival=2), order("vip", tier=1, arrival=9), order("early", arrival=1)]
    assert match(orders, {"s": book(Lot("l", 2, 0))}) == [QUEUED, fill(("l", 1)), fill(("l", 1))]


def test_ticket_keeps_its_arrival(match: Kernel) -> None:
    # The worker puts waiting tickets first or last; only their arrival decides.
    orders = [
        order("new", arrival=50),
        order("new-vip", tier=2, arrival=60),
        order("ticket", arrival=10),
    ]
    decisions = match(orders, {"s": book(Lot("l", 2, 0))})
    assert decisions == [QUEUED, fill(("l", 1)), fill(("l", 1))]


def test_input_order_breaks_full_ties(match: Kernel) -> None:
    orders = [order(f"o{i}", arrival=7) for i in range(4)]
    assert match(orders, {"s": book(Lot("l", 2, 0))}) == [fill(("l", 1))] * 2 + [QUEUED] * 2


def test_allowance_spans_the_batch(match: Kernel) -> None:
    orders = [
        order("a1", qty=2, arrival=1, buyer="ann"),
        order("a2", qty=2, arrival=2, buyer="ann"),  # 1 left of 3: over the limit
        order("a3", qty=1, arrival=3, buyer="ann"),  # fits the 1 left
        order("a4", qty=1, arrival=4, buyer="ann"),  # nothing left
        order("b1", qty=3, arrival=5, buyer="bob"),  # not in the map: full buyer_limit
        order("c1", qty=1, arrival=6, buyer="cat"),  # bought out in earlier batches
    ]
    books = {"s": book(Lot("l", 100, 0), limit=3, allowances={"ann": 3, "cat": 0})}
    assert match(orders, books) == [
        fill(("l", 2)), OVER_LIMIT, fill(("l", 1)), OVER_LIMIT, fill(("l", 3)), OVER_LIMIT,
    ]
    assert books["s"].allowances == {"ann": 3, "cat": 0}, "the caller's map is not touched"


def test_allowances_are_per_sku_and_none_is_unlimited(match: Kernel) -> None:
    orders = [
        order("x1", qty=2, buyer="ann", sku="x"),
        order("y1", qty=2, buyer="ann", sku="y"),
        order("x2", qty=9, buyer="ann", sku="free", arrival=1),
    ]
    books = {
        "x": book(Lot("xl", 5, 0), limit=2, allowances={}),
        "y": book(Lot("yl", 5, 0), limit=2, allowances={}),
        "free": book(Lot("fl", 9, 0), limit=1, allowances=None),
    }
    assert match(orders, books) == [fill(("xl", 2)), fill(("yl", 2)), fill(("fl", 9))]


def test_limit_is_checked_before_stock(match: Kernel) -> None:
    orders = [order("o", qty=2, buyer="ann")]
    assert match(orders, {"s": book(limit=1, allowances={})}) == [OVER_LIMIT]


def test_lots_soonest_expiry_first_never_last_then_lot_id(match: Kernel) -> None:
    lots = (
        Lot("b", 1, 200),
        Lot("never", 5, 0),
        Lot("a", 1, 200),  # ties with "b" on expiry: lot id decides
        Lot("soon", 1, 100),
        Lot("empty", 0, 50),  # no stock: skipped
        Lot("owed", -2, 40),  # negative counts are skipped too
    )
    orders = [order("first", qty=4, arrival=1), order("second", qty=2, arrival=2)]
    assert match(orders, {"s": book(*lots)}) == [
        fill(("soon", 1), ("a", 1), ("b", 1), ("never", 1)),
        fill(("never", 2)),
    ]


def test_order_spans_lots_and_picks_up_a_part_used_lot(match: Kernel) -> None:
    orders = [order("o1", qty=2, arrival=1), order("o2", qty=3, arrival=2),
              order("o3", qty=1, arrival=3)]
    assert match(orders, {"s": book(Lot("l1", 3, 10), Lot("l2", 3, 20))}) == [
        fill(("l1", 2)), fill(("l1", 1), ("l2", 2)), fill(("l2", 1)),
    ]


def test_no_head_of_line_blocking(match: Kernel) -> None:
    orders = [order("big", qty=3, arrival=1), order("small", qty=2, arrival=2),
              order("one", qty=1, arrival=3)]
    assert match(orders, {"s": book(Lot("l", 2, 0))}) == [QUEUED, fill(("l", 2)), QUEUED]


def test_sold_out_queues_or_rejects_per_sku(match: Kernel) -> None:
    orders = [order("q", sku="queue"), order("r", sku="reject"), order("u", sku="unknown")]
    books = {"queue": book(), "reject": book(reject=True)}
    assert match(orders, books) == [QUEUED, SOLD_OUT_REJECTED, QUEUED]


def test_skus_are_independent(match: Kernel) -> None:
    orders = [order("a", sku="a", tier=1), order("b", sku="b"), order("a2", sku="a", arrival=1)]
    books = {"a": book(Lot("la", 1, 0)), "b": book(Lot("lb", 1, 0))}
    assert match(orders, books) == [fill(("la", 1)), fill(("lb", 1)), QUEUED]


def test_deterministic_and_inputs_untouched(match: Kernel) -> None:
    orders = [order(f"o{i}", qty=1 + i % 3, tier=i % 2, arrival=100 - i, buyer=f"b{i % 4}",
                    sku="xy"[i % 2]) for i in range(40)]
    books = {
        "x": book(Lot("x1", 7, 30), Lot("x2", 9, 0), limit=4, allowances={"b1": 1}),
        "y": book(Lot("y1", 12, 0), reject=True),
    }
    before = copy.deepcopy((orders, books))
    first = match(orders, books)
    assert match(orders, books) == first
    assert match(*copy.deepcopy((orders, books))) == first
    assert (orders, books) == before


def test_each_fill_has_its_own_list(match: Kernel) -> None:
    decisions = match([order(f"o{i}", arrival=i) for i in range(5)], {"s": book(Lot("l", 9, 0))})
    assert len({id(d.fills) for d in decisions}) == 5


def test_qty_below_one_is_refused(match: Kernel) -> None:
    books = {"s": book(Lot("l", 5, 0))}
    for qty in (0, -3):
        with pytest.raises(ValueError, match="at least 1"):
            match([order("ok"), order("bad", qty=qty)], books)


def test_batches_do_not_leak_into_each_other(match: Kernel) -> None:
    # The compiled kernel keeps its arrays between calls: nothing of a call may survive it.
    a = ([order("a1", qty=2), order("a2", buyer="z", arrival=1)],
         {"s": book(Lot("l", 3, 0), limit=2, allowances={})})
    b = ([order("b1", sku="t", qty=3), order("b2", buyer="z")],
         {"t": book(Lot("m", 3, 5)), "s": book(Lot("l", 1, 0), limit=1, allowances={"z": 1})})
    first = match(*a)
    assert match(*b) == [fill(("m", 3)), fill(("l", 1))]
    assert match(*a) == first == [fill(("l", 2)), fill(("l", 1))]


def test_bigger_batch_matches_the_twin(match: Kernel) -> None:
    # Past the small-batch sort, and with keys too wide for 64 bits (the merge sort).
    orders = [order(f"o{i}", qty=1 + i % 2, tier=i % 3, arrival=(i * 7919) % 1000,
                    buyer=f"b{i % 50}", sku=f"s{i % 5}") for i in range(300)]
    books = {f"s{k}": book(Lot(f"l{k}a", 40, 100), Lot(f"l{k}b", 30, 0), limit=3,
                           allowances={"b1": 0} if k % 2 else None, reject=k == 3)
             for k in range(4)}
    assert match(orders, books) == matching.match_batch_py(orders, books)
    wide = [o._replace(arrival=o.arrival * 2**52 - 2**62) for o in orders]
    assert match(wide, books) == matching.match_batch_py(wide, books)


class OtherOrder(MatchOrder):
    """A subclass: not the exact vocabulary type, so the compiled kernel hands it over."""


@pytest.mark.parametrize(
    "case",
    [
        "huge_qty", "huge_count", "huge_allowance", "huge_arrival", "subclass",
        "mapping_proxy", "tuple_orders", "deque_orders", "lot_tuple", "int_buyer", "none_book",
    ],
)
def test_unusual_inputs_give_the_twins_answer(match: Kernel, case: str) -> None:
    orders: Any = [order("o1", qty=2, buyer="ann", arrival=1), order("o2", qty=3, buyer="bo")]
    books: Any = {"s": book(Lot("l", 4, 0), Lot("m", 2, 9), limit=4, allowances={"ann": 2})}
    if case == "huge_qty":
        orders[1] = orders[1]._replace(qty=2**80)
    elif case == "huge_count":
        books["s"] = books["s"]._replace(lots=[Lot("l", 2**64, 0), Lot("m", 2**63 - 1, 1)])
    elif case == "huge_allowance":
        books["s"].allowances["ann"] = 2**70
    elif case == "huge_arrival":
        orders[0] = orders[0]._replace(arrival=-(2**90))
    elif case == "subclass":
        orders[0] = OtherOrder(*orders[0])
    elif case == "mapping_proxy":
        books = types.MappingProxyType(books)
    elif case == "tuple_orders":
        orders = tuple(orders)
    elif case == "deque_orders":
        orders = collections.deque(orders)
    elif case == "lot_tuple":
        books["s"] = books["s"]._replace(lots=tuple(books["s"].lots))
    elif case == "int_buyer":
        orders[1] = orders[1]._replace(buyer=7)
    elif case == "none_book":
        books["t"] = None
        orders.append(order("o3", sku="t"))
    assert match(orders, books) == matching.match_batch_py(orders, books)


def test_compiled_kernel_loaded() -> None:
    if os.environ.get("KAMIGATE_NO_EXTENSIONS"):
        pytest.skip("KAMIGATE_NO_EXTENSIONS is set: the pure twin is expected")
    assert matching.IMPLEMENTATION == "compiled", (
        f"{matching.describe()}; build it with `python setup.py build_ext --inplace`"
    )
    assert matching.match_batch is matching.match_batch_c


def test_no_extensions_env_picks_the_twin() -> None:
    env = {**os.environ, "KAMIGATE_NO_EXTENSIONS": "1"}
    code = (
        "from engine.worker import matching; "
        "print(matching.IMPLEMENTATION, matching.match_batch is matching.match_batch_py)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
        check=True, timeout=60,
    )
    assert out.stdout.split() == ["python", "True"]

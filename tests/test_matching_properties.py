"""Property tests: the two kernels agree on any batch, and the plan never breaks the rules.

KAMIGATE_HYPOTHESIS_EXAMPLES raises the number of examples (300 by default, for CI).
"""

from __future__ import annotations

import copy
import os
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.worker import matching
from engine.worker.matching_py import match_batch as match_batch_py
from engine.worker.matching_types import (
    FILL,
    LIMIT_EXCEEDED,
    NO_REASON,
    QUEUE,
    REJECT,
    SOLD_OUT,
    Lot,
    MatchOrder,
    SkuBook,
)

EXAMPLES = int(os.environ.get("KAMIGATE_HYPOTHESIS_EXAMPLES", "300"))
PROFILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SKUS = ["a", "b", "c", "é-unicode", "missing"]  # "missing" never has a book
EXPIRIES = [0, 0, 100, 100, 200, 2**40]  # repeated values make expiry ties

INT64 = st.integers(-(2**63), 2**63 - 1)
# Per batch, how wide the numbers go: small; large but within 64 bits (still the C path, and
# tiers or arrivals this wide take its merge sort instead of the radix sort); or past 64 bits
# now and then, where the compiled kernel hands the batch to the twin.
QTYS = [st.integers(1, 3), st.integers(1, 40), st.integers(1, 2**62) | st.just(2**63 - 1)]
COUNTS = [st.integers(-2, 6), st.integers(0, 60), st.integers(0, 2**58)]
TIERS = [st.integers(0, 2), st.integers(0, 9), INT64]
ARRIVALS = [
    st.integers(0, 50), st.integers(0, 10**9), INT64,
    st.integers(0, 99).map(lambda a: a << 12),  # low bits all equal: sort passes get skipped
]
ALLOWANCES = [st.integers(-2, 8), st.integers(-2, 8), st.integers(0, 2**62)]
PAST_64_BITS = st.integers(2**63, 2**70) | st.integers(-(2**70), -(2**63) - 1)


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[MatchOrder], dict[str, SkuBook]]:
    """Orders over a few SKUs, with their books: lots, policies and allowances."""
    qtys, counts, tiers, arrivals, allowance_values = (
        draw(st.sampled_from(choices)) for choices in (QTYS, COUNTS, TIERS, ARRIVALS, ALLOWANCES)
    )
    if draw(st.integers(0, 9)) == 0:
        qtys = qtys | PAST_64_BITS.filter(lambda q: q > 0)
        counts = counts | PAST_64_BITS
        arrivals = arrivals | PAST_64_BITS
    n_buyers = draw(st.sampled_from([1, 3, 40]))
    buyers = [f"buyer-{i}" for i in range(n_buyers)]
    books: dict[str, SkuBook] = {}
    for sku in SKUS[:-1]:
        lot_ids = st.sampled_from([f"{sku}-l{i}" for i in range(6)])  # duplicates happen
        lots = draw(st.lists(st.builds(Lot, lot_ids, counts, st.sampled_from(EXPIRIES)),
                             max_size=8))
        limited = draw(st.booleans())
        allowances = (
            draw(st.dictionaries(st.sampled_from(buyers), allowance_values, max_size=n_buyers))
            if limited else None
        )
        books[sku] = SkuBook(lots, draw(st.booleans()), draw(st.integers(-1, 6)), allowances)
    size = draw(st.integers(0, 80))  # drawn first, so sizes spread rather than stay small
    orders = draw(st.lists(
        st.builds(
            MatchOrder, st.just("order"), st.sampled_from(SKUS), qtys, tiers, arrivals,
            st.sampled_from(buyers),
        ),
        min_size=size, max_size=size,
    ))
    return orders, books


@pytest.mark.skipif(matching.match_batch_c is None, reason="compiled kernel not built")
@settings(PROFILE, max_examples=max(10, EXAMPLES // 10))
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from([33, 100, 1000, 5000]),
    st.sampled_from([1, 7, 300]),
    st.sampled_from([0, 4, 8, 13, 40]),
)
def test_twins_agree_on_big_batches(seed: int, n: int, n_skus: int, spacing: int) -> None:
    """Batches too big to draw element by element: built from a seed instead. `spacing`
    shifts tiers and arrivals left, so their low bits are equal and the kernel's sort sees
    digits of every kind (all equal, varying only in some bits)."""
    rng = random.Random(seed)
    skus = [f"sku-{k}" for k in range(n_skus)]
    buyers = [f"buyer-{b}" for b in range(rng.choice([1, 20, n]))]
    tier_top = rng.choice([0, 2, 9])
    orders = [
        MatchOrder(
            f"o{i}", rng.choice(skus), rng.choice([1, 1, 1, 2, 5]),
            rng.randint(0, tier_top) << min(spacing, 40), rng.randint(0, n) << spacing,
            rng.choice(buyers),
        )
        for i in range(n)
    ]
    books = {}
    for sku in skus[: n_skus - 1]:  # the last SKU has no book
        lots = [Lot(f"{sku}-{j}", rng.randint(-1, n // n_skus + 2), rng.choice(EXPIRIES))
                for j in range(rng.randint(0, 4))]
        allowances = ({b: rng.randint(-1, 3) for b in rng.sample(buyers, len(buyers) // 3)}
                      if rng.random() < 0.5 else None)
        books[sku] = SkuBook(lots, rng.random() < 0.3, rng.randint(0, 4), allowances)
    assert matching.match_batch_c is not None
    assert matching.match_batch_c(orders, books) == match_batch_py(orders, books)


def _path(orders: list[MatchOrder], books: dict[str, SkuBook]) -> str:
    """Which way the compiled kernel goes, for the statistics (--hypothesis-show-statistics)."""
    ints = [v for o in orders for v in (o.qty, o.tier, o.arrival)]
    for b in books.values():
        ints += [lot.count for lot in b.lots] + [sum(lot.count for lot in b.lots if lot.count > 0)]
        ints += list((b.allowances or {}).values())
    if any(not -(2**63) <= v < 2**63 for v in ints):
        return "twin (past 64 bits)"
    if not orders:
        return "empty"
    span = sum(max(v) - min(v) for v in ([o.tier for o in orders], [o.arrival for o in orders]))
    return "compiled, merge sort" if span >= 2**40 else "compiled, radix sort"


@pytest.mark.skipif(matching.match_batch_c is None, reason="compiled kernel not built")
@PROFILE
@given(batches())
def test_twins_agree(batch: tuple[list[MatchOrder], dict[str, SkuBook]]) -> None:
    orders, books = batch
    event(_path(orders, books))
    assert matching.match_batch_c is not None
    assert matching.match_batch_c(orders, books) == match_batch_py(orders, books)


@pytest.mark.skipif(matching.match_batch_c is None, reason="compiled kernel not built")
@PROFILE
@given(batches(), st.integers(-5, 0), st.data())
def test_twins_refuse_the_same_batches(
    batch: tuple[list[MatchOrder], dict[str, SkuBook]], bad_qty: int, data: st.DataObject
) -> None:
    orders, books = batch
    at = data.draw(st.integers(0, len(orders)))
    orders.insert(at, MatchOrder("bad", "a", bad_qty, 0, 0, "buyer-0"))
    assert matching.match_batch_c is not None
    for kernel in (match_batch_py, matching.match_batch_c):
        with pytest.raises(ValueError, match="at least 1"):
            kernel(orders, books)


@PROFILE
@given(batches())
def test_plan_keeps_the_rules(batch: tuple[list[MatchOrder], dict[str, SkuBook]]) -> None:
    orders, books = batch
    before = copy.deepcopy(batch)
    decisions = match_batch_py(orders, books)
    assert batch == before, "inputs are not mutated"
    assert len(decisions) == len(orders), "every order gets exactly one decision"

    taken: Counter[tuple[str, str]] = Counter()
    bought: Counter[tuple[str, str]] = Counter()
    for o, d in zip(orders, decisions, strict=True):
        book = books.get(o.sku)
        if d.action == FILL:
            assert d.reason == NO_REASON
            assert sum(n for _, n in d.fills) == o.qty, "a fill is whole"
            assert all(n > 0 for _, n in d.fills)
            for lot_id, n in d.fills:
                taken[o.sku, lot_id] += n
            bought[o.sku, o.buyer] += o.qty
        else:
            assert d.fills == []
            assert (d.action, d.reason) in {(QUEUE, SOLD_OUT), (REJECT, SOLD_OUT),
                                            (REJECT, LIMIT_EXCEEDED)}
            if d.reason == LIMIT_EXCEEDED:
                assert book is not None and book.allowances is not None
            elif d.action == QUEUE:
                assert book is None or not book.reject_when_sold_out
            else:
                assert book is not None and book.reject_when_sold_out

    for (sku, lot_id), n in taken.items():
        stock = sum(lot.count for lot in books[sku].lots if lot.lot_id == lot_id and lot.count > 0)
        assert n <= stock, f"lot {lot_id} of {sku} over-drawn"
    for (sku, buyer), n in bought.items():
        book = books[sku]
        if book.allowances is not None:
            assert book.allowances.get(buyer, book.buyer_limit) - n >= 0, "allowance below 0"

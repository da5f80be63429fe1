"""The matching kernel's speed: both implementations, batch sizes 64 to 4096, 1 to 1000 SKUs.

    pytest bench/test_matching.py --benchmark-only                # time them
    pytest bench/test_matching.py --benchmark-disable             # just check they run

Each case times the whole call, from the decoded batch (MatchOrder tuples and SkuBooks) to
the list of Decisions, input conversion included, with the collector on as in the engine.
The result is checked against the pure twin's after timing.
"""

from __future__ import annotations

import functools

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bench.data import make_batch
from engine.worker import matching
from engine.worker.matching_py import match_batch as match_batch_py
from engine.worker.matching_types import Decision, Lot, MatchOrder, SkuBook

SIZES = [64, 512, 4096]
SKUS = [1, 16, 1000]
KERNELS = {"py": matching.match_batch_py, "c": matching.match_batch_c}  # c: None if not built


@functools.cache
def batch_and_plan(
    n_orders: int, n_skus: int
) -> tuple[list[MatchOrder], dict[str, SkuBook], list[Decision]]:
    orders, books = make_batch(n_orders, n_skus)
    return orders, books, match_batch_py(orders, books)


@pytest.mark.parametrize("impl", ["py", "c"])
@pytest.mark.parametrize("n_skus", SKUS, ids=lambda k: f"{k}sku")
@pytest.mark.parametrize("n_orders", SIZES, ids=lambda n: f"{n}orders")
def test_match_batch(benchmark: BenchmarkFixture, n_orders: int, n_skus: int, impl: str) -> None:
    kernel = KERNELS[impl]
    if kernel is None:
        pytest.skip("compiled kernel not built")
    orders, books, expected = batch_and_plan(n_orders, n_skus)
    benchmark.group = f"match_batch {n_orders:>4} orders / {n_skus:>4} SKUs"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["orders"] = n_orders
    benchmark.extra_info["skus"] = n_skus
    result = benchmark(kernel, orders, books)
    assert result == expected


def test_batch_is_deterministic_and_realistic() -> None:
    """The generator gives the same batch every time, and one that exercises every rule."""
    orders, books = make_batch(512, 16)
    assert (orders, books) == make_batch(512, 16)
    decisions = match_batch_py(orders, books)
    kinds = {(d.action, d.reason) for d in decisions}
    assert len(kinds) == 4, kinds  # fill, queue, reject sold out, reject over the limit
    assert any(len(d.fills) > 1 for d in decisions), "some order spans lots"
    assert sum(o.qty == 1 for o in orders) > 0.8 * len(orders)
    assert {o.tier for o in orders} == {0, 1, 2}
    assert all(isinstance(lot, Lot) for b in books.values() for lot in b.lots)

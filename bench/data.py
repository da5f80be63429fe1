"""Deterministic, realistic matching batches for the kernel benchmarks.

A batch looks like what a shard worker hands the kernel: mostly new orders of qty 1 in arrival
order with a few waiting tickets (older arrivals) mixed in, tiers 0-2 (mostly 0), buyers that
come back, a few lots per SKU with expiries, and per-buyer limits on some SKUs. Stock is about
two thirds of the demand so every rule (fill, span, queue, reject) is exercised.
"""

from __future__ import annotations

import random

from engine.worker.matching_types import Lot, MatchOrder, SkuBook

SEED = 42
NOW = 1_760_000_000  # a fixed "now", unix seconds, so expiries are reproducible


def make_batch(
    n_orders: int, n_skus: int, seed: int = SEED
) -> tuple[list[MatchOrder], dict[str, SkuBook]]:
    """A batch of `n_orders` over `n_skus` SKUs and the books the worker read for it."""
    rng = random.Random(f"{seed}:{n_orders}:{n_skus}")
    skus = [f"sku-{k:04d}" for k in range(n_skus)]
    # Buyers come back: about one buyer for every two orders of the batch.
    n_buyers = max(1, n_orders // 2)
    buyers = [f"buyer-{b:05d}" for b in range(n_buyers)]

    orders: list[MatchOrder] = []
    demand = dict.fromkeys(skus, 0)
    arrival = 1_000_000
    for i in range(n_orders):
        # Half the orders go to a few hot SKUs (a drop), the rest spread over the catalogue.
        if rng.random() < 0.5:
            k = min(int(rng.paretovariate(1.2)) - 1, n_skus - 1)
        else:
            k = rng.randrange(n_skus)
        b = rng.randrange(n_buyers)
        qty = 1 if rng.random() < 0.85 else rng.randint(2, 5)
        tier = rng.choices((0, 1, 2), weights=(80, 15, 5))[0]
        arrival += 1
        # About one order in ten is a waiting ticket: it keeps its older arrival.
        seq = arrival - rng.randint(1_000, 50_000) if rng.random() < 0.1 else arrival
        # Fresh str objects per order, as a decoder hands them over (not the shared ones).
        orders.append(MatchOrder(f"o-{i:06d}", f"sku-{k:04d}", qty, tier, seq, f"buyer-{b:05d}"))
        demand[skus[k]] += qty

    books: dict[str, SkuBook] = {}
    for sku in skus:
        stock = max(1, demand[sku] * 2 // 3)
        n_lots = rng.randint(1, 4)
        lots = []
        for n in range(n_lots):
            count = stock // n_lots + (1 if n < stock % n_lots else 0)
            # One lot in four never expires; the rest expire on the hour, within a month.
            expires = 0 if rng.random() < 0.25 else NOW + 3600 * rng.randint(1, 720)
            lots.append(Lot(f"{sku}-lot-{n}", count, expires))
        rng.shuffle(lots)
        limited = rng.random() < 0.5
        allowances: dict[str, int] | None = None
        buyer_limit = 0
        if limited:
            buyer_limit = rng.randint(2, 5)
            # Some buyers already bought this SKU in earlier batches.
            spent = rng.sample(buyers, k=min(len(buyers), 1 + len(buyers) // 20))
            allowances = {b: rng.randint(0, buyer_limit) for b in spent}
        books[sku] = SkuBook(lots, rng.random() < 0.2, buyer_limit, allowances)
    return orders, books

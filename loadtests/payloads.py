"""Order payloads shared by the load tests and the end-to-end benchmark."""

from __future__ import annotations

import itertools
import random
from typing import Any

_counter = itertools.count()


def order(sku: str = "steam-cn-100", *, rng: random.Random | None = None,
          buyers: int = 0) -> dict[str, Any]:
    """One order body; a new buyer each call unless `buyers` bounds the population."""
    n = next(_counter)
    r = rng or random
    buyer = f"buyer-{r.randrange(buyers)}" if buyers else f"buyer-{n}"
    return {"sku": sku, "qty": 1, "buyer": buyer, "tier": 0}

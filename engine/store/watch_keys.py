"""Redis keys of the watches beside the order path: surges (fleet-wide counters and states),
late tickets (order.delayed), suppliers' restocking, pause announcements, low stock. Same
naming rules as engine/store/keys.py."""

from __future__ import annotations

from engine.store.keys import PREFIX, tag


def incoming() -> str:
    """Counter: orders that arrived at any front door (for surge detection)."""
    return f"{PREFIX}:incoming"


def incoming_by_sku() -> str:
    """Hash: SKU -> orders for it that arrived at any front door (per-SKU surges)."""
    return f"{PREFIX}:incoming:sku"


def surge_of_sku(sku: str) -> str:
    """A SKU's surge state ("start" or "end"), swapped like surge()."""
    return f"{PREFIX}:surge:sku:{sku}"


def surge() -> str:
    """The fleet's surge state ("start" or "end"); swapped with SET GET, so one door alerts."""
    return f"{PREFIX}:surge"


def promised(shard: int) -> str:
    """Sorted set: ticket -> when it counts as late (order.delayed's watch)."""
    return f"{tag(shard)}:eta"


def supplies(shard: int) -> str:
    """Hash: "<supplier>|<sku>" -> the restock state of that SKU (JSON,
    engine/stock/supplies.py), written by the worker that owns the shard."""
    return f"{tag(shard)}:supplies"


def pause_marks() -> str:
    """Hash on shard 0 (whose owner watches the pauses for the fleet): "scheduled|<scope>|
    <starts ms>" and "started|..." -> unix ms after which the mark may be forgotten."""
    return f"{tag(0)}:pausemarks"


def low_stock(shard: int) -> str:
    """Hash: SKU -> 1 while its stock is low (stock.low sent; cleared above 1.2 x low_stock)."""
    return f"{tag(shard)}:lowstock"

"""The config room: what kamigate is told, and how every process keeps to it.

`from engine.config import Settings, load` is the public face. Its modules: settings (the
structs of the TOML file), check (every problem named by key), loading (text or document to
Settings), diff (what a change would do), live (the fleet's running copy in Redis), watch
(following a file and Redis), directory (per-request lookups built once per config).
"""

from engine.config.loading import ConfigError, from_mapping, load, parse_toml
from engine.config.settings import (
    Admin,
    Audit,
    Backpressure,
    Base,
    Blocklist,
    Breaker,
    Calendar,
    Codes,
    Limits,
    Maintenance,
    Orders,
    Pause,
    Points,
    Pricing,
    Rate,
    Redis,
    Review,
    Server,
    Settings,
    Sku,
    Storefront,
    Surge,
    WaitingRoom,
    Webhooks,
    Worker,
    sha256_hex,
)

__all__ = [
    "Admin",
    "Audit",
    "Backpressure",
    "Base",
    "Blocklist",
    "Breaker",
    "Calendar",
    "Codes",
    "ConfigError",
    "Limits",
    "Maintenance",
    "Orders",
    "Pause",
    "Points",
    "Pricing",
    "Rate",
    "Redis",
    "Review",
    "Server",
    "Settings",
    "Sku",
    "Storefront",
    "Surge",
    "WaitingRoom",
    "Webhooks",
    "Worker",
    "from_mapping",
    "load",
    "parse_toml",
    "sha256_hex",
]

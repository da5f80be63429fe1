"""Validate a decoded config document and list every problem, each named by its key.

msgspec stops at the first error of a value, so each section is converted again with the
offending key taken out until it converts; the semantic checks (duplicate ids, scopes,
references, secrets) read the raw document, so they run even when types are wrong.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from engine.config import coupon_rules, credentials, rules
from engine.config.settings import (
    Admin,
    Audit,
    Backpressure,
    Blocklist,
    Breaker,
    Calendar,
    Codes,
    Compensation,
    Coupons,
    CouponTemplate,
    Limits,
    Maintenance,
    Orders,
    Pause,
    Points,
    Pricing,
    Redis,
    Review,
    Server,
    Sku,
    Storefront,
    Supplier,
    Surge,
    WaitingRoom,
    Webhooks,
    Worker,
)
from engine.errors import split_validation

SECTIONS: dict[str, Any] = {
    "server": Server,
    "redis": Redis,
    "orders": Orders,
    "worker": Worker,
    "webhooks": Webhooks,
    "limits": Limits,
    "waiting_room": WaitingRoom,
    "backpressure": Backpressure,
    "maintenance": Maintenance,
    "blocklist": Blocklist,
    "review": Review,
    "surge": Surge,
    "breaker": Breaker,
    "audit": Audit,
    "codes": Codes,
    "pricing": Pricing,
    "points": Points,
    "compensation": Compensation,
    "coupons": Coupons,
}
LISTS: dict[str, Any] = {"storefronts": Storefront, "admins": Admin, "skus": Sku, "pauses": Pause,
                         "coupon_templates": CouponTemplate, "suppliers": Supplier}
MAX_ERRORS_PER_VALUE = 50
_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _split(exc: msgspec.ValidationError) -> tuple[list[str | int], str]:
    """The path (keys and indexes inside the value) and the message of a msgspec error."""
    message, where = split_validation(str(exc))  # string operations: linear in the text
    path: list[str | int] = []
    for name, index in _TOKEN.findall("." + where if where and where[0] != "[" else where):
        path.append(int(index) if index else name)
    return path, message


def _render(key: str, path: list[str | int]) -> str:
    out = key
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _drop(value: Any, path: list[str | int]) -> bool:
    """Remove the element at path from value (in place); False when there is nothing to drop."""
    if not path:
        return False
    node = value
    for part in path[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    try:
        del node[path[-1]]
    except (KeyError, IndexError, TypeError):
        return False
    return True


def convert(value: Any, typ: Any, key: str, errors: list[str]) -> Any:
    """Convert, recording every bad key; None when anything was wrong."""
    current = copy.deepcopy(value)
    dropped: set[str] = set()
    found = 0
    while found < MAX_ERRORS_PER_VALUE:
        try:
            result = msgspec.convert(current, typ)
        except msgspec.ValidationError as exc:
            path, message = _split(exc)
            if message.startswith("Object contains unknown field"):
                path, message = [*path, message.split("`")[1]], "unknown key"
            elif message.startswith("Object missing required field"):
                path, message = [*path, message.split("`")[1]], "required"
                if _render(key, path) in dropped:
                    return None  # we removed a bad required value: already reported
            errors.append(f"{_render(key, path)}: {message}")
            found += 1
            dropped.add(_render(key, path))
            if message == "required" or not _drop(current, path):
                return None
            continue
        return result if found == 0 else None
    return None


def check(raw: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The converted sections and every problem found (empty when the config is usable)."""
    errors: list[str] = []
    parts: dict[str, Any] = {}
    for key, value in raw.items():
        if key in SECTIONS:
            parts[key] = convert(value, SECTIONS[key], key, errors)
        elif key in LISTS:
            if not isinstance(value, list):
                errors.append(f"{key}: expected an array of tables ([[{key}]])")
                continue
            parts[key] = tuple(
                convert(v, LISTS[key], f"{key}[{i}]", errors) for i, v in enumerate(value)
            )
        elif key == "calendars":
            if not isinstance(value, dict):
                errors.append("calendars: expected a table of calendars ([calendars.NAME])")
                continue
            parts[key] = {
                name: convert(cal, Calendar, f"calendars.{name}", errors)
                for name, cal in value.items()
            }
        else:
            name = key if key.strip() and key.isprintable() else repr(key)
            errors.append(f"{name}: unknown key")
    rules.duplicates(raw, errors)
    rules.pause_references(raw, errors)
    rules.urls(raw, errors)
    rules.compensation(raw, errors)
    rules.suppliers(raw, errors)
    rules.values(parts, errors)
    coupon_rules.coupon_templates(parts, errors)
    credentials.resolve(parts, environ, errors)
    return parts, errors

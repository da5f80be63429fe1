"""What types alone cannot check: duplicate ids and keys, pause scopes and calendars,
addresses, patterns and URLs. Each problem is named by its key, like the type errors."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from engine.clock import EARLIEST, LATEST, holiday_year, parse_moment, zone
from engine.config.directory import buyer_pattern
from engine.config.redaction import masks_password
from engine.config.settings import Calendar, Pause

_HTTP_URL = r"^https?://[^\s/?#]+(?:[/?#]\S*)?$(?!\n)"
_SCOPE = re.compile(r"^(?:global|(?:storefront|sku):\S+)$(?!\n)")


def _ids(raw: Mapping[str, Any], section: str) -> list[str]:
    items = raw.get(section)
    if not isinstance(items, list):
        return []
    return [str(i["id"]) for i in items if isinstance(i, dict) and isinstance(i.get("id"), str)]


def _list(raw: Mapping[str, Any], section: str) -> list[Any]:
    value = raw.get(section)
    return value if isinstance(value, list) else []


def duplicates(raw: Mapping[str, Any], errors: list[str]) -> None:
    for section in ("storefronts", "admins", "skus", "suppliers"):
        seen: set[str] = set()
        items = raw.get(section)
        for i, item in enumerate(items if isinstance(items, list) else []):
            ident = item.get("id") if isinstance(item, dict) else None
            if isinstance(ident, str) and ident in seen:
                errors.append(f"{section}[{i}].id: duplicate id {ident!r}")
            if isinstance(ident, str):
                seen.add(ident)
    hashes = [
        item.get("key_sha256")
        for section in ("storefronts", "admins")
        for item in _list(raw, section)
        if isinstance(item, dict) and isinstance(item.get("key_sha256"), str)
    ]
    if len(set(hashes)) != len(hashes):
        errors.append("storefronts/admins.key_sha256: one key may not serve two principals")


def pause_references(raw: Mapping[str, Any], errors: list[str]) -> None:
    skus, storefronts = set(_ids(raw, "skus")), set(_ids(raw, "storefronts"))
    calendars = raw.get("calendars") if isinstance(raw.get("calendars"), dict) else {}
    pauses = raw.get("pauses")
    for i, pause in enumerate(pauses if isinstance(pauses, list) else []):
        if not isinstance(pause, dict):
            continue
        scope = pause.get("scope")
        if isinstance(scope, str):
            kind, _, name = scope.partition(":")
            if not (scope == "global" or (kind == "sku" and name in skus)
                    or (kind == "storefront" and name in storefronts)):
                errors.append(f"pauses[{i}].scope: {scope!r} is not 'global', a configured "
                              "'storefront:<id>' or 'sku:<id>'")
        calendar = pause.get("calendar")
        if isinstance(calendar, str) and calendar not in (calendars or {}):
            errors.append(f"pauses[{i}].calendar: no calendar named {calendar!r}")
        if calendar is None and pause.get("starts_at") is None:
            errors.append(f"pauses[{i}]: needs either calendar or starts_at")


def values(parts: dict[str, Any], errors: list[str]) -> None:
    """Addresses, patterns, calendars and pause times: what types alone cannot check."""
    for section in ("blocklist", "review"):
        for i, value in enumerate(getattr(parts.get(section), "ips", ())):
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                errors.append(f"{section}.ips[{i}]: {value!r} is not an address or CIDR range")
    for i, pattern in enumerate(getattr(parts.get("review"), "buyer_patterns", ())):
        try:
            buyer_pattern(pattern)
        except ValueError as exc:
            errors.append(f"review.buyer_patterns[{i}]: not a regular expression RE2 takes "
                          f"({exc})")
    calendars = {k: v for k, v in (parts.get("calendars") or {}).items() if v is not None}
    for name, cal in calendars.items():
        problem = check_calendar(cal)
        if problem:
            errors.append(f"calendars.{name}: {problem}")
    for i, pause in enumerate(parts.get("pauses") or ()):
        if pause is not None and (pause.calendar is None or pause.calendar in calendars):
            problem = check_pause(pause, calendars)
            # scope and calendar names are reported by _pauses, from the raw document
            if problem and not problem.startswith(("scope", "no [calendars")):
                errors.append(f"pauses[{i}]: {problem}")


def urls(raw: Mapping[str, Any], errors: list[str]) -> None:
    server = raw.get("server") if isinstance(raw.get("server"), dict) else {}
    public_url = (server or {}).get("public_url")
    if isinstance(public_url, str) and not re.match(r"^https?://[^\s/]+", public_url):
        errors.append("server.public_url: must be an http(s) URL")
    redis = raw.get("redis") if isinstance(raw.get("redis"), dict) else {}
    url = (redis or {}).get("url")
    if isinstance(url, str) and url != "embedded" and \
            not url.startswith(("redis://", "rediss://", "unix://")):
        errors.append("redis.url: must be 'embedded' or a redis://, rediss:// or unix:// URL")
    elif isinstance(url, str) and masks_password(url):
        errors.append('redis.url: the password "***" is how passwords are shown, not one')
    if (redis or {}).get("cluster") is True and not (
            isinstance(url, str) and url.startswith(("redis://", "rediss://"))):
        errors.append("redis.cluster: needs redis.url naming a node of a running cluster "
                      "(redis:// or rediss://); kamigate never starts a cluster itself")
    replicas = (redis or {}).get("wait_replicas")
    if isinstance(replicas, int) and replicas > 0 and url in (None, "embedded"):
        errors.append("redis.wait_replicas: the embedded Redis has no replicas; set "
                      "redis.url to a master with replicas, or 0")
    for i, storefront in enumerate(_list(raw, "storefronts")):
        events_url = storefront.get("events_url") if isinstance(storefront, dict) else None
        if isinstance(events_url, str) and events_url and not re.match(_HTTP_URL, events_url):
            errors.append(f"storefronts[{i}].events_url: must be an http(s) URL")


def suppliers(raw: Mapping[str, Any], errors: list[str]) -> None:
    """A supplier's URL is http(s); its SKUs are configured, each restocked by one supplier."""
    skus = set(_ids(raw, "skus"))
    owner: dict[str, str] = {}
    for i, supplier in enumerate(_list(raw, "suppliers")):
        if not isinstance(supplier, dict):
            continue
        url = supplier.get("url")
        if isinstance(url, str) and not re.match(_HTTP_URL, url):
            errors.append(f"suppliers[{i}].url: must be an http(s) URL")
        listed = supplier.get("skus")
        for j, sku in enumerate(listed if isinstance(listed, list) else []):
            if not isinstance(sku, str):
                continue
            if sku not in skus:
                errors.append(f"suppliers[{i}].skus[{j}]: no SKU {sku!r} is configured")
            elif sku in owner:
                errors.append(f"suppliers[{i}].skus[{j}]: {sku!r} is already restocked by "
                              f"supplier {owner[sku]!r}")
            else:
                owner[sku] = str(supplier.get("id"))


def compensation(raw: Mapping[str, Any], errors: list[str]) -> None:
    """Compensation needs somewhere to put it: points need [points] (its coupon template is
    checked with the templates: engine/config/coupon_rules.py)."""
    section = raw.get("compensation")
    if not isinstance(section, dict):
        return
    points, enabled = section.get("points"), raw.get("points")
    if isinstance(points, int) and points > 0 and (
            not isinstance(enabled, dict) or enabled.get("enabled") is False):
        errors.append("compensation.points: compensating with points needs a [points] "
                      "section with enabled = true")


def check_calendar(cal: Calendar) -> str | None:
    """Why this calendar cannot be used (unknown country, subdivision or zone), or None."""
    try:
        holiday_year(cal.country, cal.subdiv, datetime.now(UTC).year)
        zone(cal.timezone)
    except ValueError as exc:
        return str(exc)
    return None


def check_pause(pause: Pause, calendars: Mapping[str, Calendar]) -> str | None:
    """Why this pause cannot be used (scope, calendar name, times), or None."""
    if not _SCOPE.match(pause.scope):
        return f"scope {pause.scope!r} is not global, storefront:<id> or sku:<id>"
    if pause.calendar is not None and pause.calendar not in calendars:
        return f"no [calendars.{pause.calendar}] for this pause"
    try:
        lo = parse_moment(pause.starts_at, EARLIEST)
        hi = parse_moment(pause.ends_at, LATEST)
    except ValueError as exc:
        return f"starts_at/ends_at: {exc}"
    return None if lo < hi else "starts_at is not before ends_at"

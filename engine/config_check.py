"""Validate a decoded config document and list every problem, each named by its key.

msgspec stops at the first error of a value, so each section is converted again with the
offending key taken out until it converts; the semantic checks (duplicate ids, scopes,
references, secrets) read the raw document, so they run even when types are wrong.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from engine.config import (
    Admin,
    Audit,
    Backpressure,
    Blocklist,
    Breaker,
    Calendar,
    Codes,
    Limits,
    Maintenance,
    Orders,
    Pause,
    Redis,
    Review,
    Server,
    Sku,
    Storefront,
    Surge,
    WaitingRoom,
    Webhooks,
    Worker,
)

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
}
LISTS: dict[str, Any] = {"storefronts": Storefront, "admins": Admin, "skus": Sku, "pauses": Pause}
MAX_ERRORS_PER_VALUE = 50
_AT = re.compile(r" - at `\$(.*)`$")
_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _split(exc: msgspec.ValidationError) -> tuple[list[str | int], str]:
    """The path (keys and indexes inside the value) and the message of a msgspec error."""
    message = str(exc)
    match = _AT.search(message)
    path: list[str | int] = []
    if match:
        message = message[: match.start()]
        for name, index in _TOKEN.findall(match.group(1)):
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


def _ids(raw: Mapping[str, Any], section: str) -> list[str]:
    items = raw.get(section)
    if not isinstance(items, list):
        return []
    return [str(i["id"]) for i in items if isinstance(i, dict) and isinstance(i.get("id"), str)]


def _list(raw: Mapping[str, Any], section: str) -> list[Any]:
    value = raw.get(section)
    return value if isinstance(value, list) else []


def _duplicates(raw: Mapping[str, Any], errors: list[str]) -> None:
    for section in ("storefronts", "admins", "skus"):
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


def _pauses(raw: Mapping[str, Any], errors: list[str]) -> None:
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


def _rules(parts: dict[str, Any], errors: list[str]) -> None:
    """Addresses, patterns, calendars and pause times: what types alone cannot check."""
    from engine.calendars import check_calendar, check_pause

    for section in ("blocklist", "review"):
        for i, value in enumerate(getattr(parts.get(section), "ips", ())):
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                errors.append(f"{section}.ips[{i}]: {value!r} is not an address or CIDR range")
    for i, pattern in enumerate(getattr(parts.get("review"), "buyer_patterns", ())):
        try:
            re.compile(pattern)
        except (re.error, OverflowError, RecursionError, ValueError) as exc:
            errors.append(f"review.buyer_patterns[{i}]: not a regular expression ({exc})")
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


def _urls(raw: Mapping[str, Any], errors: list[str]) -> None:
    server = raw.get("server") if isinstance(raw.get("server"), dict) else {}
    public_url = (server or {}).get("public_url")
    if isinstance(public_url, str) and not re.match(r"^https?://[^\s/]+", public_url):
        errors.append("server.public_url: must be an http(s) URL")
    redis = raw.get("redis") if isinstance(raw.get("redis"), dict) else {}
    url = (redis or {}).get("url")
    if isinstance(url, str) and url != "embedded" and \
            not url.startswith(("redis://", "rediss://", "unix://")):
        errors.append("redis.url: must be 'embedded' or a redis://, rediss:// or unix:// URL")


def resolve_secret(value: str, key: str, environ: Mapping[str, str], errors: list[str]) -> str:
    """`env:NAME` reads the environment variable NAME; anything else is the secret itself."""
    if not value.startswith("env:"):
        return value
    name = value[4:]
    if name not in environ:
        errors.append(f"{key}: environment variable {name} is not set")
        return ""
    return environ[name]


def _secrets(parts: dict[str, Any], environ: Mapping[str, str], errors: list[str]) -> None:
    if parts.get("storefronts"):
        parts["storefronts"] = tuple(
            s if s is None else msgspec.structs.replace(
                s,
                webhook_secret=resolve_secret(s.webhook_secret,
                                              f"storefronts[{i}].webhook_secret", environ, errors),
                signing_secret=resolve_secret(s.signing_secret,
                                              f"storefronts[{i}].signing_secret", environ, errors))
            for i, s in enumerate(parts["storefronts"])
        )
        for i, s in enumerate(parts["storefronts"]):
            if s is not None and s.require_signature and not s.signing_secret:
                errors.append(f"storefronts[{i}].require_signature: needs a signing_secret")
    codes = parts.get("codes")
    if codes is not None and (codes.keys or codes.current or codes.fingerprint_key):
        parts["codes"] = _codes(codes, environ, errors)
    if parts.get("server") is not None:
        server = parts["server"]
        parts["server"] = msgspec.structs.replace(server, page_secret=resolve_secret(
            server.page_secret, "server.page_secret", environ, errors))


def _codes(codes: Any, environ: Mapping[str, str], errors: list[str]) -> Any:
    """Resolve and check the sealing keys: each 32 bytes of base64, `current` among them, a
    fingerprint key with them."""
    from engine.sealing import decode_key

    resolved = {}
    for kid, value in codes.keys.items():
        key = resolve_secret(value, f"codes.keys.{kid}", environ, errors)
        if not re.match(r"^[A-Za-z0-9_-]{1,32}$(?!\n)", kid):
            errors.append(f"codes.keys.{kid}: a key id is 1-32 of A-Z a-z 0-9 _ -")
        elif key:
            try:
                decode_key(key)
            except ValueError as exc:
                errors.append(f"codes.keys.{kid}: {exc}")
        resolved[kid] = key
    if codes.current not in resolved:
        errors.append(f"codes.current: {codes.current!r} is not one of codes.keys")
    fingerprint = resolve_secret(codes.fingerprint_key, "codes.fingerprint_key", environ,
                                 errors)
    if resolved and len(fingerprint) < 16:
        errors.append("codes.fingerprint_key: at least 16 characters, kept for good")
    return msgspec.structs.replace(codes, keys=resolved, fingerprint_key=fingerprint)


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
    _duplicates(raw, errors)
    _pauses(raw, errors)
    _urls(raw, errors)
    _rules(parts, errors)
    _secrets(parts, environ, errors)
    return parts, errors

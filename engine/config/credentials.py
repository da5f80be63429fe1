"""Secrets in the config: `env:NAME` references resolved, the sealing keys checked."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from engine.store.sealing import decode_key

MIN_SECRET_LENGTH = 32  # a signing secret an attacker cannot guess from what it signs


def resolve_secret(value: str, key: str, environ: Mapping[str, str], errors: list[str],
                   min_length: int = MIN_SECRET_LENGTH) -> str:
    """`env:NAME` reads the environment variable NAME; anything else is the secret itself.
    A secret that is set must have `min_length` characters ("" means none)."""
    if value.startswith("env:"):
        name = value[4:]
        if name not in environ:
            errors.append(f"{key}: environment variable {name} is not set")
            return ""
        value = environ[name]
    if value == "***":
        errors.append(f'{key}: "***" is how secrets are shown, not a secret')
    elif value and len(value) < min_length:
        errors.append(f"{key}: a secret needs at least {min_length} characters (`kamigate keys "
                      "new` prints a random one)")
    return value


def resolve(parts: dict[str, Any], environ: Mapping[str, str], errors: list[str]) -> None:
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
    if parts.get("suppliers"):
        parts["suppliers"] = tuple(
            s if s is None else msgspec.structs.replace(
                s, secret=resolve_secret(s.secret, f"suppliers[{i}].secret", environ, errors))
            for i, s in enumerate(parts["suppliers"]))
        for i, s in enumerate(parts["suppliers"]):
            if s is not None and not s.secret:
                errors.append(f"suppliers[{i}].secret: every request to a supplier is signed: "
                              "a secret is needed")
    codes = parts.get("codes")
    if codes is not None and (codes.keys or codes.current or codes.fingerprint_key):
        parts["codes"] = _codes(codes, environ, errors)
    if parts.get("server") is not None:
        server = parts["server"]
        parts["server"] = msgspec.structs.replace(
            server,
            page_secret=resolve_secret(server.page_secret, "server.page_secret", environ,
                                       errors),
            metrics_token=resolve_secret(server.metrics_token, "server.metrics_token", environ,
                                         errors))


def _codes(codes: Any, environ: Mapping[str, str], errors: list[str]) -> Any:
    """Resolve and check the sealing keys: each 32 bytes of base64, `current` among them, a
    fingerprint key with them."""
    resolved = {}
    for kid, value in codes.keys.items():
        key = resolve_secret(value, f"codes.keys.{kid}", environ, errors, min_length=0)
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
                                 errors, min_length=0)
    if resolved and len(fingerprint) < 16:
        errors.append("codes.fingerprint_key: at least 16 characters, kept for good")
    return msgspec.structs.replace(codes, keys=resolved, fingerprint_key=fingerprint)

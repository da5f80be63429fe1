"""What the config shows of itself, and how a shown document comes back.

GET /admin/config, `kamigate config diff`, the config's public sha256 and log lines show every
secret, bearer-key hash and webhook URL as "***" and a URL's password as `user:***@`. A
document put back (the usual edit cycle: GET, change a field, PUT) that still carries "***"
keeps the running value of each such field; "***" is never stored as a secret.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

from engine.config.settings import Settings
from engine.store.connection import MASK, mask_url

# Shown as "***" for every role: secrets, the unsalted SHA-256 of bearer keys (a weak key could
# be guessed offline from it), sealing keys, and webhook URLs (they often carry a token).
SECRET_FIELDS = frozenset({
    "webhook_secret", "signing_secret", "page_secret", "secret", "keys", "fingerprint_key",
    "key_sha256", "webhook_url", "metrics_token",
})
URL_FIELDS = frozenset({"url"})  # shown with the password masked: redis://user:***@host


def redact(document: Any) -> Any:
    """A config document (builtins) with every secret as "***" (an empty one stays empty:
    nothing to hide) and URL passwords masked."""
    if isinstance(document, dict):
        return {k: _redact_field(k, v) for k, v in document.items()}
    if isinstance(document, list | tuple):  # to_builtins keeps a Struct's tuples as tuples
        return [redact(v) for v in document]
    return document


def _redact_field(key: str, value: Any) -> Any:
    if key in SECRET_FIELDS:
        return MASK if value else value
    if key in URL_FIELDS and isinstance(value, str):
        return mask_url(value)
    return redact(value)


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective config, as GET /admin/config shows it."""
    return dict(redact(msgspec.to_builtins(settings)))


def public_sha256(settings: Settings) -> str:
    """The sha256 shown for a config (readyz, metrics, GET /admin/config, the audit): over the
    redacted config, so it tells versions apart without being a hash over secrets."""
    body = msgspec.json.encode(redacted(settings), order="sorted")
    return hashlib.sha256(body).hexdigest()


def keep_running(document: dict[str, Any], running: Mapping[str, Any],
                 errors: list[str]) -> dict[str, Any]:
    """`document` with each "***" (and each masked URL password) replaced by the running
    config's value at the same place; a "***" with no running value to keep is an error named
    by its key. List entries are matched by their `id` (storefronts, admins, SKUs)."""
    kept = _keep(document, running, "", errors)
    return dict(kept)


def masks_password(url: str) -> bool:
    """The URL carries "***" where its password was (as mask_url shows it)."""
    return f":{MASK}@" in url or f"password={MASK}" in url.lower()


def _keep(new: Any, old: Any, path: str, errors: list[str]) -> Any:
    if isinstance(new, dict):
        olds = old if isinstance(old, Mapping) else {}
        out = {}
        for key, value in new.items():
            where = f"{path}.{key}" if path else str(key)
            if key in URL_FIELDS and isinstance(value, str) and masks_password(value):
                out[key] = _keep_url(value, olds.get(key), where, errors)
            else:
                out[key] = _keep(value, olds.get(key), where, errors)
        return out
    if isinstance(new, list):
        entries: list[Any] = old if isinstance(old, list) else []
        by_id = {o["id"]: o for o in entries
                 if isinstance(o, Mapping) and isinstance(o.get("id"), str)}
        out_list = []
        for i, value in enumerate(new):
            ident = value.get("id") if isinstance(value, dict) else None
            ident = ident if isinstance(ident, str) else None
            counterpart = by_id.get(ident) if ident is not None else \
                (entries[i] if i < len(entries) else None)
            label = f"{path}[{ident}]" if ident is not None else f"{path}[{i}]"
            out_list.append(_keep(value, counterpart, label, errors))
        return out_list
    if new == MASK:
        if old in (None, "", MASK) or (isinstance(old, dict | list) and not old):
            errors.append(f'{path}: "{MASK}" keeps the running value, and there is none here; '
                          "give the value itself")
            return None
        return old
    return new


def _keep_url(new: str, old: Any, path: str, errors: list[str]) -> str | None:
    if isinstance(old, str) and mask_url(old) == new:
        return old
    errors.append(f'{path}: the password "{MASK}" keeps the running URL\'s only when the rest '
                  "of the URL is unchanged; give the password itself")
    return None

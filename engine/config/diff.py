"""What would change between two configs, by dotted key (secrets as ***): the body of
`kamigate config diff`, which also says whether a running fleet can take it live."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from engine.config.redaction import SECRET_FIELDS, URL_FIELDS
from engine.config.settings import Settings
from engine.store.connection import mask_url

KEYED_LISTS = frozenset({"storefronts", "admins", "skus", "coupon_templates"})


def _show(value: Any, secret: bool = False, url: bool = False) -> str:
    """A value in TOML-like form: numbers without a needless `.0`, strings quoted, secrets
    as ***."""
    if secret and value:
        return "***"
    if url and isinstance(value, str):
        return _show(mask_url(value))
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_show(v, k in SECRET_FIELDS, k in URL_FIELDS)}"
                               for k, v in value.items() if v is not None) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return msgspec.json.encode(value).decode() if isinstance(value, str) else str(value)


def _walk(path: str, old: Any, new: Any, out: list[str]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        _walk_keys(old, new, lambda key: f"{path}.{key}" if path else str(key), out)
        return
    if isinstance(old, list) and isinstance(new, list):
        _walk_list(path, old, new, out)
        return
    name = path.rpartition(".")[2]
    secret, url = name in SECRET_FIELDS, name in URL_FIELDS
    note = " (changed)" if (secret or url) and old and new and \
        _show(old, secret, url) == _show(new, secret, url) else ""
    out.append(f"{path}: {_show(old, secret, url)} → {_show(new, secret, url)}{note}")


def _walk_keys(old: dict[Any, Any], new: dict[Any, Any], name: Callable[[Any], str],
               out: list[str]) -> None:
    """Keys removed (-), added (+) or changed (walked into), in the old order, then the new."""
    for key in [*old, *(k for k in new if k not in old)]:
        sub = name(key)
        if key not in new:
            out.append(f"- {sub}")
        elif key not in old:
            out.append(f"+ {sub} = {_show(new[key])}")
        else:
            _walk(sub, old[key], new[key], out)


def _walk_list(path: str, old: list[Any], new: list[Any], out: list[str]) -> None:
    if path in KEYED_LISTS:
        # Keyed by id: a reordered list is no change, an edited item shows only what changed.
        before = {item["id"]: item for item in old}
        after = {item["id"]: item for item in new}
        _walk_keys(before, after, lambda ident: f"{path}[{ident}]", out)
        return
    # No identity (pauses): items as a multiset, removed ones by their old index, added ones
    # by their new index; an edited item reads as one removed and one added.
    left = list(new)
    for i, item in enumerate(old):
        if item in left:
            left.remove(item)
        else:
            out.append(f"- {path}[{i}] = {_show(item)}")
    left = list(old)
    for i, item in enumerate(new):
        if item in left:
            left.remove(item)
        else:
            out.append(f"+ {path}[{i}] = {_show(item)}")


def diff(old: Settings, new: Settings) -> list[str]:
    """One line per changed effective setting (defaults included, secrets as ***)."""
    out: list[str] = []
    # Through JSON: plain dicts and lists, as an operator would write them.
    _walk("", msgspec.json.decode(msgspec.json.encode(old)),
          msgspec.json.decode(msgspec.json.encode(new)), out)
    return out

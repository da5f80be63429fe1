"""Clock helpers: unix milliseconds and RFC 3339 strings in UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    return int(time.time() * 1000)


_second_cache: dict[int, str] = {}


def rfc3339(ms: int) -> str:
    """RFC 3339 in UTC with millisecond precision, e.g. 2026-11-21T23:59:01.123Z."""
    seconds, millis = divmod(ms, 1000)
    # Formatting a datetime costs more than the rest of a request's rendering; a second's
    # prefix is formatted once and reused for every order of that second.
    prefix = _second_cache.get(seconds)
    if prefix is None:
        if len(_second_cache) > 4096:
            _second_cache.clear()
        prefix = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_cache[seconds] = prefix
    return f"{prefix}.{millis:03d}Z"


def parse_rfc3339(text: str) -> int:
    """Unix milliseconds of an RFC 3339 timestamp; raises ValueError on anything else."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("timestamp needs a time zone (Z or +hh:mm)")
    return int(parsed.timestamp() * 1000)

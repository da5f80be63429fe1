"""Clock helpers: unix milliseconds and RFC 3339 strings in UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    return int(time.time() * 1000)


def rfc3339(ms: int) -> str:
    """RFC 3339 in UTC with millisecond precision, e.g. 2026-11-21T23:59:01.123Z."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_rfc3339(text: str) -> int:
    """Unix milliseconds of an RFC 3339 timestamp; raises ValueError on anything else."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("timestamp needs a time zone (Z or +hh:mm)")
    return int(parsed.timestamp() * 1000)

"""Clock helpers: unix milliseconds, RFC 3339 strings in UTC, time zones and public-holiday
years (the calendars' raw material)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
from holidays import HolidayBase


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

EARLIEST = datetime.min.replace(tzinfo=UTC)  # a pause with no starts_at began long ago
LATEST = datetime.max.replace(tzinfo=UTC)  # a pause with no ends_at never ends


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_moment(text: str | None, default: datetime) -> datetime:
    return default if text is None else aware(datetime.fromisoformat(text))


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; ValueError for an unknown one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


@lru_cache(maxsize=256)
def holiday_year(country: str, subdiv: str | None, year: int) -> HolidayBase:
    """One year of a country's public holidays, English names, never expanded afterwards;
    ValueError for an unknown country or subdivision."""
    try:
        # language is explicit: left None, holidays reads the names' language from the locale.
        return holidays.country_holidays(
            country, subdiv=subdiv, years=year, expand=False, language="en_US"
        )
    except NotImplementedError as exc:  # holidays' way of saying "unknown country/subdiv"
        raise ValueError(f"calendar country {country!r}: {exc}") from exc

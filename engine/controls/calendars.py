"""Pause windows: whole holiday blocks from public calendars, and explicit ranges from config.

Pure: no Redis, no I/O. A holiday block is a maximal run of consecutive days off holding at
least one public holiday, where days off are public holidays (observed and substituted days
included) and weekend days that are not make-up workdays. A block's window runs from local
midnight of its first day to local midnight after its last, in the calendar's time zone.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from engine.clock import EARLIEST, LATEST, aware, holiday_year, parse_moment, zone
from engine.config.settings import Calendar, Pause

MAX_SPAN = timedelta(days=3660)  # calendar expansion needs a bounded range (about 10 years)
_DAY = timedelta(days=1)
_MAX_BLOCK_DAYS = 62  # guard when walking out of the asked range along days off
_QUALIFIER = re.compile(r"\s*\((?:observed|estimated)[^)]*\)$")


@dataclass(frozen=True, slots=True)
class Window:
    """A span [starts_at, ends_at) during which `scope` is paused."""

    scope: str
    starts_at: datetime
    ends_at: datetime
    reason: str
    source: str  # "config" or "calendar:<name>"
    holiday: str | None = None

    def starts_ms(self) -> int:
        """Its start in unix ms; 0 when open (already begun)."""
        return 0 if self.starts_at == EARLIEST else int(self.starts_at.timestamp() * 1000)

    def ends_ms(self) -> int:
        """Its end in unix ms; 0 when open (until resumed)."""
        return 0 if self.ends_at == LATEST else int(self.ends_at.timestamp() * 1000)

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict; an open start or end is null."""
        out: dict[str, object] = {
            "scope": self.scope,
            "starts_at": None if self.starts_at == EARLIEST else self.starts_at.isoformat(),
            "ends_at": None if self.ends_at == LATEST else self.ends_at.isoformat(),
            "reason": self.reason,
            "source": self.source,
        }
        if self.holiday is not None:
            out["holiday"] = self.holiday
        return out


def _is_off(cal: Calendar, day: date) -> bool:
    """Public holiday, or a weekend day not worked to make up for a holiday."""
    book = holiday_year(cal.country, cal.subdiv, day.year)
    if day in book:
        return True
    if not book.is_weekend(day):
        return False
    # A make-up workday is listed under the year of the holiday it pays for, maybe the next.
    years = (y for y in (day.year - 1, day.year, day.year + 1) if 1 <= y <= 9999)
    return not any(day in holiday_year(cal.country, cal.subdiv, y).weekend_workdays for y in years)


def _block_name(cal: Calendar, days: Sequence[date]) -> str:
    """The name on most of the block's own holiday dates (not observed or moved), earliest first."""
    names = [name for day in days
             for name in holiday_year(cal.country, cal.subdiv, day.year).get_list(day)]
    weight = Counter(
        {_QUALIFIER.sub("", name): 0 for name in names if not name.startswith("Day off")}
    )
    weight.update(name for name in names if name in weight)
    return max(weight, key=weight.__getitem__) if weight else names[0]


def holiday_blocks(calendar: Calendar, start: date, end: date) -> list[tuple[date, date, str]]:
    """Holiday blocks (first day, last day, name), inclusive, overlapping [start, end]."""
    if start > end:
        return []
    lo, hi = start, end
    for _ in range(_MAX_BLOCK_DAYS):  # a block may begin before the range and end after it
        if not _is_off(calendar, lo - _DAY):
            break
        lo -= _DAY
    for _ in range(_MAX_BLOCK_DAYS):
        if not _is_off(calendar, hi + _DAY):
            break
        hi += _DAY
    blocks: list[tuple[date, date, str]] = []
    run: list[date] = []
    day = lo
    while day <= hi + _DAY:  # the day after hi closes the last run
        if day <= hi and _is_off(calendar, day):
            run.append(day)
        else:
            if (
                run
                and run[-1] >= start
                and run[0] <= end
                and any(d in holiday_year(calendar.country, calendar.subdiv, d.year) for d in run)
            ):  # weekends alone are no block
                blocks.append((run[0], run[-1], _block_name(calendar, run)))
            run = []
        day += _DAY
    return blocks


def _calendar_windows(
    pause: Pause, name: str, cal: Calendar, start: datetime, end: datetime
) -> list[Window]:
    if start >= end:
        return []
    if end - start > MAX_SPAN:
        raise ValueError(f"calendar {name!r}: range {start} to {end} is too long to expand")
    tz = zone(cal.timezone)
    found = []
    for first, last, holiday in holiday_blocks(
        cal, start.astimezone(tz).date(), end.astimezone(tz).date()
    ):
        opens = datetime.combine(first, time(), tzinfo=tz)
        closes = datetime.combine(last + _DAY, time(), tzinfo=tz)
        if opens < end and closes > start:
            reason = pause.reason or holiday
            found.append(Window(pause.scope, opens, closes, reason, f"calendar:{name}", holiday))
    return found


def windows(
    pauses: Sequence[Pause], calendars: Mapping[str, Calendar], start: datetime, end: datetime
) -> list[Window]:
    """Every pause window overlapping [start, end), sorted by start.

    An explicit range is taken as is (naive times are UTC; no starts_at: already begun; no
    ends_at: open-ended). A calendar pause expands into its holiday blocks; a starts_at or
    ends_at given with it bounds which blocks apply. Raises ValueError on a bad pause.
    """
    start, end = aware(start), aware(end)
    found: list[Window] = []
    for pause in pauses:
        try:
            lo = parse_moment(pause.starts_at, EARLIEST)
            hi = parse_moment(pause.ends_at, LATEST)
        except ValueError as exc:
            raise ValueError(f"pause for {pause.scope!r}: {exc}") from exc
        if pause.calendar is None:
            if lo < hi and lo < end and hi > start:
                found.append(Window(pause.scope, lo, hi, pause.reason, "config"))
            continue
        cal = calendars.get(pause.calendar)
        if cal is None:
            raise ValueError(f"pause for {pause.scope!r}: no calendar {pause.calendar!r}")
        found += _calendar_windows(pause, pause.calendar, cal, max(start, lo), min(end, hi))
    found.sort(key=lambda w: (w.starts_at, w.ends_at, w.scope))
    return found


def active(windows: Sequence[Window], scope_keys: Iterable[str], now: datetime) -> Window | None:
    """The window in force at `now` for any of the scopes; of several, the one ending last."""
    keys, now = set(scope_keys), aware(now)
    live = [w for w in windows if w.scope in keys and w.starts_at <= now < w.ends_at]
    return max(live, key=lambda w: w.ends_at, default=None)

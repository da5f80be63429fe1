"""Holiday pause windows: whole blocks of days off, explicit ranges, the window in force."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest

from engine.clock import EARLIEST, LATEST, holiday_year
from engine.config import Calendar, Pause
from engine.config.rules import check_calendar, check_pause
from engine.controls.calendars import Window, _is_off, active, holiday_blocks, windows

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
CN = Calendar(country="CN", timezone="Asia/Shanghai")
US = Calendar(country="US", timezone="America/New_York")
CALS = {"cn": CN, "us": US}
YEAR_2026 = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def sh(y: int, m: int, d: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(y, m, d, hour, minute, tzinfo=SHANGHAI)


def ny(y: int, m: int, d: int, hour: int = 0) -> datetime:
    return datetime(y, m, d, hour, tzinfo=NEW_YORK)


def cn_windows(scope: str = "global", reason: str = "") -> list[Window]:
    return windows([Pause(scope=scope, calendar="cn", reason=reason)], CALS, *YEAR_2026)


def test_cn_2026_blocks_match_the_official_announcement() -> None:
    spans = [(a, b) for a, b, _ in holiday_blocks(CN, date(2026, 1, 1), date(2026, 12, 31))]
    assert spans == [
        (date(2026, 1, 1), date(2026, 1, 3)),  # 4 January is a make-up workday
        (date(2026, 2, 15), date(2026, 2, 23)),
        (date(2026, 4, 4), date(2026, 4, 6)),
        (date(2026, 5, 1), date(2026, 5, 5)),
        (date(2026, 6, 19), date(2026, 6, 21)),
        (date(2026, 9, 25), date(2026, 9, 27)),
        (date(2026, 10, 1), date(2026, 10, 7)),
    ]


def test_spring_festival_2026_is_nine_days_in_shanghai_time() -> None:
    [block] = holiday_blocks(CN, date(2026, 2, 10), date(2026, 2, 28))
    assert block == (date(2026, 2, 15), date(2026, 2, 23), "Chinese New Year (Spring Festival)")
    found = [w for w in cn_windows() if w.starts_at.month == 2]
    assert [(w.starts_at, w.ends_at) for w in found] == [(sh(2026, 2, 15), sh(2026, 2, 24))]
    assert found[0].ends_at - found[0].starts_at == timedelta(days=9)
    assert found[0].starts_at.isoformat() == "2026-02-15T00:00:00+08:00"


def test_make_up_workdays_are_in_no_window() -> None:
    ws = cn_windows()
    for day in (14, 28):  # Saturdays worked to make up for the Spring Festival
        for hour in (0, 12, 23):
            assert active(ws, ["global"], sh(2026, 2, day, hour)) is None
    assert active(ws, ["global"], sh(2026, 2, 15, 0)) is not None
    assert active(ws, ["global"], sh(2026, 2, 23, 23, 59)) is not None
    assert active(ws, ["global"], sh(2026, 2, 24, 0)) is None


def test_a_block_is_whole_even_when_the_range_cuts_it() -> None:
    assert holiday_blocks(CN, date(2026, 2, 20), date(2026, 2, 20))[0][:2] == (
        date(2026, 2, 15),
        date(2026, 2, 23),
    )
    one_day = windows(
        [Pause(scope="global", calendar="cn")], CALS, sh(2026, 2, 20, 9), sh(2026, 2, 20, 10)
    )
    assert [(w.starts_at, w.ends_at) for w in one_day] == [(sh(2026, 2, 15), sh(2026, 2, 24))]


def test_national_day_and_mid_autumn_2026() -> None:
    blocks = holiday_blocks(CN, date(2026, 9, 1), date(2026, 10, 31))
    assert blocks == [
        (date(2026, 9, 25), date(2026, 9, 27), "Mid-Autumn Festival"),
        (date(2026, 10, 1), date(2026, 10, 7), "National Day"),
    ]
    ws = cn_windows()
    assert active(ws, ["global"], sh(2026, 10, 4, 12)) is not None  # the Sunday inside
    assert active(ws, ["global"], sh(2026, 9, 20, 12)) is None  # a make-up Sunday
    assert active(ws, ["global"], sh(2026, 10, 10, 12)) is None  # a make-up Saturday


def test_weekends_alone_are_no_block() -> None:
    assert holiday_blocks(CN, date(2026, 3, 1), date(2026, 3, 31)) == []
    assert holiday_blocks(US, date(2026, 3, 7), date(2026, 3, 8)) == []


def test_us_thanksgiving_2026_is_one_day_in_new_york() -> None:
    assert holiday_blocks(US, date(2026, 11, 20), date(2026, 11, 30)) == [
        (date(2026, 11, 26), date(2026, 11, 26), "Thanksgiving Day")
    ]
    ws = windows([Pause(scope="sku:x", calendar="us")], CALS, *YEAR_2026)
    [w] = [w for w in ws if w.holiday == "Thanksgiving Day"]
    assert (w.starts_at, w.ends_at) == (ny(2026, 11, 26), ny(2026, 11, 27))
    assert w.starts_at == datetime(2026, 11, 26, 5, tzinfo=UTC)


def test_us_independence_day_2026_observed_friday_joins_the_weekend() -> None:
    assert holiday_blocks(US, date(2026, 7, 1), date(2026, 7, 31)) == [
        (date(2026, 7, 3), date(2026, 7, 5), "Independence Day")
    ]


def test_calendar_pause_fields_and_json() -> None:
    [w] = [w for w in cn_windows("storefront:shop-a", "closed") if w.starts_at.month == 10]
    assert (w.scope, w.reason, w.source, w.holiday) == (
        "storefront:shop-a",
        "closed",
        "calendar:cn",
        "National Day",
    )
    assert w.to_json() == {
        "scope": "storefront:shop-a",
        "starts_at": "2026-10-01T00:00:00+08:00",
        "ends_at": "2026-10-08T00:00:00+08:00",
        "reason": "closed",
        "source": "calendar:cn",
        "holiday": "National Day",
    }
    assert {w.reason for w in cn_windows()} >= {"National Day", "Mid-Autumn Festival"}


def test_explicit_ranges() -> None:
    pauses = [
        Pause(scope="sku:a", reason="audit", starts_at="2026-03-01T10:00:00", ends_at="2026-03-02"),
        Pause(scope="sku:b", starts_at="2026-03-01T12:00:00+08:00", ends_at="2026-03-01T05:00Z"),
        Pause(scope="sku:c", ends_at="2026-02-01T00:00:00Z"),  # over before the range
        Pause(scope="sku:d", starts_at="2026-03-05T00:00:00Z"),
        Pause(scope="global", reason="frozen"),
    ]
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    ws = windows(pauses, {}, start, end)
    assert [w.scope for w in ws] == ["global", "sku:b", "sku:a", "sku:d"]
    by_scope = {w.scope: w for w in ws}
    assert by_scope["sku:a"].starts_at == datetime(2026, 3, 1, 10, tzinfo=UTC)  # naive is UTC
    assert by_scope["sku:a"].source == "config"
    assert by_scope["sku:b"].ends_at == datetime(2026, 3, 1, 5, tzinfo=UTC)
    assert by_scope["sku:d"].ends_at == LATEST
    assert by_scope["global"].starts_at == EARLIEST
    assert by_scope["global"].to_json() == {
        "scope": "global",
        "starts_at": None,
        "ends_at": None,
        "reason": "frozen",
        "source": "config",
    }
    assert windows(pauses[:1], {}, datetime(2026, 3, 2, tzinfo=UTC), end) == []  # [start, end)


def test_a_range_bounds_a_calendar_pause() -> None:
    pause = Pause(scope="global", calendar="cn", starts_at="2026-06-01T00:00:00+08:00")
    ws = windows([pause], CALS, YEAR_2026[0], sh(2027, 1, 1))
    holidays = ["Dragon Boat Festival", "Mid-Autumn Festival", "National Day"]
    assert [w.holiday for w in ws] == holidays
    # 2027-01-01T00:00Z is 08:00 in Shanghai: New Year's Day 2027 overlaps that range.
    assert windows([pause], CALS, *YEAR_2026)[-1].holiday == "New Year's Day"


def test_active_picks_the_window_for_the_scopes_that_ends_last() -> None:
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    hour = timedelta(hours=1)
    short = Window("global", t0, t0 + hour, "short", "config")
    long = Window("storefront:shop-a", t0, t0 + 3 * hour, "long", "config")
    other = Window("storefront:shop-b", t0, t0 + 9 * hour, "other", "config")
    ws = [short, long, other]
    keys = ("global", "storefront:shop-a", "sku:x")
    assert active(ws, keys, t0 - timedelta(microseconds=1)) is None
    assert active(ws, keys, t0) is long
    assert active(ws, keys, t0 + 2 * hour) is long
    assert active(ws, keys, t0 + 3 * hour) is None  # ends_at is exclusive
    assert active(ws, ["global"], t0 + hour - timedelta(microseconds=1)) is short
    assert active(ws, ["global"], t0 + hour) is None
    assert active(ws, ["storefront:shop-b"], datetime(2026, 5, 1, 8)) is other  # naive is UTC
    assert active([], keys, t0) is None


def test_bad_calendars_and_pauses() -> None:
    assert check_calendar(CN) is None
    assert check_calendar(Calendar(country="US", subdiv="CA", timezone="US/Pacific")) is None
    assert "'XX'" in (check_calendar(Calendar(country="XX")) or "")
    assert "Mars/Base" in (check_calendar(Calendar(country="CN", timezone="Mars/Base")) or "")
    assert check_calendar(Calendar(country="US", subdiv="ZZ")) is not None
    assert check_calendar(Calendar(country="CN", timezone="../etc")) is not None
    with pytest.raises(ValueError, match="XX"):
        holiday_blocks(Calendar(country="XX"), date(2026, 1, 1), date(2026, 1, 31))
    with pytest.raises(ValueError, match="nope"):
        windows([Pause(scope="global", calendar="nope")], CALS, *YEAR_2026)
    with pytest.raises(ValueError, match="sku:z"):
        windows([Pause(scope="sku:z", starts_at="tomorrow")], {}, *YEAR_2026)
    with pytest.raises(ValueError, match="too long"):
        windows([Pause(scope="global", calendar="cn")], CALS, EARLIEST, LATEST)

    assert check_pause(Pause(scope="global", calendar="cn"), CALS) is None
    assert check_pause(Pause(scope="sku:x", starts_at="2026-01-01T00:00Z"), {}) is None
    assert check_pause(Pause(scope="everything"), {}) is not None
    assert check_pause(Pause(scope="global", calendar="nope"), CALS) is not None
    assert check_pause(Pause(scope="global", starts_at="soon"), {}) is not None
    late = Pause(scope="global", starts_at="2026-01-02T00:00Z", ends_at="2026-01-01T00:00Z")
    assert check_pause(late, {}) is not None


def test_names_do_not_follow_the_process_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGUAGE", "zh_CN")
    holiday_year.cache_clear()
    try:
        assert holiday_blocks(CN, date(2026, 10, 1), date(2026, 10, 1))[0][2] == "National Day"
    finally:
        holiday_year.cache_clear()


@pytest.mark.parametrize("year", [2025, 2026])
def test_days_off_agree_with_chinese_calendar(year: int) -> None:
    day = date(year, 1, 1)
    while day.year == year:
        assert _is_off(CN, day) == chinese_calendar.is_holiday(day), day
        day += timedelta(days=1)

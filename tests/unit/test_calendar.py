"""Site calendar: entries, resolution of a date to its day type, validation, .ics import, and the
forecasters reading a listed day as its day type (a synthetic site whose Mondays and Tuesdays
differ)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from core.calendar import (
    CalendarError,
    DayType,
    SiteCalendar,
    parse_calendar,
)
from core.calendar_ics import parse_calendar_bytes, parse_ics
from core.forecast import day_ahead as da
from core.forecast.base import MinuteHistory
from core.forecast.baseline import SeasonalMeanForecaster
from core.forecast.features import (
    FeatureConfig,
    calendar_features,
    feature_blocks,
    local_minutes,
    minute_of_local,
    seasonal_mean_windows,
)

TZ = ZoneInfo("America/Chicago")


def _cal(*entries: dict[str, object], closed_like: str = "sunday") -> SiteCalendar:
    return parse_calendar({"closed_like": closed_like, "entries": list(entries)})


def test_single_dates_ranges_and_week_n_day_resolve_to_their_day_type() -> None:
    cal = _cal(
        {"date": "2022-08-23", "day_type": "like monday"},
        {"start": "2022-12-24", "end": "2023-01-02", "day_type": "closed"},
        # Thanksgiving: the 4th Thursday of November, every year.
        {
            "week_n_day": {"month": 11, "week_of_month": 4, "weekday": "thursday"},
            "day_type": "closed",
        },
        # Every 4 July, any year; the last day of every month runs like a Friday.
        {"date": "*-07-04", "day_type": "closed"},
        {"date": "*-*-32", "day_type": "Like Friday"},
    )
    assert cal.day_type(date(2022, 8, 23)) == DayType(0)
    assert cal.weekday_of(date(2022, 8, 23)) == 0
    assert cal.day_type(date(2022, 8, 24)) is None
    assert cal.weekday_of(date(2022, 8, 24)) == 2  # its own weekday
    assert cal.day_type(date(2022, 12, 31)) == DayType(None)  # inside the range, not last-day
    assert cal.weekday_of(date(2022, 12, 28)) == 6  # closed: runs like Sunday
    assert cal.day_type(date(2022, 11, 24)) == DayType(None)
    assert cal.day_type(date(2023, 11, 23)) == DayType(None)
    assert cal.day_type(date(2022, 11, 17)) is None  # the 3rd Thursday
    assert cal.day_type(date(2030, 7, 4)) == DayType(None)
    assert cal.day_type(date(2022, 2, 28)) == DayType(4)
    assert cal.day_type(date(2024, 2, 28)) is None  # 2024 is a leap year
    # A full date's weekday is redundant: dropped when right, an error when wrong.
    same = parse_calendar({"entries": [{"date": "2022-08-23", "weekday": 2, "day_type": "closed"}]})
    assert same.to_dict()["entries"] == [{"day_type": "closed", "date": "2022-08-23"}]
    with pytest.raises(CalendarError, match="is a tuesday, not a friday"):
        parse_calendar(
            {"entries": [{"date": "2022-08-23", "weekday": "fri", "day_type": "closed"}]}
        )
    # The JSON form round-trips.
    assert parse_calendar(cal.to_dict()).to_dict() == cal.to_dict()


def test_the_first_listing_entry_decides_and_closed_runs_like_the_sites_closed_weekday() -> None:
    cal = _cal(
        {"date": "2022-08-23", "day_type": "like monday"},
        {"start": "2022-08-20", "end": "2022-08-28", "day_type": "closed"},
        closed_like="saturday",
    )
    assert cal.weekday_of(date(2022, 8, 23)) == 0
    assert cal.weekday_of(date(2022, 8, 24)) == 5


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"entries": [{"date": "2022-02-30", "day_type": "closed"}]}, "entry 1: date"),
        ({"entries": [{"date": "2022-15-01", "day_type": "closed"}]}, "month"),
        ({"entries": [{"date": "tomorrow", "day_type": "closed"}]}, "not a date"),
        ({"entries": [{"date": "2022-08-23", "day_type": "like someday"}]}, "day_type"),
        ({"entries": [{"date": "2022-08-23", "day_type": "holiday"}]}, "day_type"),
        ({"entries": [{"date": "2022-08-23"}]}, "day_type"),
        ({"entries": [{"start": "2022-08-23", "day_type": "closed"}]}, "both 'start' and 'end'"),
        (
            {"entries": [{"start": "2022-08-23", "end": "2022-08-01", "day_type": "closed"}]},
            "before start",
        ),
        ({"entries": [{"week_n_day": {"month": 15}, "day_type": "closed"}]}, "month 15"),
        (
            {"entries": [{"week_n_day": {"week_of_month": 7}, "day_type": "closed"}]},
            "week_of_month",
        ),
        ({"entries": [{"date": "2022-08-23", "day_type": "closed", "colour": 1}]}, "colour"),
        ({"entries": "2022-08-23"}, "must be a list"),
        ({"closed_like": "funday", "entries": []}, "closed_like"),
        ({"extra": 1}, "unknown field"),
    ],
)
def test_bad_entries_are_clear_errors(body: dict[str, object], message: str) -> None:
    with pytest.raises(CalendarError, match=message):
        parse_calendar(body)


def test_same_type_lags_skip_listed_days_and_find_the_weekday_a_day_runs_like() -> None:
    cal = _cal(
        {"date": "2022-08-23", "day_type": "like monday"},  # a Tuesday
        {"date": "2022-08-16", "day_type": "closed"},  # the Tuesday before
    )
    day = (date(2022, 8, 23) - date(1970, 1, 1)).days
    assert cal.same_type_lag(day, 1) == 1  # Monday 22
    assert cal.same_type_lag(day, 2) == 8  # Monday 15
    # The next Tuesday skips both listed Tuesdays: 9 August is its 1st same-type day.
    assert cal.same_type_lag(day + 7, 1) == 21
    # The Monday after does not read the Tuesday that ran like a Monday: Monday 22 is 7 back.
    assert cal.same_type_lag(day + 6, 1) == 7
    # A day nothing near it is listed: plain weeks.
    assert cal.same_type_lag(day + 100, 2) == 14


def test_ics_with_recurring_holidays_imports_the_right_dates() -> None:
    ics = b"""BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//open-dsm test//EN
BEGIN:VEVENT
UID:thanksgiving@test
DTSTART;VALUE=DATE:20211125
DTEND;VALUE=DATE:20211126
RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=4TH
SUMMARY:Thanksgiving
END:VEVENT
BEGIN:VEVENT
UID:christmas@test
DTSTART;VALUE=DATE:20201224
DTEND;VALUE=DATE:20201227
RRULE:FREQ=YEARLY
SUMMARY:Christmas break
END:VEVENT
BEGIN:VEVENT
UID:staff@test
DTSTART;VALUE=DATE:20220823
DTEND;VALUE=DATE:20220824
SUMMARY:Staff day (like monday)
END:VEVENT
END:VCALENDAR
"""
    entries = parse_ics(ics, date(2022, 1, 1), date(2023, 12, 31))
    got = [(e.to_dict().get("date") or (e.to_dict()["start"], e.to_dict()["end"])) for e in entries]
    assert got == [
        "2022-08-23",
        "2022-11-24",
        ("2022-12-24", "2022-12-26"),
        "2023-11-23",
        ("2023-12-24", "2023-12-26"),
    ]
    assert [e.day_type.name for e in entries] == [
        "like monday",
        "closed",
        "closed",
        "closed",
        "closed",
    ]
    cal = parse_calendar_bytes(ics, date(2022, 1, 1), date(2023, 12, 31))
    assert cal.weekday_of(date(2023, 11, 23)) == 6
    assert cal.day_type(date(2021, 11, 25)) is None  # outside the window
    with pytest.raises(CalendarError, match="neither iCalendar nor JSON"):
        parse_calendar_bytes(b"\x00\x01 not a calendar", date(2022, 1, 1), date(2022, 12, 31))
    with pytest.raises(CalendarError, match="ics"):
        parse_calendar_bytes(b"BEGIN:VCALENDAR\nBEGIN:VEVENT\n", date(2022, 1, 1), date(2023, 1, 1))


# ---------------------------------------------------------------------------------------------
# the forecasters read a listed day as its day type

MONDAY_KW, TUESDAY_KW, OTHER_KW, NIGHT_KW = 30.0, 12.0, 20.0, 5.0


def _site(days: int) -> tuple[int, np.ndarray]:
    """Mondays run 8-17 h at 30 kW, Tuesdays 11-20 h at 12 kW, other days 8-17 h at 20 kW."""
    start = minute_of_local("2022-07-04 00:00", TZ)  # a Monday
    minutes = np.arange(start, start + days * 1440, dtype=np.int64)
    local = local_minutes(minutes, TZ)
    hour = (local % 1440) / 60.0
    weekday = (local // 1440 + 3) % 7
    kw = np.full(len(minutes), NIGHT_KW)
    kw[(weekday == 0) & (hour >= 8) & (hour < 17)] = MONDAY_KW
    kw[(weekday == 1) & (hour >= 11) & (hour < 20)] = TUESDAY_KW
    kw[(weekday >= 2) & (hour >= 8) & (hour < 17)] = OTHER_KW
    return start, kw


LIKE_MONDAY = _cal({"date": "2022-08-23", "day_type": "like monday"})  # a Tuesday


def _at(text: str) -> int:
    return minute_of_local(text, TZ)


def test_the_seasonal_base_of_a_listed_day_is_its_day_types_days() -> None:
    start, kw = _site(7 * 7 + 2)  # to Tuesday 23 August included
    origin = np.array([_at("2022-08-23 08:59")])
    plain = seasonal_mean_windows(start, kw, origin, TZ, 2, 60)
    told = seasonal_mean_windows(start, kw, origin, TZ, 2, 60, LIKE_MONDAY)
    assert plain[0, 30] == NIGHT_KW  # a Tuesday at 9:30: closed till 11
    assert told[0, 30] == MONDAY_KW  # like a Monday: open since 8
    # The baseline forecaster reads the calendar from the history it is given.
    fc = SeasonalMeanForecaster(2)
    lo = int(origin[0]) - fc.history_minutes + 1 - start
    now = datetime.now(UTC)
    history = MinuteHistory(start + lo, kw[lo : int(origin[0]) - start + 1])
    assert fc.forecast(history, TZ, now).kw[30] == NIGHT_KW  # type: ignore[union-attr]
    told_history = MinuteHistory(history.start_minute, history.values_kw, calendar=LIKE_MONDAY)
    assert fc.forecast(told_history, TZ, now).kw[30] == MONDAY_KW  # type: ignore[union-attr]
    day = fc.day_ahead(told_history, TZ, now)
    assert day is not None and day.p50_kw[6] == MONDAY_KW  # the step 10:30-10:45


def test_the_model_inputs_of_a_listed_day_are_its_day_types() -> None:
    start, kw = _site(7 * 7 + 2)
    origin = np.array([_at("2022-08-23 08:59")])
    config = FeatureConfig()
    plain = feature_blocks(start, kw, origin, TZ, config)
    told = feature_blocks(start, kw, origin, TZ, config, calendar=LIKE_MONDAY)
    # Day-of-week one-hot: Tuesday (column 2 + 1) without, Monday (2 + 0) with the calendar.
    assert plain.calendar[0, 3] == 1.0 and told.calendar[0, 2] == 1.0
    assert told.calendar[0, 3] == 0.0
    assert plain.baseline_kw[0, 30] == NIGHT_KW and told.baseline_kw[0, 30] == MONDAY_KW
    # Weekday groups read the weekday a day runs like too.
    groups = (0, 1, 2, 2, 2, 2, 2)
    grouped = feature_blocks(
        start, kw, origin, TZ, FeatureConfig(weekday_groups=groups), calendar=LIKE_MONDAY
    )
    assert grouped.baseline_kw[0, 30] == MONDAY_KW
    # An empty calendar changes nothing.
    empty = feature_blocks(start, kw, origin, TZ, config, calendar=SiteCalendar())
    assert np.array_equal(empty.baseline_kw, plain.baseline_kw)
    assert np.array_equal(empty.calendar, plain.calendar)


def test_past_listed_days_do_not_pull_the_base_of_their_weekday() -> None:
    # Tuesday 16 August ran like a Monday; the Tuesday after reads 9 and 2 August instead.
    start, kw = _site(7 * 7 + 2)
    listed = (date(2022, 8, 16) - date(2022, 7, 4)).days * 1440
    hours = np.arange(8 * 60, 17 * 60)
    kw[listed : listed + 1440] = NIGHT_KW
    kw[listed + hours] = MONDAY_KW
    cal = _cal({"date": "2022-08-16", "day_type": "like monday"})
    origin = np.array([_at("2022-08-23 08:59")])
    plain = seasonal_mean_windows(start, kw, origin, TZ, 2, 60)
    told = seasonal_mean_windows(start, kw, origin, TZ, 2, 60, cal)
    assert plain[0, 30] == pytest.approx((MONDAY_KW + NIGHT_KW) / 2)
    assert told[0, 30] == NIGHT_KW


def test_the_day_ahead_base_and_calendar_inputs_follow_the_listed_day() -> None:
    start, kw = _site(7 * 7 + 2)
    origin = np.array([_at("2022-08-22 23:59")])  # step 0 starts Tuesday 23 at 0:00
    plain = da.day_ahead_blocks(start, kw, origin, TZ)
    told = da.day_ahead_blocks(start, kw, origin, TZ, calendar=LIKE_MONDAY)
    step_9h = 9 * 4
    assert plain.baseline_kw[0, step_9h] == NIGHT_KW
    assert told.baseline_kw[0, step_9h] == MONDAY_KW
    grouped = da.day_ahead_blocks(
        start, kw, origin, TZ, groups=(0, 1, 2, 2, 2, 2, 2), calendar=LIKE_MONDAY
    )
    assert grouped.baseline_kw[0, step_9h] == MONDAY_KW
    minutes = np.array([_at("2022-08-23 09:00"), _at("2022-08-24 09:00")])
    features = calendar_features(minutes, TZ, LIKE_MONDAY)
    assert features[0, 2] == 1.0 and features[1, 4] == 1.0


def test_the_bench_reads_a_calendar_file_as_json_or_ics(tmp_path: Path) -> None:
    from bench.forecast import load_bench_calendar

    start = minute_of_local("2022-07-01 00:00", TZ)
    end = minute_of_local("2022-08-31 23:59", TZ)
    assert load_bench_calendar(None, start, end) is None
    body = tmp_path / "cal.json"
    body.write_text('{"entries": [{"date": "2022-08-23", "day_type": "like monday"}]}')
    got = load_bench_calendar(body, start, end)
    assert got is not None and got.weekday_of(date(2022, 8, 23)) == 0
    ics = tmp_path / "cal.ics"
    ics.write_text(
        "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//t//EN\nBEGIN:VEVENT\nUID:a@t\n"
        "DTSTART;VALUE=DATE:20220704\nDTEND;VALUE=DATE:20220705\nSUMMARY:Independence Day\n"
        "END:VEVENT\nEND:VCALENDAR\n"
    )
    got = load_bench_calendar(ics, start, end)
    assert got is not None and got.day_type(date(2022, 7, 4)) == DayType(None)
    with pytest.raises(CalendarError, match=r"cal\.json"):
        body.write_text('{"entries": [{"date": "2022-08-23", "day_type": "like noday"}]}')
        load_bench_calendar(body, start, end)

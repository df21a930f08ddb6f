"""The seasonal-mean baseline forecaster and the DST-aware weekly lag."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from core.forecast.base import MinuteHistory
from core.forecast.baseline import SeasonalMeanForecaster
from core.timegrid import (
    MINUTES_PER_WEEK,
    minute_of,
    minute_start,
    same_local_time_weeks_ago,
    utc_offsets,
)

CHICAGO = ZoneInfo("America/Chicago")
MADE = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)


def test_weekly_lag_keeps_local_wall_clock_across_dst() -> None:
    # 2026-03-14 10:00 CDT is one week after 2026-03-07 10:00 CST (DST began 03-08 02:00).
    after = datetime(2026, 3, 14, 10, 0, tzinfo=CHICAGO)
    before = datetime(2026, 3, 7, 10, 0, tzinfo=CHICAGO)
    lagged = same_local_time_weeks_ago(np.array([minute_of(after)]), 1, CHICAGO)
    assert lagged[0] == minute_of(before)
    assert minute_of(after) - lagged[0] == MINUTES_PER_WEEK - 60  # only 167 h elapsed
    summer = datetime(2026, 7, 15, 10, 0, tzinfo=CHICAGO)
    plain = same_local_time_weeks_ago(np.array([minute_of(summer)]), 2, CHICAGO)
    assert minute_of(summer) - plain[0] == 2 * MINUTES_PER_WEEK


def test_mean_of_the_same_minute_in_the_last_two_weeks() -> None:
    forecaster = SeasonalMeanForecaster(weeks=2)
    length = forecaster.history_minutes
    origin = minute_of(MADE)
    rng = np.random.default_rng(1)
    values = rng.uniform(5, 15, size=length)
    history = MinuteHistory(origin - length + 1, values)
    forecast = forecaster.forecast(history, ZoneInfo("UTC"), MADE)
    assert forecast is not None
    for step in (1, 30, 60):
        target = origin + step
        expected = (
            history.at(target - MINUTES_PER_WEEK) + history.at(target - 2 * MINUTES_PER_WEEK)
        ) / 2
        assert forecast.kw[step - 1] == pytest.approx(expected)
    assert forecast.one_hour_kw == forecast.kw[59]
    assert forecast.note == ""
    assert forecast.forecaster == "mean-2-weeks"


def test_missing_weeks_fall_back_to_one_week_then_persistence() -> None:
    forecaster = SeasonalMeanForecaster(weeks=2)
    origin = minute_of(MADE)
    length = forecaster.history_minutes
    values = np.full(length, np.nan)
    start = origin - length + 1
    values[-1] = 7.0  # the last minute
    one_week_target = origin + 10 - MINUTES_PER_WEEK
    values[one_week_target - start] = 20.0
    forecast = forecaster.forecast(MinuteHistory(start, values), ZoneInfo("UTC"), MADE)
    assert forecast is not None
    assert forecast.kw[9] == 20.0  # only last week's value exists for step 10
    assert forecast.kw[0] == 7.0 and forecast.kw[59] == 7.0  # persistence elsewhere
    assert "persistence for 59 of 60" in forecast.note


def test_no_data_at_all_gives_no_forecast() -> None:
    forecaster = SeasonalMeanForecaster()
    history = MinuteHistory(0, np.full(forecaster.history_minutes, np.nan))
    assert forecaster.forecast(history, ZoneInfo("UTC"), MADE) is None


def test_forecast_times() -> None:
    forecaster = SeasonalMeanForecaster()
    origin = minute_of(MADE)
    history = MinuteHistory(origin, np.array([3.0]))
    forecast = forecaster.forecast(history, ZoneInfo("UTC"), MADE)
    assert forecast is not None
    assert forecast.origin == MADE
    assert forecast.target(60) == MADE + timedelta(minutes=60)
    assert forecast.peak_kw == 3.0 and forecast.peak_step == 1


@pytest.mark.parametrize(
    "zone", ["America/Chicago", "Australia/Lord_Howe", "Pacific/Chatham", "Asia/Kolkata"]
)
def test_vectorised_offsets_match_the_zone_minute_by_minute(zone: str) -> None:
    # Three days around each 2022 transition, every minute: 30-minute DST (Lord Howe), a 12:45
    # offset (Chatham) and no DST (Kolkata) included.
    tz = ZoneInfo(zone)
    days = [datetime(2022, month, 1, tzinfo=UTC) for month in range(1, 13)]
    starts = []
    for day in days:
        for hour in range(0, 24 * 31, 6):
            at = day + timedelta(hours=hour)
            if (
                at.astimezone(tz).utcoffset()
                != (at + timedelta(hours=6)).astimezone(tz).utcoffset()
            ):
                starts.append(minute_of(at))
    minutes = np.concatenate(
        [np.arange(s - 1440, s + 1440, dtype=np.int64) for s in starts[:4]]
        or [np.arange(minute_of(days[0]), minute_of(days[0]) + 2880, dtype=np.int64)]
    )
    expected = [
        int(minute_start(m).astimezone(tz).utcoffset().total_seconds() // 60)  # type: ignore[union-attr]
        for m in minutes.tolist()
    ]
    assert utc_offsets(minutes, tz).tolist() == expected

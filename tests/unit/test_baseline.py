"""The seasonal-mean baseline forecaster and the DST-aware weekly lag."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from core.forecast.base import MinuteHistory
from core.forecast.baseline import SeasonalMeanForecaster
from core.timegrid import MINUTES_PER_WEEK, minute_of, same_local_time_weeks_ago

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

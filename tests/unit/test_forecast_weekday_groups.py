"""The day-ahead base over weekday groups: finding weekdays that run alike, and the grouped mean."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import numpy as np
import pytest

from core.forecast import day_ahead as da
from core.forecast.features import NO_GROUPS, local_minutes, minute_of_local

TZ = ZoneInfo("America/Chicago")
# Schedules by weekday (Monday first): (start hour, stop hour, kW while open); None: closed.
SHARED_FILE_LIKE = [(8, 17, 18.0), (11, 20, 19.0), (8, 17, 18.0), (11, 20, 19.0)]
SHARED_FILE_LIKE += [(8, 17, 18.0), (8, 17, 18.0), None]


def _site(
    schedules: list[tuple[int, int, float] | None], days: int, first: str, seed: int = 5
) -> tuple[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    start = minute_of_local(first, TZ)
    minutes = np.arange(start, start + days * 1440, dtype=np.int64)
    local = local_minutes(minutes, TZ)
    hour = (local % 1440) / 60.0
    weekday = (local // 1440 + 3) % 7
    kw = np.full(len(minutes), 3.0)
    for day, schedule in enumerate(schedules):
        if schedule is None:
            continue
        open_at, close_at, level = schedule
        kw[(weekday == day) & (hour >= open_at) & (hour < close_at)] = level
    return start, kw + rng.normal(0.0, 0.7, len(minutes))


def test_weekdays_on_the_same_schedule_form_a_group_across_a_dst_change() -> None:
    # Five weeks that cross the spring-forward change (2023-03-12).
    start, kw = _site(SHARED_FILE_LIKE, 35, "2023-02-20 00:00")
    end = start + len(kw) - 1
    assert da.weekday_groups(start, kw, TZ, end) == (0, 1, 0, 1, 0, 0, 6)


def test_a_building_that_runs_alike_every_day_is_one_group() -> None:
    start, kw = _site([(7, 19, 15.0)] * 7, 21, "2022-07-04 00:00")
    assert da.weekday_groups(start, kw, TZ, start + len(kw) - 1) == (0,) * 7


def test_weekdays_that_all_differ_stay_apart_and_short_histories_find_nothing() -> None:
    schedules: list[tuple[int, int, float] | None] = [
        (6 + d, 12 + d, 10.0 + 3 * d) for d in range(7)
    ]
    start, kw = _site(schedules, 28, "2022-07-04 00:00")
    assert da.weekday_groups(start, kw, TZ, start + len(kw) - 1) == NO_GROUPS
    start, kw = _site(SHARED_FILE_LIKE, 6, "2022-07-04 00:00")
    assert da.weekday_groups(start, kw, TZ, start + len(kw) - 1) == NO_GROUPS


def test_a_dead_week_does_not_split_the_groups() -> None:
    start, kw = _site(SHARED_FILE_LIKE, 35, "2022-07-04 00:00")
    kw[7 * 1440 : 14 * 1440] = np.nan  # the meter was off for the second week
    assert da.weekday_groups(start, kw, TZ, start + len(kw) - 1) == (0, 1, 0, 1, 0, 0, 6)


def test_the_grouped_base_averages_the_group_days_measured_by_the_origin() -> None:
    # Each local day holds its own day number as kW: the base shows which days it averaged.
    start = minute_of_local("2022-07-04 00:00", TZ)  # a Monday
    days = 21
    kw = np.repeat(np.arange(days, dtype=np.float64), 1440)
    groups = (0, 1, 0, 1, 0, 0, 6)
    # Origin: day 16 (Wednesday) 10:00 local. Step 0 is on day 16; the last steps on day 17.
    origin = start + 16 * 1440 + 600 - 1
    blocks = da.day_ahead_blocks(start, kw, np.array([origin]), TZ, groups=groups)
    base = blocks.baseline_kw[0]
    # Wednesday's group (Mon, Wed, Fri, Sat) in days 2..15: Mon 7, 14; Wed 2, 9; Fri 4, 11;
    # Sat 5, 12.
    assert base[0] == pytest.approx(np.mean([2, 4, 5, 7, 9, 11, 12, 14]))
    # A Thursday step (day 17): Tuesday and Thursday of days 3..16: 3, 8, 10, 15.
    assert base[95] == pytest.approx(np.mean([3, 8, 10, 15]))
    # Without groups: the same weekday one and two weeks back.
    plain = da.day_ahead_blocks(start, kw, np.array([origin]), TZ).baseline_kw[0]
    assert plain[0] == pytest.approx(np.mean([2, 9]))
    # Monday (day 14) 10:00: step 95 is Tuesday 09:45, a Tuesday-group step (days 1, 3, 8, 10).
    origin = start + 14 * 1440 + 600 - 1
    base = da.day_ahead_blocks(start, kw, np.array([origin]), TZ, groups=groups).baseline_kw[0]
    assert base[95] == pytest.approx(np.mean([1, 3, 8, 10]))
    # One group for every weekday: step 95 reads days 1..14, today's 09:45 step included (it
    # ends at the origin; 24 h ahead, a day earlier is always measured).
    base = da.day_ahead_blocks(start, kw, np.array([origin]), TZ, groups=(0,) * 7).baseline_kw
    assert base[0, 95] == pytest.approx(np.mean(np.arange(1, 15)))


def test_choose_base_prefers_groups_only_when_they_score_better() -> None:
    rng = np.random.default_rng(2)
    actual = 10.0 + rng.normal(0.0, 1.0, (50, 96))
    close = actual + rng.normal(0.0, 0.5, actual.shape)
    far = actual + rng.normal(0.0, 2.0, actual.shape)
    groups = (0, 1, 0, 1, 0, 0, 6)
    chosen, width, scores = da.choose_base({None: far, groups: close}, actual)
    assert chosen == groups and width == 1
    assert scores["groups/1"] < scores["weeks/1"]
    # A tie keeps mean-2-weeks.
    chosen, _, _ = da.choose_base({None: close, groups: close}, actual)
    assert chosen is None


def test_the_hour_ahead_base_averages_the_origin_weekday_group() -> None:
    from core.forecast.features import FeatureConfig, feature_blocks

    start = minute_of_local("2022-07-04 00:00", TZ)  # a Monday
    kw = np.repeat(np.arange(21, dtype=np.float64), 1440)
    origin = start + 16 * 1440 + 600 - 1  # Wednesday (day 16) 09:59 local
    grouped = FeatureConfig(weekday_groups=(0, 1, 0, 1, 0, 0, 6))
    base = feature_blocks(start, kw, np.array([origin]), TZ, grouped).baseline_kw[0]
    np.testing.assert_allclose(base, np.mean([2, 4, 5, 7, 9, 11, 12, 14]))
    plain = feature_blocks(start, kw, np.array([origin]), TZ, FeatureConfig()).baseline_kw[0]
    np.testing.assert_allclose(plain, np.mean([2, 9]))
    # The other inputs do not change with the groups.
    a = feature_blocks(start, kw, np.array([origin]), TZ, grouped)
    b = feature_blocks(start, kw, np.array([origin]), TZ, FeatureConfig())
    np.testing.assert_array_equal(a.seasonal_kw, b.seasonal_kw)
    # The configuration keeps its groups in the artifact; older artifacts have none.
    data = grouped.to_dict()
    assert FeatureConfig.from_dict(data) == grouped
    del data["weekday_groups"]
    assert FeatureConfig.from_dict(data).weekday_groups is None
    with pytest.raises(ValueError, match="weekday_groups"):
        FeatureConfig.from_dict({**grouped.to_dict(), "weekday_groups": [0] * 6})


def test_a_weekday_never_seen_a_week_apart_stays_alone() -> None:
    # Nine days: only Monday and Tuesday have a day a week earlier to compare with.
    start, kw = _site([(7, 19, 15.0)] * 7, 9, "2022-07-04 00:00")
    groups = da.weekday_groups(start, kw, TZ, start + len(kw) - 1)
    assert groups[:2] == (0, 0)
    assert groups[2:] == (2, 3, 4, 5, 6)

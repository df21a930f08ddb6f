"""Day-ahead features and targets in plain numpy: the next 96 clock-aligned 15-minute steps.

Step 0 is the step in progress at the origin (as in ``DayAheadForecast``). All windows are means
from prefix sums, so a batch of origins costs O(origins x steps), never O(origins x minutes).
The model predicts each step's mean as a residual over a seasonal base: the mean of the same
local steps one and two weeks earlier (the 'mean-2-weeks' day-ahead) or, where training chose it,
the mean over every day of the last two weeks whose weekday runs like the target's
(``weekday_groups``).
"""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from core.calendar import SiteCalendar, day_numbers
from core.forecast.base import DAY_AHEAD_STEP_MINUTES, DAY_AHEAD_STEPS
from core.forecast.evaluation import cvrmse_pct
from core.forecast.features import (
    NO_GROUPS,
    FloatArray,
    IntArray,
    Scaling,
    WeekdayGroups,
    _moving_mean,
    _quiet,
    active,
    as_weekday_groups,
    calendar_features,
    effective_weekday,
    has_groups,
    local_minutes,
    same_group,
    same_group_days,
    same_type_weeks_ago,
    scaled_weather,
    weather_features,
    window_means,
)
from core.timegrid import (
    MINUTES_PER_DAY,
    MINUTES_PER_WEEK,
    same_wall_clock_days_ago,
    utc_offsets,
)

STEP = DAY_AHEAD_STEP_MINUTES
STEPS = DAY_AHEAD_STEPS
WEEKS = 2
# History a day-ahead forecast reads: two weeks before the last step, a day of recent steps
# and a DST hour.
HISTORY_MINUTES = WEEKS * MINUTES_PER_WEEK + MINUTES_PER_DAY + 120
LEVEL_SPANS = (60, 180, MINUTES_PER_DAY)
# Widths (in steps) of the centred moving mean the seasonal base may be smoothed with; training
# chooses one on its validation days (1: none, as artifacts without the field).
BASELINE_SMOOTH_CHOICES = (1, 3, 5)
# Weekday groups: the base reads the days of the last GROUP_LAG_DAYS whose weekday is in the
# target's group. Groups are found in the last GROUP_WEEKS weeks of history: two weekdays join
# when their days differ (RMS over the 96 steps, median over pairs at most GROUP_PAIR_DAYS apart)
# by at most GROUP_FACTOR times how much each weekday differs from itself a week later.
GROUP_LAG_DAYS = 14
GROUP_WEEKS = 8
GROUP_PAIR_DAYS = 14
GROUP_FACTOR = 1.25
# A day with more than this share of its steps unknown takes no part in finding groups.
GROUP_MAX_MISSING = 0.2


def step_start(origins: IntArray) -> IntArray:
    """Start minute of the step in progress at each origin (the origin minute is complete)."""
    return np.asarray(((np.asarray(origins) + 1) // STEP) * STEP, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class DayAheadBlocks:
    """Raw (kW) day-ahead inputs for a batch of origins."""

    recent_kw: FloatArray  # (n, 24) hourly means of the last 24 h, oldest first
    level_kw: FloatArray  # (n, 3) last 1 h / 3 h / 24 h minus the same spans 1-2 weeks earlier
    partial_kw: FloatArray  # (n,) mean of the step in progress so far (NaN at a step boundary)
    elapsed: FloatArray  # (n,) fraction of the step in progress already measured
    weeks_kw: FloatArray  # (n, WEEKS * 96) the same local steps 1..WEEKS weeks earlier
    baseline_kw: FloatArray  # (n, 96) their mean (persistence where none): the residual base
    calendar: FloatArray  # (n, 9) of the first step
    weather: FloatArray  # (n, 3 or 0)


def day_ahead_blocks(
    start_minute: int,
    values_kw: FloatArray,
    origins: IntArray,
    tz: ZoneInfo,
    outdoor_air: FloatArray | None = None,
    use_outdoor_air: bool = False,
    smooth_steps: int = 1,
    groups: WeekdayGroups | None = None,
    calendar: SiteCalendar | None = None,
) -> DayAheadBlocks:
    """Day-ahead inputs for each origin from one series (and its outdoor air).

    ``smooth_steps`` > 1 smooths the seasonal base over that many neighbouring steps (see
    ``smooth_profile``); ``groups`` (see ``weekday_groups``) makes the base the mean over the
    days of the last two weeks in the target weekday's group instead of the same weekday only.
    ``calendar``: each step's day is the type it lists (weeks read the same-type days).
    """
    cal = active(calendar)
    origins = np.asarray(origins, dtype=np.int64)
    n = len(origins)
    first = step_start(origins)
    steps = np.arange(STEPS, dtype=np.int64) * STEP
    hours = np.arange(24, dtype=np.int64) * 60
    recent_lo = origins[:, None] + 1 - MINUTES_PER_DAY + hours[None, :]
    recent = window_means(start_minute, values_kw, recent_lo, 60)
    levels = []
    for span in LEVEL_SPANS:
        now = window_means(start_minute, values_kw, origins + 1 - span, span)
        past = [
            window_means(
                start_minute,
                values_kw,
                same_type_weeks_ago(origins + 1 - span, week, tz, cal),
                span,
            )
            for week in range(1, WEEKS + 1)
        ]
        with _quiet():
            levels.append(now - np.nanmean(np.stack(past, axis=0), axis=0))
    level = np.stack(levels, axis=1)
    elapsed_minutes = origins + 1 - first
    partial = _partial(start_minute, values_kw, first, elapsed_minutes)
    targets = first[:, None] + steps[None, :]
    weeks = []
    for week in range(1, WEEKS + 1):
        lagged = same_type_weeks_ago(targets.reshape(-1), week, tz, cal).reshape(n, STEPS)
        weeks.append(window_means(start_minute, values_kw, lagged, STEP))
    if groups is None or not has_groups(groups):
        with _quiet():
            baseline = np.nanmean(np.stack(weeks, axis=0), axis=0)
    else:
        baseline = grouped_base(start_minute, values_kw, origins, targets, tz, groups, cal)
    last = _last_valid(recent, partial)
    baseline = smooth_profile(np.where(np.isnan(baseline), last[:, None], baseline), smooth_steps)
    return DayAheadBlocks(
        recent_kw=recent,
        level_kw=level,
        partial_kw=partial,
        elapsed=elapsed_minutes / STEP,
        weeks_kw=np.concatenate(weeks, axis=1),
        baseline_kw=baseline,
        calendar=calendar_features(first, tz, cal),
        weather=(
            weather_features(start_minute, outdoor_air, origins)
            if use_outdoor_air
            else np.zeros((n, 0))
        ),
    )


def grouped_base(
    start_minute: int,
    values_kw: FloatArray,
    origins: IntArray,
    targets: IntArray,
    tz: ZoneInfo,
    groups: WeekdayGroups,
    calendar: SiteCalendar | None = None,
) -> FloatArray:
    """Mean of each target step over the same local steps 1..GROUP_LAG_DAYS days earlier whose
    weekday is in the target weekday's group and that were measured by the origin (NaN where
    none is known). Lags 7 and 14 always qualify, so this is never thinner than mean-2-weeks
    (without a calendar; with one, weekdays are those the days run like)."""
    cal = active(calendar)
    shape = targets.shape
    flat = targets.reshape(-1)
    weekday = effective_weekday(flat, tz, cal).reshape(shape)
    day = day_numbers(local_minutes(flat, tz)).reshape(shape) if cal is not None else None
    sums = np.zeros(shape)
    counts = np.zeros(shape)
    for lag in range(1, GROUP_LAG_DAYS + 1):
        if cal is None or day is None:
            same = same_group(groups, weekday, lag)
        else:
            # Listed days are exceptions: no step's base reads them.
            then = day - lag
            same = same_group_days(groups, weekday, cal.weekdays(then)) & cal.ordinary(then)
        if not same.any():
            continue
        lagged = same_wall_clock_days_ago(flat, lag, tz).reshape(shape)
        use = same & (lagged + STEP - 1 <= origins[:, None])
        if not use.any():
            continue
        mean = window_means(start_minute, values_kw, lagged, STEP)
        ok = use & ~np.isnan(mean)
        sums += np.where(ok, mean, 0.0)
        counts += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def weekday_groups(
    start_minute: int,
    values_kw: FloatArray,
    tz: ZoneInfo,
    end_minute: int,
    calendar: SiteCalendar | None = None,
) -> WeekdayGroups:
    """Which weekdays run alike, from the local days of the last GROUP_WEEKS weeks up to
    ``end_minute``: one label per weekday (Monday first; a group's label is its first weekday;
    with a calendar a listed day counts as the weekday it runs like).

    Many buildings run a few schedules (say Monday, Wednesday, Friday and Saturday 8-17, Tuesday
    and Thursday 11-20, closed Sunday); a base that averages every day of a schedule reads four
    times as many days as one that averages the same weekday, and follows changes faster. A
    weekday without comparable days stays alone; a holiday counts once in a median.
    """
    lo = max(start_minute, end_minute - GROUP_WEEKS * MINUTES_PER_WEEK)
    bounds = np.array([lo, end_minute], dtype=np.int64)
    local_lo, local_end = (bounds + utc_offsets(bounds, tz)).tolist()
    first_day = -(-local_lo // MINUTES_PER_DAY)  # first local midnight at or after lo
    days = (local_end + 1) // MINUTES_PER_DAY - first_day
    if days < 8:
        return NO_GROUPS
    day_index = first_day + np.arange(days, dtype=np.int64)
    local_midnight = day_index * MINUTES_PER_DAY
    # Each day's UTC offset read at its local noon: right for the whole day except the first
    # hours of a DST change, close enough to compare profiles.
    guess = local_midnight + MINUTES_PER_DAY // 2 - (local_lo - lo)
    midnight = local_midnight - utc_offsets(guess, tz)
    lows = midnight[:, None] + np.arange(STEPS, dtype=np.int64)[None, :] * STEP
    profiles = window_means(start_minute, values_kw, lows, STEP)
    usable = np.isnan(profiles).mean(axis=1) <= GROUP_MAX_MISSING
    cal = active(calendar)
    weekday = np.mod(day_index + 3, 7)
    if cal is not None:
        # Listed days are exceptions: they take no part in finding which weekdays run alike.
        usable &= cal.ordinary(day_index)
    pairs: list[list[list[float]]] = [[[] for _ in range(7)] for _ in range(7)]
    for i in range(days):
        if not usable[i]:
            continue
        for j in range(max(0, i - GROUP_PAIR_DAYS), i):
            if not usable[j]:
                continue
            with _quiet():
                rms = float(np.sqrt(np.nanmean((profiles[i] - profiles[j]) ** 2)))
            if np.isfinite(rms):
                a, b = int(weekday[i]), int(weekday[j])
                pairs[a][b].append(rms)
                if a != b:
                    pairs[b][a].append(rms)
    dist = np.full((7, 7), np.nan)
    for a in range(7):
        for b in range(7):
            if pairs[a][b]:
                dist[a, b] = float(np.median(pairs[a][b]))
    with _quiet():
        floor = 0.02 * float(np.nanmean(np.abs(profiles[usable]))) if usable.any() else 0.0
    labels = list(range(7))
    for a in range(1, 7):
        for b in range(a):
            if labels[b] != b:
                continue
            members = [c for c in range(7) if labels[c] == b]
            if all(_alike(dist, a, c, floor) for c in members):
                labels[a] = b
                break
    return as_weekday_groups(labels)


def _alike(dist: FloatArray, a: int, b: int, floor: float) -> bool:
    """Weekdays a and b run alike: both have days to compare with themselves a week apart and
    with each other, and differ by little more than each differs from itself."""
    if not np.isfinite([dist[a, b], dist[a, a], dist[b, b]]).all():
        return False
    own = max(float(dist[a, a]), float(dist[b, b]), floor)
    return bool(dist[a, b] <= GROUP_FACTOR * own)


def smooth_profile(profile_kw: FloatArray, width_steps: int) -> FloatArray:
    """Centred moving mean over ``width_steps`` neighbouring steps of each row (the ends use the
    steps that exist). Where the weeks disagree on when the building starts or stops, the mean
    of neighbouring steps is a better expectation than either week's sharp edge."""
    if width_steps <= 1:
        return profile_kw
    return _moving_mean(profile_kw, width_steps)


def choose_base(
    bases: dict[WeekdayGroups | None, FloatArray],
    actual_kw: FloatArray,
    choices: tuple[int, ...] = BASELINE_SMOOTH_CHOICES,
) -> tuple[WeekdayGroups | None, int, dict[str, float]]:
    """The seasonal base (weekday groups or None for mean-2-weeks) and smoothing width whose
    profile scores the lowest CV(RMSE) against the outcomes, and every pair's score. On a tie
    the plainer choice wins: mean-2-weeks before groups, the narrower width."""
    ok = ~np.isnan(actual_kw)
    scored: list[tuple[float, int, int, WeekdayGroups | None]] = []
    scores: dict[str, float] = {}
    for rank, (groups, base) in enumerate(bases.items()):
        for width in choices:
            score = cvrmse_pct(smooth_profile(base, width)[ok], actual_kw[ok])
            scores[f"{'weeks' if groups is None else 'groups'}/{width}"] = score
            scored.append((round(score, 6), rank, width, groups))
    _, _, width, groups = min(scored, key=lambda row: row[:3])
    return groups, width, scores


def _partial(
    start_minute: int, values_kw: FloatArray, first: IntArray, length: IntArray
) -> FloatArray:
    """Mean of minutes first .. first+length-1 for per-row lengths (prefix sums)."""
    valid = ~np.isnan(values_kw)
    csum = np.concatenate(([0.0], np.cumsum(np.where(valid, values_kw, 0.0))))
    ccount = np.concatenate(([0], np.cumsum(valid)))
    a = np.clip(first - start_minute, 0, len(values_kw))
    b = np.clip(first - start_minute + length, 0, len(values_kw))
    count = ccount[b] - ccount[a]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (csum[b] - csum[a]) / np.maximum(count, 1), np.nan)


def _last_valid(recent: FloatArray, partial: FloatArray) -> FloatArray:
    valid = ~np.isnan(recent)
    has = valid.any(axis=1)
    pos = recent.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1)
    last = np.where(has, recent[np.arange(len(recent)), pos], np.nan)
    return np.where(np.isnan(partial), last, partial)


def day_ahead_targets(start_minute: int, values_kw: FloatArray, origins: IntArray) -> FloatArray:
    """Actual mean of each of the 96 steps (NaN where a step has fewer than 10 minutes)."""
    origins = np.asarray(origins, dtype=np.int64)
    first = step_start(origins)
    lo = first[:, None] + np.arange(STEPS, dtype=np.int64)[None, :] * STEP
    mean = window_means(start_minute, values_kw, lo, STEP)
    valid = ~np.isnan(values_kw)
    ccount = np.concatenate(([0], np.cumsum(valid)))
    a = np.clip(lo - start_minute, 0, len(values_kw))
    b = np.clip(lo - start_minute + STEP, 0, len(values_kw))
    return np.where(ccount[b] - ccount[a] >= 10, mean, np.nan)


def day_ahead_matrix(blocks: DayAheadBlocks, scaling: Scaling) -> npt.NDArray[np.float32]:
    """Scaled model input, compact on purpose (a site has few distinct days to learn from):
    how the last day's hours and the step in progress differ from the seasonal mean, the level
    offsets, the seasonal mean's own level, the calendar, outdoor air and missing flags."""
    c, s = scaling.center_kw, scaling.scale_kw
    base = blocks.baseline_kw
    # The seasonal mean of the last day's hours is not in the blocks; the offsets against the
    # weeks are: hourly means minus the baseline's mean level keep the shape of the day.
    base_level = np.nanmean(base, axis=1, keepdims=True)
    recent_missing = np.isnan(blocks.recent_kw).mean(axis=1, keepdims=True)
    recent = np.where(np.isnan(blocks.recent_kw), base_level, blocks.recent_kw)
    partial_off = np.nan_to_num(blocks.partial_kw - base[:, 0], nan=0.0)
    weeks_missing = np.isnan(blocks.weeks_kw).mean(axis=1, keepdims=True)
    week1 = blocks.weeks_kw[:, :STEPS]
    week2 = blocks.weeks_kw[:, STEPS : 2 * STEPS]
    # How much the two weeks disagree, in 6-hour blocks (a hint at how far to trust them).
    spread = np.nan_to_num(np.abs(week1 - week2), nan=0.0).reshape(len(base), 4, -1).mean(axis=2)
    x = np.concatenate(
        [
            (recent - base_level) / s,
            (partial_off / s)[:, None],
            blocks.elapsed[:, None],
            np.nan_to_num(blocks.level_kw, nan=0.0) / s,
            (base_level - c) / s,
            spread / s,
            blocks.calendar,
            recent_missing,
            weeks_missing,
            scaled_weather(blocks.weather, scaling),
        ],
        axis=1,
    )
    return np.asarray(np.nan_to_num(x, nan=0.0), dtype=np.float32)


def day_ahead_origins(
    start_minute: int,
    values_kw: FloatArray,
    first_origin: int,
    last_origin: int,
    stride: int = 5,
) -> IntArray:
    """Origins every ``stride`` minutes in [first, last] whose 96 steps all have data and whose
    last hour is mostly present."""
    lo = first_origin + (-(first_origin + 1)) % stride
    origins = np.arange(lo, last_origin + 1, stride, dtype=np.int64)
    if len(origins) == 0:
        return origins
    targets = day_ahead_targets(start_minute, values_kw, origins)
    recent = window_means(start_minute, values_kw, origins - 59, 60)
    keep = ~np.isnan(targets).any(axis=1) & ~np.isnan(recent)
    return np.asarray(origins[keep], dtype=np.int64)

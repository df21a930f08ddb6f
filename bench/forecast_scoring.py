"""`open-dsm bench forecast` scoring: outcomes (with --skip-days), metrics, served bands, table."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from core.accuracy import BAND_GAMMA, DAY_AHEAD_BAND_GAMMA, BandAdapter
from core.calendar import SiteCalendar
from core.forecast import day_ahead as da
from core.forecast.base import HORIZON_MINUTES, MinuteHistory
from core.forecast.baseline import SeasonalMeanForecaster
from core.forecast.evaluation import cvrmse_pct, forecast_metrics
from core.forecast.features import (
    FloatArray,
    IntArray,
    local_minutes,
)
from core.timegrid import MINUTES_PER_DAY

COLUMNS = (
    "model",
    "rmse_60",
    "mae_60",
    "rmse_1_60",
    "cvrmse_15min_60",
    "cvrmse_15min_day_ahead",
    "coverage_p10_p90_60",
    "coverage_p10_p90_day_ahead",
    "train_s",
    "infer_ms",
    "peak_rss_mb",
)


def parse_skip_days(text: str) -> set[int]:
    """Local day numbers (days since 1970-01-01) of a comma list of ISO dates."""
    days: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            day = date.fromisoformat(part)
        except ValueError:
            raise ValueError(f"--skip-days: {part!r} is not a date (YYYY-MM-DD)") from None
        days.add((day - date(1970, 1, 1)).days)
    return days


def skip_outcomes(actual: FloatArray, first_minutes: IntArray, tz: ZoneInfo, skip: set[int]) -> int:
    """Blank (NaN) in place each outcome whose first UTC minute (``first_minutes``, the shape of
    ``actual``) falls on a skipped local day; returns how many were blanked."""
    if not skip:
        return 0
    day = np.floor_divide(local_minutes(first_minutes.ravel(), tz), MINUTES_PER_DAY)
    hit = np.isin(day, np.fromiter(skip, dtype=np.int64)).reshape(actual.shape)
    hit &= ~np.isnan(actual)
    actual[hit] = np.nan
    return int(hit.sum())


def day_ahead_origins(start: int, values: FloatArray, split: int) -> IntArray:
    """An origin every 15 minutes of the test days (step 0 starts right after it)."""
    end = start + len(values) - 1
    first = split - 1 + (-split) % da.STEP
    origins = np.arange(first, end, da.STEP, dtype=np.int64)
    last = values[origins - start]
    return origins[~np.isnan(last)]


def day_ahead_scores(
    p50: FloatArray,
    actual: FloatArray,
    p10: FloatArray | None = None,
    p90: FloatArray | None = None,
) -> dict[str, float]:
    """Pooled CV(RMSE) % of the steps that have an outcome, and the band's coverage."""
    ok = ~np.isnan(actual)
    out = {"cvrmse_15min_day_ahead": cvrmse_pct(p50[ok], actual[ok])}
    if p10 is not None and p90 is not None:
        inside = (actual[ok] >= p10[ok]) & (actual[ok] <= p90[ok])
        out["coverage_p10_p90_day_ahead"] = float(np.mean(inside))
    return out


def seasonal_day_ahead(
    start: int,
    values: FloatArray,
    origins: IntArray,
    tz: ZoneInfo,
    calendar: SiteCalendar | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """mean-2-weeks' day-ahead through its own forecaster, origin by origin."""
    forecaster = SeasonalMeanForecaster(weeks=2)
    span = forecaster.day_ahead_history_minutes
    now = datetime.now(UTC)
    rows = []
    for origin in origins.tolist():
        lo = max(0, origin - span + 1 - start)
        history = MinuteHistory(start + lo, values[lo : origin - start + 1], calendar=calendar)
        fc = forecaster.day_ahead(history, tz, now)
        assert fc is not None and fc.p10_kw is not None and fc.p90_kw is not None
        rows.append((fc.p50_kw, fc.p10_kw, fc.p90_kw))
    arr = np.asarray(rows, dtype=np.float64)
    return arr[:, 0], arr[:, 1], arr[:, 2]


def table_row(
    model: str, metrics: dict[str, float] | None, **extra: float | None
) -> dict[str, Any]:
    """One row of the table: the model's metrics and extra figures, the rest empty."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row["model"] = model
    if metrics is not None:
        for key in ("rmse_60", "mae_60", "rmse_1_60", "cvrmse_15min_60"):
            row[key] = round(metrics[key], 3)
        if "coverage_p10_p90_60" in metrics:
            row["coverage_p10_p90_60"] = round(metrics["coverage_p10_p90_60"], 4)
    for key, value in extra.items():
        row[key] = None if value is None else round(float(value), 3)
    return row


def scored_metrics(pred: FloatArray, actual: FloatArray, **bands: FloatArray) -> dict[str, float]:
    """forecast_metrics over the windows whose outcomes are all known (no NaN)."""
    # Score only minutes that exist (a gap inside a target window is skipped, not imputed).
    ok = ~np.isnan(actual).any(axis=1)
    kw = {k: v[ok] for k, v in bands.items()}
    return forecast_metrics(pred[ok], actual[ok], **kw)


def served_bands(
    start: int,
    values: FloatArray,
    origins: IntArray,
    point: FloatArray,
    p10: FloatArray,
    p90: FloatArray,
    day_ahead: bool,
) -> tuple[FloatArray, FloatArray]:
    """The bands as the service serves them: adapted online (``core.accuracy.BandAdapter``,
    as ``core.compute`` runs it), origin by origin in time order, each from the outcomes
    known at that origin only.

    60-minute: the band is scored at its 60th minute, origins every minute. Day-ahead: every
    step of the forecast made at each 15-minute origin, scored on each block's mean."""
    step = da.STEP if day_ahead else 1
    adapter = BandAdapter(
        step_minutes=step, gamma=DAY_AHEAD_BAND_GAMMA if day_ahead else BAND_GAMMA
    )
    low, high = np.empty_like(p10), np.empty_like(p90)
    row_of = {int(origin): row for row, origin in enumerate(origins.tolist())}
    for minute in range(int(origins[0]), int(origins[-1]) + 1):
        adapter.observed(minute, float(values[minute - start]))  # known at this origin
        row = row_of.get(minute)
        if row is None:
            continue
        lo, hi = adapter.widen(point[row], p10[row], p90[row])
        low[row], high[row] = lo, hi
        if day_ahead:
            adapter.issued(minute, minute + 1, lo, hi)
        else:
            adapter.issued(minute, minute + HORIZON_MINUTES, lo[-1:], hi[-1:])
    return low, high


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a plain-text table with aligned columns."""

    def cell(value: Any) -> str:
        return "-" if value is None else str(value)

    widths = [max(len(c), *(len(cell(r[c])) for r in rows)) for c in COLUMNS]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    for r in rows:
        lines.append("  ".join(cell(r[c]).ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Outcomes:
    """What a table is scored on: the 60-minute windows and the day-ahead steps (NaN: left out)."""

    label: str
    actual: FloatArray
    day_actual: FloatArray


def outcome_sets(
    skip: set[int],
    tz: ZoneInfo,
    origins: IntArray,
    actual: FloatArray,
    day_origins: IntArray,
    day_actual: FloatArray,
) -> list[Outcomes]:
    """All test days, and with ``--skip-days`` (local day numbers) the same outcomes without
    those days."""
    sets = [Outcomes("all test days", actual, day_actual)]
    if not skip:
        return sets
    window = origins[:, None] + 1 + np.arange(HORIZON_MINUTES, dtype=np.int64)[None, :]
    steps = da.step_start(day_origins)[:, None] + da.STEP * np.arange(da.STEPS)[None, :]
    kept, kept_day = actual.copy(), day_actual.copy()
    blanked = skip_outcomes(kept, window, tz, skip)
    blanked_day = skip_outcomes(kept_day, steps, tz, skip)
    test_days = set(np.floor_divide(local_minutes(origins + 1, tz), MINUTES_PER_DAY).tolist())
    names = {d: str(date(1970, 1, 1) + timedelta(days=d)) for d in skip}
    outside = sorted(skip - test_days)
    if outside:
        text = ", ".join(names[d] for d in outside)
        sys.stdout.write(f"--skip-days: not a test day, nothing left out: {text}\n")
    inside = sorted(skip & test_days)
    if not inside:
        return sets
    sys.stdout.write(
        f"scores leave out {len(inside)} day(s): {blanked} minute outcomes of the 60-minute "
        f"windows, {blanked_day} day-ahead steps\n"
    )
    label = "without " + ", ".join(names[d] for d in inside)
    sets.append(Outcomes(label, kept, kept_day))
    return sets

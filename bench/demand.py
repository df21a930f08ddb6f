"""`open-dsm bench demand`: replay a meter CSV minute by minute through the demand domain.

Every minute of the file goes through the real code, in the order the service runs it:
``DemandTracker.observe_minute`` then ``close_due`` then the forecaster on the history so far
(``MinuteHistory`` windows on the series array, origin = the minute just observed) then
``DemandTracker.evaluate``. Two trackers run side by side on the same forecasts:

* **detection**: the meter as recorded, judged against the fixed ``--target-kw`` (no peak
  ratchet, so every exceedance counts): which intervals exceeded it, and how many minutes before
  each closed ``kw_to_shed`` first went above 0 (the lead time).
* **shed**: a closed-loop BAS. After each evaluation with ``kw_to_shed > 0`` it takes
  ``min(kw_to_shed * L / remaining, capacity)`` kW off each following minute of the interval
  (``kw_to_shed`` is in interval-average kW; over the remaining minutes it needs L / remaining
  times that), re-deciding every minute; the tracker sees the reduced meter. The ratchet follows
  the service (on unless ``--no-ratchet``). The forecaster keeps seeing the recorded series, as
  if the shed were reported like a dispatched load. No rebound after a shed is modelled.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from core.demand import ClosedInterval, DemandConfig, DemandTracker, OptionalInputs
from core.forecast.base import Forecaster, MinuteHistory
from core.forecast.baseline import SeasonalMeanForecaster
from core.forecast.meter_csv import FloatArray, load_meter_csv
from core.timegrid import minute_start

logger = logging.getLogger(__name__)

DEFAULT_SHED_FRACTION = 0.2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `open-dsm bench demand`."""
    parser.add_argument("--data", required=True, type=Path, help="meter CSV (timestamp, kW)")
    parser.add_argument(
        "--target-kw", required=True, type=float, help="demand target (kW, interval average)"
    )
    parser.add_argument(
        "--interval-minutes", type=int, default=15, help="fixed demand interval (divides 60)"
    )
    parser.add_argument("--tz", default="America/Chicago", help="site time zone (IANA)")
    parser.add_argument(
        "--model", type=Path, default=None, help="forecaster artifact dir (default: mean-2-weeks)"
    )
    parser.add_argument(
        "--shed-capacity-kw",
        type=float,
        default=None,
        help=(
            f"most kW the BAS can shed (default {100 * DEFAULT_SHED_FRACTION:.0f}%% of the target)"
        ),
    )
    parser.add_argument("--billing-cycle-day", type=int, default=1, help="billing cycle day")
    parser.add_argument(
        "--no-ratchet",
        action="store_true",
        help="shed against the target only, not max(target, period peak)",
    )
    parser.add_argument("--time-column", default=None, help="timestamp column (auto)")
    parser.add_argument("--kw-column", default=None, help="kW column (auto)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")


@dataclass(frozen=True, slots=True)
class PeriodPeak:
    """The billing peak of one period, recorded and with the shed applied."""

    period_start: str
    original_kw: float
    original_start: str
    shed_kw: float
    shed_start: str

    @property
    def reduction_kw(self) -> float:
        """How much the shed lowered the billed peak."""
        return self.original_kw - self.shed_kw


@dataclass(slots=True)
class DemandBenchResult:
    """Every figure of one replay."""

    data: str
    forecaster: str
    timezone: str
    target_kw: float
    interval_minutes: int
    shed_capacity_kw: float
    ratchet: bool
    minutes: int = 0
    intervals: int = 0
    exceeded: int = 0
    flagged_exceeded: int = 0
    missed: int = 0
    false_alarms: int = 0
    lead_minutes: list[int] = field(default_factory=list)
    shed_minutes: int = 0
    shed_kwh: float = 0.0
    exceeded_after_shed: int = 0
    periods: list[PeriodPeak] = field(default_factory=list)
    replay_s: float = 0.0

    @property
    def lead_mean_minutes(self) -> float | None:
        """Mean lead time of the flagged exceedances."""
        return statistics.fmean(self.lead_minutes) if self.lead_minutes else None

    @property
    def lead_median_minutes(self) -> float | None:
        """Median lead time of the flagged exceedances."""
        return float(statistics.median(self.lead_minutes)) if self.lead_minutes else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form with the derived figures."""
        data = asdict(self)
        data.pop("lead_minutes")
        data["lead_mean_minutes"] = self.lead_mean_minutes
        data["lead_median_minutes"] = self.lead_median_minutes
        for period, row in zip(self.periods, data["periods"], strict=True):
            row["reduction_kw"] = period.reduction_kw
        data["original_peak_kw"] = max((p.original_kw for p in self.periods), default=None)
        data["shed_peak_kw"] = max((p.shed_kw for p in self.periods), default=None)
        return data


@dataclass(slots=True)
class _Peaks:
    """Highest counted interval per billing period (UTC start minute -> (kW, start minute))."""

    by_period: dict[int, tuple[float, int]] = field(default_factory=dict)

    def add(self, closed: Iterable[ClosedInterval]) -> None:
        for interval in closed:
            if not interval.counted_for_peak:
                continue
            best = self.by_period.get(interval.period_start_minute)
            if best is None or interval.average_kw > best[0]:
                self.by_period[interval.period_start_minute] = (
                    interval.average_kw,
                    interval.start_minute,
                )


def _local(minute: int, tz: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return minute_start(minute).astimezone(tz).strftime(fmt)


def replay(
    start_minute: int,
    values_kw: FloatArray,
    tz: ZoneInfo,
    forecaster: Forecaster,
    *,
    target_kw: float,
    interval_minutes: int = 15,
    shed_capacity_kw: float | None = None,
    billing_cycle_day: int = 1,
    ratchet: bool = True,
    data_name: str = "",
) -> DemandBenchResult:
    """Replay a minute series through the detection and shed trackers; return the figures."""
    capacity = DEFAULT_SHED_FRACTION * target_kw if shed_capacity_kw is None else shed_capacity_kw
    if not (math.isfinite(capacity) and capacity >= 0):
        raise ValueError("the shed capacity must be a finite number of kW >= 0")

    def config(ratchet_to_peak: bool) -> DemandConfig:
        return DemandConfig(
            timezone=tz,
            interval_minutes=interval_minutes,
            billing_cycle_day=billing_cycle_day,
            target_kw=target_kw,
            ratchet_to_period_peak=ratchet_to_peak,
        )

    detect = DemandTracker(config(False))
    shed = DemandTracker(config(ratchet))
    result = DemandBenchResult(
        data=data_name,
        forecaster=forecaster.name,
        timezone=tz.key,
        target_kw=target_kw,
        interval_minutes=interval_minutes,
        shed_capacity_kw=capacity,
        ratchet=ratchet,
        minutes=len(values_kw),
    )
    values = np.ascontiguousarray(values_kw, dtype=np.float64)
    history_minutes = max(1, forecaster.history_minutes)
    no_inputs = OptionalInputs()
    original_peaks, shed_peaks = _Peaks(), _Peaks()
    detect_closed: list[ClosedInterval] = []
    first_flag_remaining: dict[int, int] = {}  # interval start -> remaining minutes at 1st flag
    shed_kw, shed_until = 0.0, start_minute
    n = len(values)
    next_report = 1
    began = time.perf_counter()

    for i in range(n):
        minute = start_minute + i
        kw = float(values[i])
        now = minute_start(minute + 1)
        closed_detect: list[ClosedInterval] = []
        closed_shed: list[ClosedInterval] = []
        if math.isfinite(kw):
            applied = shed_kw if minute < shed_until else 0.0
            if applied > 0.0:
                result.shed_minutes += 1
                result.shed_kwh += applied / 60.0
            closed_detect += detect.observe_minute(minute, kw)
            closed_shed += shed.observe_minute(minute, kw - applied)
        closed_detect += detect.close_due(now)
        closed_shed += shed.close_due(now)
        detect_closed += closed_detect
        original_peaks.add(closed_detect)
        shed_peaks.add(closed_shed)
        result.exceeded_after_shed += sum(
            1 for c in closed_shed if c.counted_for_peak and c.average_kw > target_kw
        )

        first = max(0, i + 1 - history_minutes)
        history = MinuteHistory(start_minute + first, values[first : i + 1])
        forecast = forecaster.forecast(history, tz, now)

        seen = detect.evaluate(now, forecast, no_inputs)
        if seen.decisions.kw_to_shed > 0.0:
            first_flag_remaining.setdefault(
                seen.interval.start_minute, seen.interval.remaining_minutes
            )
        acting = shed.evaluate(now, forecast, no_inputs)
        remaining = acting.interval.remaining_minutes
        if acting.decisions.kw_to_shed > 0.0 and remaining > 0:
            need = acting.decisions.kw_to_shed * interval_minutes / remaining
            shed_kw = min(capacity, need)
            shed_until = acting.interval.start_minute + interval_minutes
        else:
            shed_kw = 0.0

        if (i + 1) * 10 >= next_report * n:
            logger.info(
                "replayed %d of %d minutes (%d%%) in %.0f s",
                i + 1,
                n,
                100 * (i + 1) // n,
                time.perf_counter() - began,
            )
            next_report = (i + 1) * 10 // n + 1

    result.replay_s = time.perf_counter() - began
    for interval in detect_closed:
        if not interval.counted_for_peak:
            continue
        result.intervals += 1
        exceeded = interval.average_kw > target_kw
        lead = first_flag_remaining.get(interval.start_minute)
        if exceeded:
            result.exceeded += 1
            if lead is not None:
                result.flagged_exceeded += 1
                result.lead_minutes.append(lead)
            else:
                result.missed += 1
        elif lead is not None:
            result.false_alarms += 1
    for period_start, (kw, start) in sorted(original_peaks.by_period.items()):
        shed_kw_peak, shed_start = shed_peaks.by_period.get(period_start, (math.nan, start))
        result.periods.append(
            PeriodPeak(
                period_start=_local(period_start, tz, "%Y-%m-%d"),
                original_kw=kw,
                original_start=_local(start, tz),
                shed_kw=shed_kw_peak,
                shed_start=_local(shed_start, tz),
            )
        )
    return result


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(part: int, whole: int) -> str:
    return f" ({100.0 * part / whole:.0f}%)" if whole else ""


def format_table(result: DemandBenchResult) -> str:
    """The report as plain-text tables."""
    lines = [
        f"demand replay: {result.data or 'series'}, {result.minutes} minutes, "
        f"forecaster {result.forecaster}, tz {result.timezone}",
        f"target {result.target_kw:.1f} kW, {result.interval_minutes}-min fixed intervals, "
        f"shed capacity {result.shed_capacity_kw:.1f} kW, "
        f"ratchet {'on' if result.ratchet else 'off'}, replay {result.replay_s:.0f} s",
        "",
    ]
    header = ("billing period", "peak kW", "peak interval", "shed peak kW", "shed interval", "cut")
    rows: list[Sequence[str]] = [header]
    for p in result.periods:
        rows.append(
            (
                p.period_start,
                f"{p.original_kw:.2f}",
                p.original_start,
                f"{p.shed_kw:.2f}",
                p.shed_start,
                f"{p.reduction_kw:.2f}",
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    for r in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    lines.append("")
    original = max((p.original_kw for p in result.periods), default=None)
    after = max((p.shed_kw for p in result.periods), default=None)
    figures = [
        ("intervals counted", str(result.intervals)),
        ("exceeded target", f"{result.exceeded}{_pct(result.exceeded, result.intervals)}"),
        (
            "flagged before close",
            f"{result.flagged_exceeded}{_pct(result.flagged_exceeded, result.exceeded)}",
        ),
        ("missed", str(result.missed)),
        (
            "lead time mean / median (min)",
            f"{_fmt(result.lead_mean_minutes)} / {_fmt(result.lead_median_minutes)}",
        ),
        ("false alarms (flagged, not exceeded)", str(result.false_alarms)),
        ("exceeded target with shed", str(result.exceeded_after_shed)),
        ("shed minutes / energy", f"{result.shed_minutes} / {result.shed_kwh:.1f} kWh"),
        ("highest peak kW: recorded -> with shed", f"{_fmt(original, 2)} -> {_fmt(after, 2)}"),
        (
            "peak reduction kW",
            "n/a" if original is None or after is None else f"{original - after:.2f}",
        ),
    ]
    width = max(len(name) for name, _ in figures)
    lines.extend(f"{name.ljust(width)}  {value}" for name, value in figures)
    return "\n".join(lines) + "\n"


def _forecaster(model: Path | None) -> Forecaster:
    if model is None:
        return SeasonalMeanForecaster()
    from core.forecast.lite import LiteForecaster

    return LiteForecaster.load(model)


def run(args: argparse.Namespace) -> int:
    """Run the replay and print the table; 0 on success, 2 on unusable input."""
    try:
        tz = ZoneInfo(args.tz)
        series = load_meter_csv(
            args.data, tz, time_column=args.time_column, kw_column=args.kw_column
        )
        forecaster = _forecaster(args.model)
    except (OSError, ValueError) as exc:
        logger.error("cannot start the demand bench: %s", exc)
        return 2
    logger.info("%s: %s", args.data, series.report.summary())
    try:
        result = replay(
            series.start_minute,
            series.values_kw,
            tz,
            forecaster,
            target_kw=args.target_kw,
            interval_minutes=args.interval_minutes,
            shed_capacity_kw=args.shed_capacity_kw,
            billing_cycle_day=args.billing_cycle_day,
            ratchet=not args.no_ratchet,
            data_name=Path(args.data).name,
        )
    except ValueError as exc:
        logger.error("demand bench: %s", exc)
        return 2
    sys.stdout.write(format_table(result))
    if args.json is not None:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        logger.info("wrote %s", args.json)
    return 0

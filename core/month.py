"""The billing period seen from the stored minutes: its intervals, peak, charges and savings.

Pure functions over minute columns (no I/O): the service seeds the billing-period peak from
imported minutes with ``period_intervals`` and answers ``GET /api/v1/demand/month`` with
``month_summary``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from core.demand import ClosedInterval, DemandConfig, DemandTracker, billing_period
from core.dispatch.assets import Tariff
from core.timegrid import minute_start

TOP_INTERVALS = 10


@dataclass(frozen=True, slots=True)
class DailyPeak:
    """The highest interval of one site-local day of the period."""

    day_start_minute: int
    interval_start_minute: int
    kw: float


@dataclass(frozen=True, slots=True)
class MonthSummary:
    """What the billing period so far costs and what the battery took off its peak."""

    period_start_minute: int
    period_end_minute: int
    interval_minutes: int
    demand_charge_per_kw: float
    billed_peak_kw: float | None
    billed_peak_start_minute: int | None
    measured_minutes: int
    energy_kwh: float
    energy_cost: float
    top_intervals: tuple[ClosedInterval, ...]
    daily_peaks: tuple[DailyPeak, ...]
    # The peak of the building without the battery/EV kW the service dispatched (where known).
    peak_without_dispatch_kw: float | None
    dispatched_minutes: int

    @property
    def demand_charge(self) -> float | None:
        """The demand charge so far: billed peak x rate."""
        if self.billed_peak_kw is None:
            return None
        return self.billed_peak_kw * self.demand_charge_per_kw

    @property
    def dispatch_saving_kw(self) -> float | None:
        """kW the dispatched battery took off the billed peak (negative: it added to it)."""
        if self.billed_peak_kw is None or self.peak_without_dispatch_kw is None:
            return None
        if self.dispatched_minutes == 0:
            return None
        return self.peak_without_dispatch_kw - self.billed_peak_kw

    @property
    def dispatch_saving(self) -> float | None:
        """The demand charge the battery saved so far."""
        saving = self.dispatch_saving_kw
        return None if saving is None else saving * self.demand_charge_per_kw


def period_intervals(
    start_minute: int, values_kw: npt.NDArray[np.float64], config: DemandConfig
) -> list[ClosedInterval]:
    """The demand intervals the tracker would have closed over these minutes (NaN: a gap).

    The same tracker the service runs, fed the same minute means, so the averages, coverage and
    billing periods are the live ones; the open (last, unfinished) interval is not returned.
    """
    tracker = DemandTracker(config)
    closed: list[ClosedInterval] = []
    finite = np.flatnonzero(np.isfinite(values_kw))
    for offset in finite:
        closed.extend(tracker.observe_minute(start_minute + int(offset), float(values_kw[offset])))
    return closed


def counted_peak(
    intervals: list[ClosedInterval], period_start_minute: int
) -> ClosedInterval | None:
    """The highest interval that counts for the peak of the given billing period."""
    counted = [
        i for i in intervals if i.counted_for_peak and i.period_start_minute == period_start_minute
    ]
    return max(counted, key=lambda i: i.average_kw) if counted else None


def month_summary(
    start_minute: int,
    meter_kw: npt.NDArray[np.float64],
    dispatched_kw: npt.NDArray[np.float64],
    config: DemandConfig,
    tariff: Tariff,
    now: datetime,
    tracked_peak: tuple[float, int] | None,
) -> MonthSummary:
    """The period containing ``now`` from its stored minutes (arrays aligned from start_minute).

    ``tracked_peak`` (kW, interval start) is the live tracker's peak when it has one: the billed
    peak shown is the higher of it and the stored minutes' own.
    """
    period = billing_period(now, config.timezone, config.billing_cycle_day)
    lo, hi = period.start_minute, period.end_minute
    skip = max(0, lo - start_minute)
    meter = np.asarray(meter_kw, dtype=np.float64)[skip:]
    own = np.asarray(dispatched_kw, dtype=np.float64)[skip:]
    first = start_minute + skip
    intervals = [i for i in period_intervals(first, meter, config) if i.start_minute < hi]
    ours = [i for i in intervals if i.period_start_minute == lo]
    peak = counted_peak(ours, lo)
    billed: tuple[float, int] | None = (peak.average_kw, peak.start_minute) if peak else None
    if tracked_peak is not None and (billed is None or tracked_peak[0] > billed[0]):
        billed = tracked_peak
    base = meter - np.nan_to_num(own)
    base_peak = counted_peak(
        [i for i in period_intervals(first, base, config) if i.start_minute < hi], lo
    )
    valid = np.isfinite(meter)
    minutes = first + np.flatnonzero(valid)
    kwh = meter[valid] / 60.0
    # The price of each UTC hour's local hour (time-of-use), looked up once per hour.
    utc_hours, index = np.unique(minutes // 60, return_inverse=True)
    prices = np.array(
        [
            tariff.energy_price(minute_start(int(h) * 60).astimezone(config.timezone).hour)
            for h in utc_hours
        ],
        dtype=np.float64,
    )
    per_minute = prices[index] if len(utc_hours) else np.zeros(0)
    top = sorted((i for i in ours if i.counted_for_peak), key=lambda i: i.average_kw, reverse=True)[
        :TOP_INTERVALS
    ]
    return MonthSummary(
        period_start_minute=lo,
        period_end_minute=hi,
        interval_minutes=config.interval_minutes,
        demand_charge_per_kw=tariff.demand_charge_per_kw,
        billed_peak_kw=None if billed is None else billed[0],
        billed_peak_start_minute=None if billed is None else billed[1],
        measured_minutes=int(valid.sum()),
        energy_kwh=float(kwh.sum()),
        energy_cost=float((kwh * per_minute).sum()),
        top_intervals=tuple(top),
        daily_peaks=tuple(_daily_peaks(ours, config)),
        peak_without_dispatch_kw=None if base_peak is None else base_peak.average_kw,
        dispatched_minutes=int(np.count_nonzero(np.isfinite(own) & valid)),
    )


def _daily_peaks(intervals: list[ClosedInterval], config: DemandConfig) -> list[DailyPeak]:
    best: dict[int, ClosedInterval] = {}
    for item in intervals:
        local = minute_start(item.start_minute).astimezone(config.timezone)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        key = int(midnight.timestamp() // 60)
        if key not in best or item.average_kw > best[key].average_kw:
            best[key] = item
    return [DailyPeak(day, best[day].start_minute, best[day].average_kw) for day in sorted(best)]

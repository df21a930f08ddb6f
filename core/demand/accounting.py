"""Demand accounting: interval alignment and averages, billing periods, closed intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from core.demand.config import DemandConfig, WindowMode, check_fixed_length
from core.timegrid import SECONDS_PER_MINUTE, minute_of, minute_start


def utc_offset_minutes(minute: int, tz: ZoneInfo) -> int:
    """The site's UTC offset in minutes during the given UTC minute."""
    offset = minute_start(minute).astimezone(tz).utcoffset()
    return 0 if offset is None else int(offset.total_seconds()) // SECONDS_PER_MINUTE


def interval_start_minute(minute: int, length_minutes: int, tz: ZoneInfo) -> int:
    """UTC start minute of the fixed, site-local clock-aligned interval containing ``minute``.

    ``length_minutes`` must divide 60, so intervals are aligned to the local hour. Intervals are
    ``length_minutes`` of real time; across a whole-hour DST change they stay contiguous (the
    repeated autumn hour simply has its own intervals).
    """
    check_fixed_length(length_minutes)
    local_minute = minute + utc_offset_minutes(minute, tz)
    return minute - local_minute % length_minutes


def interval_average_kw(values_kw: list[float]) -> float | None:
    """Mean of the observed minutes of an interval; gap minutes are simply absent; None if none."""
    return sum(values_kw) / len(values_kw) if values_kw else None


@dataclass(frozen=True, slots=True)
class BillingPeriod:
    """One monthly billing period [start, end) in UTC, from local midnight of the cycle day."""

    start: datetime
    end: datetime

    @property
    def start_minute(self) -> int:
        """UTC minute index of the start."""
        return minute_of(self.start)

    @property
    def end_minute(self) -> int:
        """UTC minute index of the (exclusive) end."""
        return minute_of(self.end)


def billing_period(at: datetime, tz: ZoneInfo, cycle_day: int) -> BillingPeriod:
    """The billing period containing ``at``: site-local midnight of ``cycle_day`` to the next."""
    if not 1 <= cycle_day <= 28:
        raise ValueError("billing cycle day must be 1..28")
    local = at.astimezone(tz)
    year, month = local.year, local.month
    if local.day < cycle_day:
        year, month = _add_months(year, month, -1)
    next_year, next_month = _add_months(year, month, 1)
    start = datetime(year, month, cycle_day, tzinfo=tz).astimezone(UTC)
    end = datetime(next_year, next_month, cycle_day, tzinfo=tz).astimezone(UTC)
    return BillingPeriod(start=start, end=end)


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


@dataclass(frozen=True, slots=True)
class ClosedInterval:
    """One finished demand interval, for the history table."""

    start_minute: int
    length_minutes: int
    average_kw: float
    observed_minutes: int
    complete: bool  # every minute of the interval was observed
    period_start_minute: int
    counted_for_peak: bool

    @property
    def start(self) -> datetime:
        """UTC start of the interval."""
        return minute_start(self.start_minute)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "start": self.start.isoformat(),
            "start_minute": self.start_minute,
            "length_minutes": self.length_minutes,
            "average_kw": self.average_kw,
            "observed_minutes": self.observed_minutes,
            "complete": self.complete,
            "period_start": minute_start(self.period_start_minute).isoformat(),
            "counted_for_peak": self.counted_for_peak,
        }


class IntervalLedger:
    """The minutes of the last interval length, the fixed interval being filled, the period peak."""

    def __init__(self, config: DemandConfig) -> None:
        self._config = config
        self.minutes_kw: dict[int, float] = {}  # observed minutes of the last L minutes
        self.open_start: int | None = None  # fixed mode: the interval being filled
        self.last_minute: int | None = None
        self.last_kw: float | None = None
        self.period_start_minute: int | None = None
        self.peak_kw: float | None = None
        self.peak_start_minute: int | None = None

    def observe_minute(self, minute: int, kw: float) -> list[ClosedInterval]:
        """Add one completed minute mean of the meter (kW); return the intervals it closed.

        Minutes must come in increasing order; a repeated or older minute, or a non-finite kW, is
        ignored. A missing minute is a gap: it does not count toward the interval average, the
        interval is marked incomplete, and projections treat it as having been at the average of
        the observed minutes. Fixed mode closes an interval on its last minute, or on the first
        minute seen after it (or ``close_due``) when its last minute is missing. Sliding mode
        closes the window ending at each observed minute.
        """
        if not math.isfinite(kw) or (self.last_minute is not None and minute <= self.last_minute):
            return []
        cfg = self._config
        length = cfg.interval_minutes
        closed: list[ClosedInterval] = []
        if cfg.window is WindowMode.FIXED:
            start = interval_start_minute(minute, length, cfg.timezone)
            if self.open_start is not None and self.open_start != start:
                closed.extend(self._close_open_interval())
            self._record(minute, kw)
            if self.open_start is None:
                self.open_start = start
            if minute == start + length - 1:
                closed.extend(self._close_open_interval())
        else:
            self._record(minute, kw)
            window = self._close(minute - length + 1, minute)
            if window is not None:
                closed.append(window)
        return closed

    def add_stored(self, minutes_kw: Mapping[int, float], from_minute: int) -> list[ClosedInterval]:
        """Count stored minutes (imported, or written as a batch) from ``from_minute`` on that
        the live path did not observe; return the intervals they closed.

        A minute newer than the last one observed is observed as if live (it may close the open
        interval, and it becomes the latest minute); an older one fills its gap, or replaces the
        value the live path had (a minute it carried forward that a batch then wrote for real:
        the stored minute is what the meter bills).
        """
        closed: list[ClosedInterval] = []
        for minute in sorted(minutes_kw):
            kw = minutes_kw[minute]
            if minute < from_minute or not math.isfinite(kw):
                continue
            if self.last_minute is None or minute > self.last_minute:
                closed.extend(self.observe_minute(minute, kw))
            else:
                self.minutes_kw[minute] = kw
        return closed

    def seed_peak(self, intervals: Sequence[ClosedInterval]) -> bool:
        """Count intervals measured from stored (imported) minutes toward the period peak.

        Only intervals that count for the peak of the tracked period (or a newer one) raise it;
        returns True when the peak changed.
        """
        changed = False
        for item in intervals:
            if not item.counted_for_peak or not self.roll_period(item.period_start_minute):
                continue
            if self.peak_kw is None or item.average_kw > self.peak_kw:
                self.peak_kw, self.peak_start_minute = item.average_kw, item.start_minute
                changed = True
        return changed

    def close_due(self, now: datetime) -> list[ClosedInterval]:
        """Close a fixed interval that has ended without its last minute (meter gap)."""
        if self.open_start is None:
            return []
        if minute_of(now) >= self.open_start + self._config.interval_minutes:
            return self._close_open_interval()
        return []

    def _record(self, minute: int, kw: float) -> None:
        self.minutes_kw[minute] = kw
        oldest = minute - self._config.interval_minutes
        for old in [m for m in self.minutes_kw if m <= oldest]:
            del self.minutes_kw[old]
        self.last_minute, self.last_kw = minute, kw

    def _close_open_interval(self) -> list[ClosedInterval]:
        start = self.open_start
        self.open_start = None
        if start is None:
            return []
        closed = self._close(start, start)
        return [] if closed is None else [closed]

    def _close(self, start: int, period_minute: int) -> ClosedInterval | None:
        """Build the record of [start, start + L); ``period_minute`` picks its billing period."""
        cfg = self._config
        length = cfg.interval_minutes
        values = [kw for m, kw in self.minutes_kw.items() if start <= m < start + length]
        average = interval_average_kw(values)
        if average is None:
            return None
        period = billing_period(minute_start(period_minute), cfg.timezone, cfg.billing_cycle_day)
        is_current = self.roll_period(period.start_minute)
        covered = 100.0 * len(values) / length >= cfg.peak_min_coverage_pct
        counted = is_current and covered
        if counted and (self.peak_kw is None or average > self.peak_kw):
            self.peak_kw, self.peak_start_minute = average, start
        return ClosedInterval(
            start_minute=start,
            length_minutes=length,
            average_kw=average,
            observed_minutes=len(values),
            complete=len(values) == length,
            period_start_minute=period.start_minute,
            counted_for_peak=counted,
        )

    def roll_period(self, period_start_minute: int) -> bool:
        """Move to a newer billing period (resetting the peak); False for an older one."""
        if self.period_start_minute is None or period_start_minute > self.period_start_minute:
            self.period_start_minute = period_start_minute
            self.peak_kw, self.peak_start_minute = None, None
            return True
        return period_start_minute == self.period_start_minute

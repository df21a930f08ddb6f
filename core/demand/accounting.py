"""Demand accounting: interval alignment and averages, billing periods, closed intervals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from core.demand.config import check_fixed_length
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

"""The forecaster interface that the baseline and trained models implement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from core.calendar import SiteCalendar
from core.timegrid import minute_start

HORIZON_MINUTES = 60
# The day-ahead forecast: 96 clock-aligned 15-minute steps (24 h), the first one the interval
# that is in progress at the origin.
DAY_AHEAD_STEP_MINUTES = 15
DAY_AHEAD_STEPS = 96


@dataclass(frozen=True, slots=True)
class MinuteHistory:
    """Minute means (kW) on the UTC grid ending at the origin minute; NaN marks a gap.

    ``outdoor_air``, when given, is aligned with ``values_kw`` (NaN where unknown).
    ``calendar``, when given, tells the forecasters what kind of day each local day is.
    """

    start_minute: int
    values_kw: npt.NDArray[np.float64]
    outdoor_air: npt.NDArray[np.float64] | None = None
    calendar: SiteCalendar | None = None

    @property
    def end_minute(self) -> int:
        """The origin: the last completed minute, the one ``values_kw[-1]`` describes."""
        return self.start_minute + len(self.values_kw) - 1

    def at(self, minute: int) -> float:
        """The value of one minute, NaN when it is a gap or outside the window."""
        offset = minute - self.start_minute
        if 0 <= offset < len(self.values_kw):
            return float(self.values_kw[offset])
        return float("nan")

    def last_valid(self) -> tuple[int, float] | None:
        """The most recent minute that has a value, or None when the window is all gaps."""
        valid = np.flatnonzero(~np.isnan(self.values_kw))
        if len(valid) == 0:
            return None
        offset = int(valid[-1])
        return self.start_minute + offset, float(self.values_kw[offset])


@dataclass(frozen=True, slots=True)
class Forecast:
    """kW for each of the minutes origin+1 .. origin+horizon, from one forecaster."""

    forecaster: str
    made_at: datetime
    origin_minute: int
    kw: tuple[float, ...]
    p10_kw: tuple[float, ...] | None = None
    p90_kw: tuple[float, ...] | None = None
    note: str = ""

    @property
    def horizon_minutes(self) -> int:
        """How many minutes ahead the trajectory reaches."""
        return len(self.kw)

    @property
    def one_hour_kw(self) -> float:
        """The forecast for the minute 60 minutes after the origin (the BACnet output)."""
        return self.kw[HORIZON_MINUTES - 1]

    @property
    def origin(self) -> datetime:
        """UTC start of the origin minute."""
        return minute_start(self.origin_minute)

    def target(self, step: int) -> datetime:
        """UTC start of the minute ``step`` (1-based) ahead of the origin."""
        return minute_start(self.origin_minute + step)

    @property
    def peak_kw(self) -> float:
        """The highest minute forecast in the horizon."""
        return max(self.kw)

    @property
    def peak_step(self) -> int:
        """1-based step of the peak minute."""
        return int(np.argmax(self.kw)) + 1


@dataclass(frozen=True, slots=True)
class DayAheadForecast:
    """Mean kW of each clock-aligned step over the next 24 h, with an optional P10/P90 band.

    Step ``i`` covers minutes ``start_minute + i * step_minutes`` up to the next step (UTC minute
    indices). ``start_minute`` is the start of the step in progress at ``origin_minute``, so step 0
    is partly measured already; its value is the forecast mean of the whole step.
    """

    forecaster: str
    made_at: datetime
    origin_minute: int
    start_minute: int
    step_minutes: int
    p50_kw: tuple[float, ...]
    p10_kw: tuple[float, ...] | None = None
    p90_kw: tuple[float, ...] | None = None

    @property
    def steps(self) -> int:
        """How many steps the forecast covers."""
        return len(self.p50_kw)

    def step_start(self, step: int) -> datetime:
        """UTC start of step ``step`` (0-based)."""
        return minute_start(self.start_minute + step * self.step_minutes)


@runtime_checkable
class DayAheadForecaster(Protocol):
    """A forecaster that can also give the next 24 h in clock-aligned steps."""

    @property
    def name(self) -> str:
        """Short stable name."""
        ...

    @property
    def day_ahead_history_minutes(self) -> int:
        """How many minutes of history (ending at the origin) ``day_ahead`` wants."""
        ...

    def day_ahead(
        self, history: MinuteHistory, tz: ZoneInfo, made_at: datetime
    ) -> DayAheadForecast | None:
        """The next 24 h from ``history``; None when there is not enough data."""
        ...


@runtime_checkable
class Forecaster(Protocol):
    """Anything that turns recent minute history into a 60-minute trajectory."""

    @property
    def name(self) -> str:
        """Short stable name shown in REST and in the BACnet description."""
        ...

    @property
    def history_minutes(self) -> int:
        """How many minutes of history (ending at the origin) ``forecast`` wants."""
        ...

    def forecast(self, history: MinuteHistory, tz: ZoneInfo, made_at: datetime) -> Forecast | None:
        """Forecast from ``history``; None when there is not enough data to say anything."""
        ...

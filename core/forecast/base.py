"""The forecaster interface that the baseline and trained models implement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from core.timegrid import minute_start

HORIZON_MINUTES = 60


@dataclass(frozen=True, slots=True)
class MinuteHistory:
    """Minute means (kW) on the UTC grid ending at the origin minute; NaN marks a gap."""

    start_minute: int
    values_kw: npt.NDArray[np.float64]

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

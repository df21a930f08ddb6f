"""Derived signals: rate of change and the high/low load classifier with anti-short-cycling."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

RATE_WINDOW_MINUTES = 15
RATE_MIN_POINTS = 10


def rate_of_change_1min(previous_kw: float, latest_kw: float) -> float | None:
    """kW per minute between the last two completed minutes; None if either is a gap."""
    if np.isnan(previous_kw) or np.isnan(latest_kw):
        return None
    return latest_kw - previous_kw


def rate_of_change_15min(window_kw: npt.NDArray[np.float64]) -> float | None:
    """Least-squares slope (kW per minute) over the last 15 completed minutes.

    A fitted slope rather than (last - first) / 15 so one noisy minute at either end (a compressor
    starting) does not dominate; needs at least 10 of the 15 minutes.
    """
    values = window_kw[-RATE_WINDOW_MINUTES:]
    x = np.arange(len(values), dtype=np.float64)
    valid = ~np.isnan(values)
    if valid.sum() < RATE_MIN_POINTS:
        return None
    xv, yv = x[valid], values[valid]
    xm = xv.mean()
    return float(((xv - xm) * (yv - yv.mean())).sum() / ((xv - xm) ** 2).sum())


@dataclass(slots=True)
class DwellFlag:
    """A boolean that may change at most once per ``min_dwell_s`` (prevents short cycling)."""

    value: bool = False
    changed_at: datetime | None = None

    def propose(self, desired: bool, now: datetime, min_dwell_s: float) -> bool:
        """Move toward ``desired`` if the dwell time since the last change has passed."""
        if desired != self.value and (
            self.changed_at is None or (now - self.changed_at).total_seconds() >= min_dwell_s
        ):
            self.value = desired
            self.changed_at = now
        return self.value

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state."""
        return {
            "value": self.value,
            "changed_at": self.changed_at.isoformat() if self.changed_at else None,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DwellFlag:
        """Rebuild from ``to_state``."""
        changed = state.get("changed_at")
        return cls(bool(state.get("value")), datetime.fromisoformat(changed) if changed else None)


@dataclass(frozen=True, slots=True)
class LoadFlags:
    """Result of one classification."""

    high: bool
    low: bool
    high_threshold_kw: float | None
    low_threshold_kw: float | None
    history_minutes: int
    evaluated: bool


class LoadClassifier:
    """High above the Nth percentile of a trailing window, low below the Mth.

    Each flag may change at most once per dwell period. With no valid latest value (stale input)
    both flags are driven inactive, subject to the same dwell, so a shed sequence releases.
    """

    def __init__(
        self,
        high_percentile: float,
        low_percentile: float,
        min_dwell_s: float,
        min_history_minutes: int,
    ) -> None:
        self._high_pct = high_percentile
        self._low_pct = low_percentile
        self._dwell_s = min_dwell_s
        self._min_history = min_history_minutes
        self.high = DwellFlag()
        self.low = DwellFlag()

    def evaluate(
        self, latest_kw: float | None, window_kw: npt.NDArray[np.float64], now: datetime
    ) -> LoadFlags:
        """Classify ``latest_kw`` against the percentiles of ``window_kw`` (NaN = gap)."""
        valid = window_kw[~np.isnan(window_kw)]
        if latest_kw is None or np.isnan(latest_kw) or len(valid) < self._min_history:
            self.high.propose(False, now, self._dwell_s)
            self.low.propose(False, now, self._dwell_s)
            return LoadFlags(self.high.value, self.low.value, None, None, len(valid), False)
        high_kw, low_kw = np.percentile(valid, [self._high_pct, self._low_pct])
        self.high.propose(bool(latest_kw > high_kw), now, self._dwell_s)
        self.low.propose(bool(latest_kw < low_kw), now, self._dwell_s)
        return LoadFlags(
            self.high.value, self.low.value, float(high_kw), float(low_kw), len(valid), True
        )

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state so the dwell survives a restart."""
        return {"high": self.high.to_state(), "low": self.low.to_state()}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore from ``to_state``."""
        self.high = DwellFlag.from_state(state.get("high", {}))
        self.low = DwellFlag.from_state(state.get("low", {}))

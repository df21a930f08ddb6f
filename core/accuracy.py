"""Live accuracy: the error of the served 60-minute-ahead forecast once its minute has happened."""

from __future__ import annotations

import math
from collections import deque


class LiveErrorTracker:
    """Matches each 60-minute-ahead forecast with the minute it predicted; RMSE over a window."""

    def __init__(self, window_minutes: int = 1440, min_samples: int = 60) -> None:
        self._window = window_minutes
        self._min_samples = min_samples
        self._pending: dict[int, float] = {}
        self._errors: deque[tuple[int, float]] = deque()

    def predicted(self, target_minute: int, kw: float) -> None:
        """Remember a forecast for ``target_minute`` (the newest forecast for a minute wins)."""
        self._pending[target_minute] = kw

    def observed(self, minute: int, kw: float) -> None:
        """A minute completed: score the forecast made for it, if any."""
        forecast_kw = self._pending.pop(minute, None)
        if forecast_kw is not None:
            self._errors.append((minute, kw - forecast_kw))
        horizon = minute - self._window
        while self._errors and self._errors[0][0] <= horizon:
            self._errors.popleft()
        for old in [m for m in self._pending if m < horizon]:
            del self._pending[old]

    @property
    def samples(self) -> int:
        """How many forecast/actual pairs are in the window."""
        return len(self._errors)

    def rmse_kw(self) -> float | None:
        """Root-mean-square error over the window, None until ``min_samples`` pairs exist."""
        if len(self._errors) < self._min_samples:
            return None
        return math.sqrt(sum(e * e for _, e in self._errors) / len(self._errors))

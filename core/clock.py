"""Clocks: the service reads time through one of these so tests can drive it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Source of the current UTC time."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        return datetime.now(UTC)


class ScaledClock:
    """A simulated clock: ``start`` at wall time ``anchor_unix``, running ``speed`` times faster.

    ``open-dsm demo --speed 10`` runs the service on the meter file's own time this way; the demo's
    BAS computes the same time from the same three numbers.
    """

    def __init__(self, start: datetime, speed: float, anchor_unix: float | None = None) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if speed <= 0:
            raise ValueError("speed must be above 0")
        self._start = start.astimezone(UTC)
        self._anchor = time.time() if anchor_unix is None else anchor_unix
        self.speed = speed

    def now(self) -> datetime:
        """Simulated time now."""
        return self._start + timedelta(seconds=(time.time() - self._anchor) * self.speed)


def clock_speed(clock: Clock) -> float:
    """How many clock seconds pass per wall second (1 for the system clock)."""
    return float(getattr(clock, "speed", 1.0))


class FakeClock:
    """A clock that only moves when told to (unit tests)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        """The current fake time."""
        return self._now

    def advance(self, seconds: float) -> datetime:
        """Move forward and return the new time."""
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, at: datetime) -> None:
        """Jump to ``at``."""
        self._now = at.astimezone(UTC)

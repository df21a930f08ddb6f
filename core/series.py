"""In-memory cache of recent minute values on the UTC grid."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


class MinuteSeries:
    """A fixed-capacity window of minute values keyed by minute index; NaN where unknown.

    Storage is a ring indexed by ``minute % capacity`` with the owning minute kept beside each slot,
    so writes are O(1), windows are one vectorised gather, and memory is fixed (30 days of
    minutes is ~0.7 MB).
    """

    def __init__(self, capacity_minutes: int) -> None:
        if capacity_minutes < 2:
            raise ValueError("capacity must be at least 2 minutes")
        self._capacity = capacity_minutes
        self._values = np.full(capacity_minutes, np.nan)
        self._keys = np.full(capacity_minutes, -1, dtype=np.int64)
        self._latest: int | None = None

    @property
    def capacity_minutes(self) -> int:
        """How many minutes the cache holds."""
        return self._capacity

    @property
    def latest_minute(self) -> int | None:
        """The newest minute ever set, or None when empty."""
        return self._latest

    def set(self, minute: int, kw: float) -> None:
        """Store one minute; minutes older than the window are ignored."""
        if self._latest is not None and minute <= self._latest - self._capacity:
            return
        slot = minute % self._capacity
        self._values[slot] = kw
        self._keys[slot] = minute
        if self._latest is None or minute > self._latest:
            self._latest = minute

    def set_many(self, minutes: npt.NDArray[np.int64], kw: npt.NDArray[np.float64]) -> None:
        """Store many minutes at once (start-up restore)."""
        if len(minutes) == 0:
            return
        newest = int(minutes.max())
        latest = newest if self._latest is None else max(self._latest, newest)
        keep = minutes > latest - self._capacity
        minutes, kw = minutes[keep], kw[keep]
        slots = minutes % self._capacity
        self._values[slots] = kw
        self._keys[slots] = minutes
        self._latest = latest

    def fill_missing(self, minutes: npt.NDArray[np.int64], kw: npt.NDArray[np.float64]) -> int:
        """Store the given minutes that the window holds no value for; return how many.

        Values the cache already has win (a live minute may not have reached the database yet).
        """
        if len(minutes) == 0 or self._latest is None:
            self.set_many(minutes, kw)
            return len(minutes)
        keep = minutes > self._latest - self._capacity
        minutes, kw = minutes[keep], kw[keep]
        slots = minutes % self._capacity
        known = (self._keys[slots] == minutes) & ~np.isnan(self._values[slots])
        self.set_many(minutes[~known], kw[~known])
        return int(np.count_nonzero(~known))

    def count_known(self, end_minute: int, length: int) -> int:
        """How many minutes of ``end_minute - length + 1 .. end_minute`` have a value."""
        return int(np.count_nonzero(~np.isnan(self.window(end_minute, length))))

    def get(self, minute: int) -> float:
        """One minute's value, NaN when unknown."""
        slot = minute % self._capacity
        return float(self._values[slot]) if self._keys[slot] == minute else float("nan")

    def window(self, end_minute: int, length: int) -> npt.NDArray[np.float64]:
        """Values for ``end_minute - length + 1 .. end_minute``, NaN where unknown."""
        wanted = np.arange(end_minute - length + 1, end_minute + 1, dtype=np.int64)
        slots = wanted % self._capacity
        out = self._values[slots].copy()
        out[self._keys[slots] != wanted] = np.nan
        return out

"""Folding raw meter writes into the 1-minute grid (pure; times are epoch seconds)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.timegrid import SECONDS_PER_MINUTE


@dataclass(frozen=True, slots=True)
class CompletedMinute:
    """A finished minute: the mean of its writes, or the last value carried forward (0 samples)."""

    minute: int
    kw: float
    sample_count: int

    @property
    def carried(self) -> bool:
        """True when no write fell in this minute and the last fresh value was carried forward."""
        return self.sample_count == 0


class ReadingGrid:
    """Accumulates live writes into minute means; carries fresh values across empty minutes.

    A minute closes when a write or the clock moves past it. A minute with no write is carried
    forward only while the last write is still fresh at the minute's end; stale minutes stay gaps,
    never zeros.
    """

    def __init__(self, stale_after_s: float) -> None:
        self._stale_after_s = stale_after_s
        self._open_minute: int | None = None
        self._sum_kw = 0.0
        self._count = 0
        self._last_completed: int | None = None
        self.last_kw: float | None = None
        self.last_write_s: float | None = None

    @property
    def open_minute(self) -> int | None:
        """The minute currently accumulating writes, if any."""
        return self._open_minute

    @property
    def live_from_minute(self) -> int | None:
        """The earliest minute a live write may fall in; older writes are history to merge."""
        if self._open_minute is not None:
            return self._open_minute
        if self._last_completed is not None:
            return self._last_completed + 1
        return None

    def open_partial(self) -> CompletedMinute | None:
        """The mean so far of the open minute (to flush on shutdown), or None."""
        if self._open_minute is None or self._count == 0:
            return None
        return CompletedMinute(self._open_minute, self._sum_kw / self._count, self._count)

    def restore(self, last_minute: int, last_kw: float, sample_count: int, now_s: float) -> None:
        """Resume after a restart from the newest persisted minute.

        If that minute is the current one (a flushed partial), it is reopened with its samples so
        that later writes in the same minute average in; the last write time is taken as the end of
        that minute (or now, if sooner), so a quick restart keeps the input fresh.
        """
        current = math.floor(now_s / SECONDS_PER_MINUTE)
        self.last_kw = last_kw
        self.last_write_s = min(float((last_minute + 1) * SECONDS_PER_MINUTE), now_s)
        if last_minute >= current and sample_count > 0:
            self._open_minute = last_minute
            self._sum_kw = last_kw * sample_count
            self._count = sample_count
            self._last_completed = last_minute - 1
        else:
            self._last_completed = last_minute

    def add(self, kw: float, at_s: float) -> list[CompletedMinute]:
        """Add one live write; return the minutes this closed. The caller ensures it is live."""
        minute = math.floor(at_s / SECONDS_PER_MINUTE)
        live_from = self.live_from_minute
        if live_from is not None and minute < live_from:
            raise ValueError("write falls in a closed minute; merge it as history")
        completed: list[CompletedMinute] = []
        if self._open_minute is not None and minute > self._open_minute:
            completed.extend(self._close_open())
        if self._open_minute is None:
            completed.extend(self._carry_until(minute))
            self._open_minute = minute
            self._sum_kw = 0.0
            self._count = 0
        self._sum_kw += kw
        self._count += 1
        self.last_kw = kw
        self.last_write_s = at_s if self.last_write_s is None else max(self.last_write_s, at_s)
        return completed

    def close_until(self, now_s: float) -> list[CompletedMinute]:
        """Close every minute that ended before ``now_s``; carry forward while fresh."""
        current = math.floor(now_s / SECONDS_PER_MINUTE)
        completed: list[CompletedMinute] = []
        if self._open_minute is not None and self._open_minute < current:
            completed.extend(self._close_open())
        if self._open_minute is None:
            completed.extend(self._carry_until(current))
        return completed

    def is_stale(self, now_s: float) -> bool:
        """True when there has been no write for longer than the staleness limit (or ever)."""
        return self.last_write_s is None or now_s - self.last_write_s > self._stale_after_s

    def stale_deadline_s(self) -> float | None:
        """When the input will become stale if nothing is written, or None if never written."""
        if self.last_write_s is None:
            return None
        return self.last_write_s + self._stale_after_s

    def _close_open(self) -> list[CompletedMinute]:
        assert self._open_minute is not None
        done = CompletedMinute(self._open_minute, self._sum_kw / self._count, self._count)
        self._last_completed = self._open_minute
        self._open_minute = None
        self._sum_kw = 0.0
        self._count = 0
        return [done]

    def _carry_until(self, end_minute: int) -> list[CompletedMinute]:
        """Carry the last value into minutes before ``end_minute`` that end while it is fresh."""
        if self._last_completed is None or self.last_kw is None or self.last_write_s is None:
            return []
        carried: list[CompletedMinute] = []
        minute = self._last_completed + 1
        while minute < end_minute:
            minute_end_s = (minute + 1) * SECONDS_PER_MINUTE
            if minute_end_s - self.last_write_s > self._stale_after_s:
                # Stale from here on: leave gaps, and skip ahead so we do not re-check them.
                self._last_completed = end_minute - 1
                return carried
            carried.append(CompletedMinute(minute, self.last_kw, 0))
            self._last_completed = minute
            minute += 1
        return carried

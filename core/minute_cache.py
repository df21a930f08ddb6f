"""The minute cache: meter, outdoor air and dispatched kW per minute, and what closes a minute.

``MinuteCache`` holds the three minute series the computation reads (filled from the database at
start, from live minutes as they close, from history merged or imported). ``MinuteKeeper`` closes
minutes: into the cache, the live error, the band adapters, the demand ledger and (through one
group commit) the database.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from datetime import datetime
from functools import partial

from core.accuracy import LiveErrorTracker
from core.clock import Clock
from core.commands import InputKey
from core.demand import ClosedInterval
from core.ingest import LiveMinutes
from core.readings import CompletedMinute, ReadingGrid
from core.records import HeldMinute
from core.series import MinuteSeries
from core.snapshot import Quality
from core.state import CoreState
from core.storage.repository import MinuteColumns, Storage
from core.writer import DatabaseWriter

log = logging.getLogger(__name__)

# Counts minutes the computation has seen close (the band adapters score against them).
MinuteObserver = Callable[[int, float], None]


def meter_quality(grid: ReadingGrid, now: datetime) -> Quality:
    """The meter input's quality: no write yet, stale (no write within --stale-after-s), or OK."""
    if grid.last_write_s is None:
        return Quality.NO_DATA
    if grid.is_stale(now.timestamp()):
        return Quality.STALE_INPUT
    return Quality.OK


class MinuteCache:
    """The meter, outdoor air and dispatched kW of the last ``capacity_minutes`` minutes."""

    def __init__(self, capacity_minutes: int) -> None:
        self.meter = MinuteSeries(capacity_minutes)
        # Outdoor air in force at each minute (NaN where unknown), for models that use it.
        self.outdoor = MinuteSeries(capacity_minutes)
        # kW of the battery and EV charging dispatched at each minute (NaN where none known): the
        # forecasters see the meter less this, the building's base load.
        self.dispatched = MinuteSeries(capacity_minutes)

    @property
    def capacity_minutes(self) -> int:
        """How many minutes each series holds."""
        return self.meter.capacity_minutes

    @property
    def latest_minute(self) -> int | None:
        """The newest minute with a meter value (live or imported), None if none."""
        return self.meter.latest_minute

    def stored_columns(
        self, storage: Storage, end_minute: int
    ) -> list[tuple[MinuteSeries, MinuteColumns]]:
        """The stored meter, outdoor air and dispatched kW of the window ending at
        ``end_minute`` (a read; runs in a worker thread)."""
        lo = end_minute - self.capacity_minutes
        return [
            (self.meter, storage.load_series(lo, end_minute)),
            (self.outdoor, storage.load_outdoor_air(lo, end_minute)),
            (self.dispatched, storage.load_dispatched(lo, end_minute)),
        ]

    def restore(self, storage: Storage, now_minute: int) -> int:
        """Fill the cache from the database; the number of meter minutes read."""
        columns = self.stored_columns(storage, now_minute)
        for series, values in columns:
            series.set_many(*values)
        return len(columns[0][1][0])

    async def pick_up(self, storage: Storage, end_minute: int) -> tuple[int, int]:
        """Add minutes up to ``end_minute`` stored behind the cache's back; (meter, outdoor air)
        minutes added.

        One count query decides; the cache's own values win over the database's (a live minute
        may still be on its way to the database).
        """
        length = self.capacity_minutes
        lo = end_minute - length + 1
        stored = await asyncio.to_thread(storage.column_counts, lo, end_minute)
        known = (
            self.meter.count_known(end_minute, length),
            self.outdoor.count_known(end_minute, length),
            self.dispatched.count_known(end_minute, length),
        )
        if all(db <= cached for db, cached in zip(stored, known, strict=True)):
            return 0, 0
        columns = await asyncio.to_thread(self.stored_columns, storage, end_minute)
        added = [series.fill_missing(*values) for series, values in columns]
        return added[0], added[1]

    def apply_history(self, means: dict[int, float]) -> None:
        """Put merged history (the stored mean of each minute) into the meter series."""
        for minute, kw in means.items():
            self.meter.set(minute, kw)

    def record(self, minute: int, kw: float, outdoor: float | None, own: float | None) -> None:
        """A closed live minute with the outdoor air and dispatched kW in force when it closed."""
        self.meter.set(minute, kw)
        if outdoor is not None:
            self.outdoor.set(minute, outdoor)
        if own is not None:
            self.dispatched.set(minute, own)

    def base_load(self, minute: int) -> float:
        """The meter less the dispatched kW of ``minute`` (NaN when the meter has none)."""
        own = self.dispatched.get(minute)
        return self.meter.get(minute) - (0.0 if math.isnan(own) else own)

    def held_minute(self, minute: int) -> HeldMinute:
        """The meter, base load and outdoor air held for ``minute``."""
        return HeldMinute(self.meter.get(minute), self.base_load(minute), self.outdoor.get(minute))


class MinuteKeeper:
    """Closes minutes into the cache, the scores, the demand ledger and the database."""

    def __init__(
        self,
        cache: MinuteCache,
        grid: ReadingGrid,
        state: CoreState,
        errors: LiveErrorTracker,
        observer: MinuteObserver,
        storage: Storage,
        writer: DatabaseWriter,
        clock: Clock,
        stale_after_s: float,
    ) -> None:
        self._cache = cache
        self._grid = grid
        self._state = state
        self._errors = errors
        self._observer = observer
        self._storage = storage
        self._writer = writer
        self._clock = clock
        self._stale_after_s = stale_after_s
        # Live minutes go to the database through one group commit; a live reading is
        # acknowledged once the commit holding it is done.
        self.live = LiveMinutes(writer, storage, self.open_minute_now)

    def close(self, completed: list[CompletedMinute]) -> None:
        """Record minutes the grid closed: cache, scores, demand ledger, database."""
        if not completed:
            return
        outdoor = self.input_in_force(InputKey.OUTDOOR_AIR_TEMP)
        own = self.dispatched_in_force()
        closed: list[ClosedInterval] = []
        for item in completed:
            self._cache.record(item.minute, item.kw, outdoor, own)
            # The forecasts are of the base load: so is what they are scored against.
            self._errors.observed(item.minute, item.kw - (own or 0.0))
            self._observer(item.minute, item.kw - (own or 0.0))
            closed.extend(self._state.demand.observe_minute(item.minute, item.kw))
        self.live.add_closed(completed, outdoor, own)
        self.store_intervals(closed)

    def store_intervals(self, closed: list[ClosedInterval]) -> None:
        """Queue closed demand intervals for the database."""
        if closed:
            self._writer.enqueue(
                "demand intervals", partial(self._storage.upsert_intervals, closed)
            )

    async def confirm_live(self) -> None:
        """Wait until the live readings folded in so far are committed (StorageUnavailable if
        the database cannot confirm it: the reading is then not acknowledged)."""
        await self._writer.confirm(self.live.request())

    def open_minute_now(self) -> tuple[CompletedMinute | None, float | None, float | None]:
        """The open minute's running mean, with the outdoor air and dispatched kW in force."""
        return (
            self._grid.open_partial(),
            self.input_in_force(InputKey.OUTDOOR_AIR_TEMP),
            self.dispatched_in_force(),
        )

    def input_in_force(self, key: InputKey) -> float | None:
        """An optional input's value written within --stale-after-s, else None."""
        return self._state.input_in_force(key, self._now(), self._stale_after_s)

    def dispatched_in_force(self) -> float | None:
        """kW of the battery and EV charging in force now, None if neither."""
        return self._state.dispatched_in_force(self._now(), self._stale_after_s)

    def _now(self) -> datetime:
        return self._clock.now()

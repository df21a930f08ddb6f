"""Imported history: picking it up while running, the period peak it seeds, the forecasts it
would have had (the forecast replay).

``open-dsm import`` writes minutes behind the running service's back; ``pick_up_imports`` finds
them (one count query), adds them to the minute cache, counts them toward the billing period's
peak and replays the served forecaster over the last day of them, so the forecast chart and the
live error have a line from the first minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from zoneinfo import ZoneInfo

import numpy as np

from core.calendar_service import CalendarKeeper
from core.clock import Clock
from core.compute import SnapshotComputer
from core.demand import DemandConfig, billing_period
from core.forecast.base import HORIZON_MINUTES
from core.minute_cache import MinuteCache, MinuteKeeper
from core.month import fixed_intervals
from core.readings import ReadingGrid
from core.state import CoreState
from core.storage.repository import Storage
from core.timegrid import minute_of, minute_start
from core.writer import DatabaseWriter

log = logging.getLogger(__name__)

# Replaying forecasts over imported history: pause this long after each slice of work.
REPLAY_PAUSE_S = 0.01


class ImportedHistory:
    """Picks up minutes stored outside the service; seeds the period peak; replays forecasts."""

    def __init__(
        self,
        *,
        state: CoreState,
        cache: MinuteCache,
        keeper: MinuteKeeper,
        grid: ReadingGrid,
        computer: SnapshotComputer,
        calendar: CalendarKeeper,
        storage: Storage,
        writer: DatabaseWriter,
        clock: Clock,
        tz: ZoneInfo,
        demand_config: DemandConfig,
        errors_window_minutes: int,
        changed: Callable[[], None],
    ) -> None:
        self._state = state
        self._cache = cache
        self._keeper = keeper
        self._grid = grid
        self._computer = computer
        self._calendar = calendar
        self._storage = storage
        self._writer = writer
        self._clock = clock
        self._tz = tz
        self._demand_config = demand_config
        self._errors_window_minutes = errors_window_minutes
        self._changed = changed  # wakes the core to recompute
        self._replay_task: asyncio.Task[None] | None = None
        self._replay_again = False

    async def pick_up_imports(self) -> int:
        """Add minutes stored behind the service's back (``open-dsm import`` while it runs) to
        the cache; return how many meter minutes were added.

        One count query decides; the cache's own values win over the database's. ``DsmCore.run``
        calls it every CACHE_REFRESH_S.
        """
        self._state.assert_loop()
        # The calendar too may have been imported (``open-dsm import --calendar``).
        try:
            await self._calendar.reload()
        except Exception:  # a database hiccup: the calendar in force stays, try again next time
            log.exception("reading the stored calendar failed")
        now_minute = minute_of(self._clock.now())
        # The open minute's running mean is stored (acknowledged means committed) but is not in
        # the cache until it closes: compare the closed minutes only.
        open_minute = self._grid.open_minute
        end = now_minute if open_minute is None else min(now_minute, open_minute - 1)
        meter, outdoor = await self._cache.pick_up(self._storage, end)
        if meter or outdoor:
            log.info(
                "picked up %d stored minutes (%d with outdoor air) written outside the service",
                meter,
                outdoor,
            )
            if meter:
                await self.seed_period_peak()
                self.request_replay()
            self._changed()
        return meter

    async def seed_period_peak(self) -> bool:
        """Count the stored minutes of the current billing period toward its peak.

        Imported history seeds the peak this way (the live tracker only sees live minutes); the
        intervals are stored too, so the month view lists them. True when the peak changed.
        """
        now = self._clock.now()
        config = self._demand_config
        period = billing_period(now, self._tz, config.billing_cycle_day)
        end = minute_of(now) - 1
        lo = max(period.start_minute, end - self._cache.capacity_minutes + 1)
        if end < lo:
            return False
        values = self._cache.meter.window(end, end - lo + 1)
        if not np.any(np.isfinite(values)):
            return False
        found = await asyncio.to_thread(fixed_intervals, lo, values, config)
        intervals = [i for i in found if i.period_start_minute == period.start_minute]
        if not intervals:
            return False
        demand = self._state.demand
        changed = demand.seed_peak(intervals)
        self._keeper.store_intervals(intervals)
        if changed:
            log.info(
                "billing-period peak %.2f kW (interval from %s) from %d stored intervals",
                demand.period_peak_kw or 0.0,
                minute_start(demand.period_peak_start_minute or 0).isoformat(),
                len(intervals),
            )
            self._changed()
        return changed

    def request_replay(self) -> None:
        """Replay the served forecaster over the last day of stored minutes (in the background)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not started on a loop (a test driving the core by hand)
            return
        if self._replay_task is not None and not self._replay_task.done():
            self._replay_again = True
            return
        self._replay_task = asyncio.create_task(
            self._replay_until_settled(), name="open-dsm-forecast-replay"
        )

    async def stop(self) -> None:
        """Cancel a replay in progress."""
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task

    async def _replay_until_settled(self) -> None:
        while True:
            self._replay_again = False
            try:
                count = await self.replay_forecasts()
            except Exception:  # never stops the service; the next import or model tries again
                log.exception("replaying forecasts over stored history failed")
                return
            if count:
                log.info("replayed %d forecasts over stored history", count)
            if not self._replay_again:
                return

    async def replay_forecasts(self, slice_s: float = 0.02) -> int:
        """Log the 60-minute-ahead forecasts the served forecaster would have made over the last
        day of stored minutes, where no live forecast was logged; they are marked replayed.

        Runs on the loop in slices of ``slice_s`` (the forecaster is not thread-safe); returns
        how many were logged.
        """
        self._state.assert_loop()
        now_minute = minute_of(self._clock.now())
        last_origin = now_minute - 2  # the live computation logs origin now-1 itself
        first_origin = now_minute - self._errors_window_minutes - HORIZON_MINUTES
        live = await asyncio.to_thread(
            self._storage.live_forecast_targets,
            first_origin + HORIZON_MINUTES,
            last_origin + HORIZON_MINUTES + 1,
        )
        forecaster = self._state.forecaster
        rows: list[tuple[int, str, float, datetime]] = []
        started = time.perf_counter()
        for origin in range(first_origin, last_origin + 1):
            target = origin + HORIZON_MINUTES
            if target in live or math.isnan(self._cache.meter.get(origin)):
                continue
            if forecaster is not self._state.forecaster:
                self._replay_again = True  # a new model serves: replay with it instead
                return 0
            made_at = minute_start(origin + 1)
            history = self._computer.history(origin, forecaster.history_minutes)
            forecast = forecaster.forecast(history, self._tz, made_at)
            if forecast is None:  # too little history at this origin
                continue
            rows.append((target, forecast.forecaster, forecast.one_hour_kw, made_at))
            if time.perf_counter() - started > slice_s:
                # A pause, not just a yield: the worker threads (database reads, the writer)
                # need the GIL too, and start-up work queues behind this.
                await asyncio.sleep(REPLAY_PAUSE_S)
                started = time.perf_counter()
        if not rows:
            return 0
        stored: int = await self._writer.submit(
            "replayed forecasts", partial(self._storage.log_replayed_forecasts, rows)
        )
        return stored

"""DsmCore: the lifecycle, the command dispatch and publishing. One instance per process.

The faces hold its two ports (``core.ports``): ``command(record)`` for every change, ``reads``
for everything shown. ``core.factory.build_core`` builds the rooms it runs: the minute cache and
keeper (``core.minute_cache``), the state store (``core.state_store``), imported history and the
forecast replay (``core.history``), the handlers (``core.handlers``), the queries
(``core.queries``) and the computation (``core.compute``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partial
from typing import Any, TypeVar, cast

from core.calendar import SiteCalendar
from core.calendar_service import CalendarKeeper
from core.clock import Clock, clock_speed
from core.compute import SnapshotComputer
from core.config import Settings
from core.handlers import Handler, Hub
from core.history import ImportedHistory
from core.minute_cache import MinuteKeeper, meter_quality
from core.ports import Command
from core.queries import CoreQueries
from core.readings import ReadingGrid
from core.snapshot import Snapshot
from core.state import CoreState
from core.state_store import StateStore
from core.storage.repository import Storage
from core.writer import DatabaseWriter, WriterFault

log = logging.getLogger(__name__)

SnapshotListener = Callable[[Snapshot], None]
R = TypeVar("R")

# How often a running service looks for minutes stored behind its back (``open-dsm import``).
CACHE_REFRESH_S = 300.0


class DsmCore:
    """Runs the periodic computation, dispatches each command to its handler, publishes."""

    def __init__(
        self,
        *,
        settings: Settings,
        clock: Clock,
        storage: Storage,
        writer: DatabaseWriter,
        state: CoreState,
        grid: ReadingGrid,
        keeper: MinuteKeeper,
        computer: SnapshotComputer,
        store: StateStore,
        history: ImportedHistory,
        queries: CoreQueries,
        calendar: CalendarKeeper,
        wake: asyncio.Event,
        handlers: Callable[[Hub], Mapping[type[Command[Any]], Handler]],
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._storage = storage
        self._writer = writer
        self._state = state
        self._grid = grid
        self._keeper = keeper
        self._computer = computer
        self._store = store
        self._history = history
        self._queries = queries
        self._calendar = calendar
        self._handlers = handlers(self)
        self._listeners: list[SnapshotListener] = []
        self._wake = wake
        self._speed = clock_speed(clock)
        writer.on_fault_change(self._storage_fault_changed)
        calendar.subscribe(self._calendar_changed)

    # -- the two ports -------------------------------------------------------------------------

    async def command(self, cmd: Command[R]) -> R:
        """Hand ``cmd`` to its one handler, on the event loop's thread."""
        self._assert_loop()
        handler = self._handlers.get(type(cmd))
        if handler is None:
            raise TypeError(f"no handler for {type(cmd).__name__}")
        return cast(R, await handler(cmd))

    @property
    def reads(self) -> CoreQueries:
        """The read side: the snapshot and typed records."""
        return self._queries

    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot (immutable)."""
        return self._state.snapshot

    @property
    def writer(self) -> DatabaseWriter:
        """The single database writer the core starts and stops."""
        return self._writer

    @property
    def history(self) -> ImportedHistory:
        """Imported history: pick-up, the period peak, the forecast replay."""
        return self._history

    def subscribe(self, listener: SnapshotListener) -> None:
        """Call ``listener`` with every new snapshot (on the event loop)."""
        self._listeners.append(listener)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore cache, grid and last snapshot from the database; start the writer."""
        self._state.loop_thread = threading.get_ident()
        self._writer.start()
        now = self._clock.now()
        # Reads at start-up, before anything writes: the writer owns writes, not reads.
        await self._calendar.load()
        await asyncio.to_thread(self._store.restore, self._state, now)
        self.publish(self.with_inputs(now))
        await self._history.seed_period_peak()

    async def run(self) -> None:
        """Recompute the snapshot every interval and watch the input for staleness."""
        interval = self._settings.snapshot_interval_s
        await self.tick()
        self._history.request_replay()
        next_refresh = self._clock.now().timestamp() + CACHE_REFRESH_S
        while True:
            now = self._clock.now().timestamp()
            next_tick = (math.floor(now / interval) + 1) * interval + 0.05
            deadline = next_tick
            stale_at = self._grid.stale_deadline_s()
            if stale_at is not None and now < stale_at < deadline:
                deadline = stale_at + 0.01
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                # Clock seconds to wall seconds (a demo's simulated clock runs faster).
                wait_s = max(0.0, deadline - now) / self._speed
                await asyncio.wait_for(self._wake.wait(), timeout=wait_s)
            if self._clock.now().timestamp() >= next_tick or self._wake.is_set():
                await self.tick()
            else:
                self.refresh_input(self._clock.now())
            if self._clock.now().timestamp() >= next_refresh:
                next_refresh = self._clock.now().timestamp() + CACHE_REFRESH_S
                try:
                    await self._history.pick_up_imports()
                except Exception:  # a database hiccup: try again next time, never stop the loop
                    log.exception("looking for imported minutes failed")

    async def stop(self) -> None:
        """Flush the open minute's partial mean and drain pending writes."""
        await self._history.stop()
        if self._grid.open_partial() is not None:
            self._keeper.live.request()  # the open minute's partial mean, kept for the next start
        self.persist()
        await self._writer.stop()

    # -- the periodic computation --------------------------------------------------------------

    async def tick(self) -> Snapshot:
        """Close finished minutes and recompute every output into a new snapshot."""
        now = self._clock.now()
        self._keeper.close(self._grid.close_until(now.timestamp()))
        snapshot = self._compute(now)
        self.publish(snapshot)
        self.persist()
        return snapshot

    def refresh_input(self, now: datetime) -> None:
        """Re-check the input's staleness now (``run`` calls it between ticks); publish a change."""
        quality = meter_quality(self._grid, now)
        if quality == self._state.snapshot.input_quality:
            return
        log.warning(
            "meter input is %s (limit %.0f s without a write)",
            quality,
            self._settings.stale_after_s,
        )
        self.publish(self._compute(now))

    def _compute(self, now: datetime) -> Snapshot:
        state = self._state
        computed = self._computer.compute(
            state.snapshot,
            now,
            input_quality=meter_quality(self._grid, now),
            forecaster=state.forecaster,
            demand=state.demand,
            inputs=state.optional_inputs(),
        )
        entry = computed.forecast_log
        if entry is not None:
            self._writer.enqueue(
                "forecast log",
                partial(
                    self._storage.log_forecast,
                    entry.target_minute,
                    entry.forecaster,
                    entry.kw,
                    entry.made_at,
                ),
            )
        self._keeper.store_intervals(computed.closed_intervals)
        return dataclasses.replace(
            computed.snapshot,
            inputs=dict(state.inputs),
            input_qualities=state.input_qualities(now, self._settings.stale_after_s),
        )

    # -- publishing (the handlers' hub) --------------------------------------------------------

    def publish(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` the current one and hand it to every listener (loop thread only)."""
        self._assert_loop()
        self._state.snapshot = snapshot
        for listener in self._listeners:
            try:
                listener(snapshot)
            except Exception:  # a faulty face must not stop the core
                log.exception("snapshot listener failed")

    def with_inputs(self, now: datetime) -> Snapshot:
        """The current snapshot with every input field refreshed from the priority arrays."""
        fault = self._writer.fault
        return self._state.with_inputs(
            now,
            meter_quality(self._grid, now),
            self._settings.stale_after_s,
            None if fault is None else fault.error,
        )

    def wake(self) -> None:
        """Recompute at once rather than at the next interval."""
        self._wake.set()

    def persist(self) -> None:
        """Queue the state (snapshot, classifier, demand tracker, priority arrays) for saving."""
        self._store.save(self._state)

    def _calendar_changed(self, calendar: SiteCalendar) -> None:
        self._computer.calendar = None if calendar.empty else calendar
        self._wake.set()

    def _storage_fault_changed(self, fault: WriterFault | None) -> None:
        if fault is None:
            log.info("storage fault cleared")
        self.publish(self.with_inputs(self._clock.now()))

    def _assert_loop(self) -> None:
        """Commands and publishing run on the event loop's thread, never in a worker thread."""
        self._state.assert_loop()

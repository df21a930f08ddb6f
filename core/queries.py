"""The read side: the snapshot and typed records, for the faces (``core.ports.CoreReads``).

Reads change nothing. Stored rows come back as typed records (``core.records``, ``core.intake``)
read in a worker thread; in-memory figures (the snapshot, the month so far) are taken on the loop
and any heavy work on them runs in a thread.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime

from core.accuracy import BandAdapter, LiveErrorTracker
from core.calendar_service import CalendarKeeper
from core.clock import Clock
from core.commands import CommandState
from core.compute import SnapshotComputer
from core.config import Settings
from core.demand import DemandConfig, billing_period
from core.dispatch.assets import Battery, Tariff
from core.dispatch.controller import DispatchController
from core.errors import InvalidReading, InvalidRequest
from core.intake import ReadingsPage, ReadingStats
from core.minute_cache import MinuteCache
from core.month import MonthSummary, month_summary
from core.records import DemandIntervalRecord, HeldMinute, LoggedForecast, ModelRunRecord
from core.snapshot import Snapshot
from core.state import CoreState
from core.storage.repository import Storage
from core.timegrid import SECONDS_PER_MINUTE, minute_of
from core.writer import DatabaseWriter


class CoreQueries:
    """Answers the faces' reads from the core's state and the database."""

    def __init__(
        self,
        *,
        settings: Settings,
        state: CoreState,
        cache: MinuteCache,
        computer: SnapshotComputer,
        errors: LiveErrorTracker,
        calendar: CalendarKeeper,
        dispatch: DispatchController | None,
        stats: ReadingStats,
        storage: Storage,
        writer: DatabaseWriter,
        clock: Clock,
        demand_config: DemandConfig,
        tariff: Tariff,
    ) -> None:
        self._settings = settings
        self._state = state
        self._cache = cache
        self._computer = computer
        self._errors = errors
        self._calendar = calendar
        self._dispatch = dispatch
        self._stats = stats
        self._storage = storage
        self._writer = writer
        self._clock = clock
        self._demand_config = demand_config
        self._tariff = tariff

    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot (immutable)."""
        return self._state.snapshot

    @property
    def settings(self) -> Settings:
        """The settings the core was built with."""
        return self._settings

    @property
    def stats(self) -> ReadingStats:
        """Readings accepted and refused, by source (for metrics)."""
        return self._stats

    @property
    def writer(self) -> DatabaseWriter:
        """The single database writer (its fault state feeds /readyz and the metrics)."""
        return self._writer

    @property
    def calendar(self) -> CalendarKeeper:
        """The site calendar in force (the faces read it here; they change it by commands)."""
        return self._calendar

    @property
    def dispatch_controller(self) -> DispatchController | None:
        """The dispatch controller (the self-tuning serves its choice through it)."""
        return self._dispatch

    @property
    def dispatch_battery(self) -> Battery | None:
        """The battery the dispatch planner runs, None without one."""
        return self._dispatch.battery if self._dispatch is not None else None

    @property
    def latest_minute(self) -> int | None:
        """The newest minute with a meter value in the cache (live or imported), None if none."""
        return self._cache.latest_minute

    @property
    def live_errors_kw(self) -> tuple[float, ...]:
        """The 60-minute-ahead errors (actual - forecast) in the live RMSE window."""
        return self._errors.errors_kw

    def now(self) -> datetime:
        """The core's clock now (the system clock, or a demo's simulated one)."""
        return self._clock.now()

    def command_state(self, key: str) -> CommandState:
        """The priority array of the commandable input ``key``."""
        return self._state.commands[key]

    def held_minute(self, minute: int) -> HeldMinute:
        """The meter, base load and outdoor air the core holds for ``minute``."""
        return self._cache.held_minute(minute)

    def band(self, forecaster: str, day_ahead: bool = False) -> BandAdapter:
        """The served band adapter of one forecaster's 60-minute or day-ahead output."""
        return self._computer.band(forecaster, day_ahead)

    def snapshot_age_s(self) -> float | None:
        """Seconds since the outputs were last computed, None before the first computation."""
        computed_at = self._state.snapshot.computed_at
        if computed_at is None:
            return None
        return (self._clock.now() - computed_at).total_seconds()

    async def month(self) -> MonthSummary:
        """The billing period so far: demand charge, energy, top intervals, battery saving."""
        now = self._clock.now()
        config = self._demand_config
        period = billing_period(now, config.timezone, config.billing_cycle_day)
        end = minute_of(now) - 1
        lo = max(period.start_minute, end - self._cache.capacity_minutes + 1)
        length = max(0, end - lo + 1)
        meter = self._cache.meter.window(end, length)
        own = self._cache.dispatched.window(end, length)
        demand = self._state.demand
        peak_kw = demand.period_peak_kw
        peak_at = demand.period_peak_start_minute
        tracked = (
            (peak_kw, peak_at)
            if peak_kw is not None and peak_at is not None and peak_at >= period.start_minute
            else None
        )
        return await asyncio.to_thread(
            month_summary, lo, meter, own, config, self._tariff, now, tracked
        )

    async def ready(self) -> bool:
        """True when the database answers and takes writes."""
        if self._writer.fault is not None:
            return False
        return await asyncio.to_thread(self._storage.ping)

    async def readings(
        self, start: datetime | None, end: datetime | None, limit: int
    ) -> ReadingsPage:
        """Stored minutes in [start, end), oldest first, with the start of the next page."""
        if limit < 1:
            raise InvalidRequest("limit must be at least 1")
        start_minute, end_minute = minute_range(start, end)
        rows = await asyncio.to_thread(
            self._storage.list_minutes, start_minute, end_minute, limit + 1
        )
        next_start = rows[limit].observed_at if len(rows) > limit else None
        return ReadingsPage(rows[:limit], next_start)

    async def demand_intervals(
        self, start: datetime | None, end: datetime | None, limit: int
    ) -> list[DemandIntervalRecord]:
        """Closed demand intervals in [start, end), oldest first."""
        start_minute, end_minute = minute_range(start, end)
        return await asyncio.to_thread(
            self._storage.list_intervals, start_minute, end_minute, limit
        )

    async def forecast_history(
        self, start: datetime | None, end: datetime | None, limit: int
    ) -> list[LoggedForecast]:
        """Logged 60-minute-ahead forecasts with target minutes in [start, end), oldest first
        (live and replayed)."""
        if limit < 1:
            raise InvalidRequest("limit must be at least 1")
        start_minute, end_minute = minute_range(start, end)
        return await asyncio.to_thread(
            self._storage.forecast_log_between, start_minute, end_minute, limit
        )

    async def model_runs(self, limit: int = 50) -> list[ModelRunRecord]:
        """Training runs, newest first."""
        return await asyncio.to_thread(self._storage.model_runs, limit)


def minute_range(start: datetime | None, end: datetime | None) -> tuple[int | None, int | None]:
    """Minute bounds of a query's [start, end): both need an offset, end after start."""
    for name, value in (("start", start), ("end", end)):
        if value is not None and value.tzinfo is None:
            raise InvalidReading(f"{name} must include a time-zone offset (e.g. Z)")
    if start is not None and end is not None and end <= start:
        raise InvalidRequest("end must be after start")
    start_minute = math.ceil(start.timestamp() / SECONDS_PER_MINUTE) if start else None
    end_minute = math.ceil(end.timestamp() / SECONDS_PER_MINUTE) if end else None
    return start_minute, end_minute

"""DsmCore: the service both faces call. One instance per process, driven by one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial

import numpy as np

from core.accuracy import BandAdapter, LiveErrorTracker
from core.calendar import SiteCalendar
from core.calendar_service import CalendarKeeper
from core.clock import Clock, clock_speed
from core.commands import REST_PRIORITY, CommandState, InputKey, check_priority
from core.compute import SnapshotComputer
from core.config import Settings
from core.demand import (
    ClosedInterval,
    DemandTracker,
    OptionalInputs,
    WindowMode,
    battery_power_in_force,
    billing_period,
    value_if_fresh,
)
from core.demand import Reading as DemandReading
from core.dispatch.assets import Battery
from core.dispatch.controller import DispatchController
from core.errors import InvalidReading, InvalidRequest
from core.forecast.base import (
    HORIZON_MINUTES,
    Forecaster,
)
from core.ingest import LiveMinutes
from core.intake import BatchResult as BatchResult
from core.intake import Reading as Reading
from core.intake import ReadingLike as ReadingLike
from core.intake import ReadingsPage as ReadingsPage
from core.intake import ReadingStats as ReadingStats
from core.month import MonthSummary, fixed_intervals, month_summary
from core.readings import CompletedMinute, ReadingGrid
from core.records import DemandIntervalRecord, HeldMinute, LoggedForecast, ModelRunRecord
from core.series import MinuteSeries
from core.signals import (
    LoadClassifier,
)
from core.site_config import demand_config as demand_config
from core.site_config import dispatch_controller as dispatch_controller
from core.site_config import tariff_of as tariff_of
from core.snapshot import ModelStatus, Quality, Snapshot
from core.storage import recovery
from core.storage.repository import MinuteColumns, Storage
from core.timegrid import (
    MINUTES_PER_DAY,
    MINUTES_PER_WEEK,
    SECONDS_PER_MINUTE,
    minute_of,
    minute_start,
)
from core.validation import INPUT_RANGES, InputValidator
from core.writer import DatabaseWriter, WriterFault

log = logging.getLogger(__name__)

SnapshotListener = Callable[[Snapshot], None]

# Live RMSE of the served forecaster is taken over this trailing window of matched forecasts.
LIVE_RMSE_WINDOW_MINUTES = MINUTES_PER_DAY
MAX_BATCH = 100_000
# A batch is validated and folded in slices of this many readings, yielding the loop between
# them (a slice takes a few ms: no request holds the loop past 50 ms).
INGEST_SLICE = 1000
CACHE_MIN_WEEKS = 5
# How often a running service looks for minutes stored behind its back (``open-dsm import``).
CACHE_REFRESH_S = 300.0
# Replaying forecasts over imported history: pause this long after each slice of work.
REPLAY_PAUSE_S = 0.01
STATE_SNAPSHOT = "snapshot"
STATE_CLASSIFIER = "load_classifier"
STATE_DEMAND = "demand_tracker"
STATE_COMMANDS = "commands"
# Inputs whose writes end up in the database: refused at the door while it cannot keep them.
PERSISTED_INPUTS = frozenset(
    {InputKey.METER_KW, InputKey.DEMAND_TARGET_KW, InputKey.OUTDOOR_AIR_TEMP}
)


class DsmCore:
    """Reading cache, signals, forecast and persistence behind one snapshot."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        clock: Clock,
        forecaster: Forecaster,
        writer: DatabaseWriter | None = None,
    ) -> None:
        self._settings = settings
        self._storage = storage
        self._clock = clock
        self._forecaster = forecaster
        self._tz = settings.tz
        self._window_minutes = max(1, int(settings.percentile_window_days * MINUTES_PER_DAY))
        # Room for any forecaster a training run may produce (lags up to CACHE_MIN_WEEKS weeks).
        capacity = (
            max(
                self._window_minutes, forecaster.history_minutes, CACHE_MIN_WEEKS * MINUTES_PER_WEEK
            )
            + HORIZON_MINUTES
        )
        self._series = MinuteSeries(capacity)
        # Outdoor air in force at each minute (NaN where unknown), for models that use it.
        self._outdoor = MinuteSeries(capacity)
        # kW of the battery and EV charging dispatched at each minute (NaN where none known): the
        # forecasters see the meter less this, the building's base load.
        self._dispatched = MinuteSeries(capacity)
        self._grid = ReadingGrid(settings.stale_after_s)
        self._classifier = LoadClassifier(
            settings.high_percentile,
            settings.low_percentile,
            settings.flag_min_dwell_s,
            settings.flag_min_history_minutes,
        )
        self._errors = LiveErrorTracker(LIVE_RMSE_WINDOW_MINUTES)
        self._dispatch = dispatch_controller(settings)
        self._computer = SnapshotComputer(
            self._series,
            self._classifier,
            self._errors,
            self._tz,
            self._window_minutes,
            outdoor=self._outdoor,
            dispatched=self._dispatched,
            dispatch=self._dispatch,
            interval_minutes=settings.demand_interval_minutes,
            stale_after_s=settings.stale_after_s,
            sliding_window=settings.demand_window == WindowMode.SLIDING.value,
        )
        self._demand_config = demand_config(settings)
        self._demand = DemandTracker(self._demand_config)
        self._validator = InputValidator(settings)
        self._inputs: dict[str, tuple[float, datetime]] = {}
        self._commands: dict[str, CommandState] = {key: CommandState() for key in InputKey}
        self._commands[InputKey.DEMAND_TARGET_KW] = CommandState(
            relinquish_default=settings.demand_target_kw, hold_last=False
        )
        self._snapshot = Snapshot(
            model=ModelStatus(forecaster=forecaster.name), commands=dict(self._commands)
        )
        self._listeners: list[SnapshotListener] = []
        self._writer = writer or DatabaseWriter(clock)
        self._writer.on_fault_change(self._storage_fault_changed)
        # Live minutes go to the database through one group commit; a live reading is
        # acknowledged once the commit holding it is done.
        self._live = LiveMinutes(self._writer, storage, self._open_minute_now)
        self._loop_thread: int | None = None
        self._wake = asyncio.Event()
        self._calendar = CalendarKeeper(storage, self._writer, clock, self._tz)
        self._calendar.subscribe(self._calendar_changed)
        self._speed = clock_speed(clock)
        self._replay_task: asyncio.Task[None] | None = None
        self._replay_again = False
        self.stats = ReadingStats()

    # -- public state --------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings the core was built with."""
        return self._settings

    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot (immutable)."""
        return self._snapshot

    @property
    def dispatch_controller(self) -> DispatchController | None:
        """The dispatch controller (the self-tuning serves its choice through it)."""
        return self._dispatch

    @property
    def dispatch_battery(self) -> Battery | None:
        """The battery the dispatch planner runs, None without one."""
        return self._dispatch.battery if self._dispatch is not None else None

    def now(self) -> datetime:
        """The core's clock now (the system clock, or a demo's simulated one)."""
        return self._clock.now()

    @property
    def latest_minute(self) -> int | None:
        """The newest minute with a meter value in the cache (live or imported), None if none."""
        return self._series.latest_minute

    @property
    def calendar(self) -> CalendarKeeper:
        """The site calendar in force (REST and BACnet read and change it here)."""
        return self._calendar

    def _calendar_changed(self, calendar: SiteCalendar) -> None:
        self._computer.calendar = None if calendar.empty else calendar
        self._wake.set()

    @property
    def writer(self) -> DatabaseWriter:
        """The single database writer (its fault state feeds /readyz and the metrics)."""
        return self._writer

    def held_minute(self, minute: int) -> HeldMinute:
        """The meter, base load and outdoor air the core holds for ``minute``."""
        return HeldMinute(
            self._series.get(minute), self._base_load(minute), self._outdoor.get(minute)
        )

    def band(self, forecaster: str, day_ahead: bool = False) -> BandAdapter:
        """The served band adapter of one forecaster's 60-minute or day-ahead output."""
        return self._computer.band(forecaster, day_ahead)

    @property
    def live_errors_kw(self) -> tuple[float, ...]:
        """The 60-minute-ahead errors (actual - forecast) in the live RMSE window."""
        return self._errors.errors_kw

    def subscribe(self, listener: SnapshotListener) -> None:
        """Call ``listener`` with every new snapshot (on the event loop)."""
        self._listeners.append(listener)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore cache, grid and last snapshot from the database; start the writer."""
        self._loop_thread = threading.get_ident()
        self._writer.start()
        now = self._clock.now()
        # Reads at start-up, before anything writes: the writer owns writes, not reads.
        await self._calendar.load()
        await asyncio.to_thread(self._restore, now)
        self._publish(self._with_inputs(now))
        await self.seed_period_peak()

    def _cache_columns(self, now_minute: int) -> list[tuple[MinuteSeries, MinuteColumns]]:
        """The stored meter, outdoor air and dispatched kW of the cache's window (a read)."""
        lo = now_minute - self._series.capacity_minutes
        return [
            (self._series, self._storage.load_series(lo, now_minute)),
            (self._outdoor, self._storage.load_outdoor_air(lo, now_minute)),
            (self._dispatched, self._storage.load_dispatched(lo, now_minute)),
        ]

    async def pick_up_imports(self) -> int:
        """Add minutes stored behind the service's back (``open-dsm import`` while it runs) to
        the cache; return how many meter minutes were added.

        One count query decides; the cache's own values win over the database's (a live minute
        may still be on its way to the database). ``run`` calls it every CACHE_REFRESH_S.
        """
        self._assert_loop()
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
        lo = end - self._series.capacity_minutes + 1
        length = self._series.capacity_minutes
        stored = await asyncio.to_thread(self._storage.column_counts, lo, end)
        known = (
            self._series.count_known(end, length),
            self._outdoor.count_known(end, length),
            self._dispatched.count_known(end, length),
        )
        if all(db <= cached for db, cached in zip(stored, known, strict=True)):
            return 0
        columns = await asyncio.to_thread(self._cache_columns, end)
        added = [series.fill_missing(*values) for series, values in columns]
        if any(added):
            log.info(
                "picked up %d stored minutes (%d with outdoor air) written outside the service",
                added[0],
                added[1],
            )
            if added[0]:
                await self.seed_period_peak()
                self.request_replay()
            self._wake.set()
        return added[0]

    # -- imported history: the period peak and the forecasts it would have had -------------------

    async def seed_period_peak(self) -> bool:
        """Count the stored minutes of the current billing period toward its peak.

        Imported history seeds the peak this way (the live tracker only sees live minutes); the
        intervals are stored too, so the month view lists them. True when the peak changed.
        """
        now = self._clock.now()
        period = billing_period(now, self._tz, self._settings.billing_cycle_day)
        end = minute_of(now) - 1
        lo = max(period.start_minute, end - self._series.capacity_minutes + 1)
        if end < lo:
            return False
        values = self._series.window(end, end - lo + 1)
        if not np.any(np.isfinite(values)):
            return False
        found = await asyncio.to_thread(fixed_intervals, lo, values, self._demand_config)
        intervals = [i for i in found if i.period_start_minute == period.start_minute]
        if not intervals:
            return False
        changed = self._demand.seed_peak(intervals)
        self._store_intervals(intervals)
        if changed:
            log.info(
                "billing-period peak %.2f kW (interval from %s) from %d stored intervals",
                self._demand.period_peak_kw or 0.0,
                minute_start(self._demand.period_peak_start_minute or 0).isoformat(),
                len(intervals),
            )
            self._wake.set()
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
        self._assert_loop()
        now_minute = minute_of(self._clock.now())
        last_origin = now_minute - 2  # the live computation logs origin now-1 itself
        first_origin = now_minute - LIVE_RMSE_WINDOW_MINUTES - HORIZON_MINUTES
        live = await asyncio.to_thread(
            self._storage.live_forecast_targets,
            first_origin + HORIZON_MINUTES,
            last_origin + HORIZON_MINUTES + 1,
        )
        forecaster = self._forecaster
        rows: list[tuple[int, str, float, datetime]] = []
        started = time.perf_counter()
        for origin in range(first_origin, last_origin + 1):
            target = origin + HORIZON_MINUTES
            if target in live or math.isnan(self._series.get(origin)):
                continue
            if forecaster is not self._forecaster:
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

    async def month(self) -> MonthSummary:
        """The billing period so far: demand charge, energy, top intervals, battery saving."""
        now = self._clock.now()
        period = billing_period(now, self._tz, self._settings.billing_cycle_day)
        end = minute_of(now) - 1
        lo = max(period.start_minute, end - self._series.capacity_minutes + 1)
        length = max(0, end - lo + 1)
        meter = self._series.window(end, length)
        own = self._dispatched.window(end, length)
        peak_kw = self._demand.period_peak_kw
        peak_at = self._demand.period_peak_start_minute
        tracked = (
            (peak_kw, peak_at)
            if peak_kw is not None and peak_at is not None and peak_at >= period.start_minute
            else None
        )
        return await asyncio.to_thread(
            month_summary,
            lo,
            meter,
            own,
            self._demand_config,
            tariff_of(self._settings),
            now,
            tracked,
        )

    def _restore(self, now: datetime) -> None:
        now_minute = minute_of(now)
        columns = self._cache_columns(now_minute)
        for series, values in columns:
            series.set_many(*values)
        minutes = columns[0][1][0]
        latest = self._storage.latest_minute()
        if latest is not None:
            self._grid.restore(latest.minute, latest.kw, latest.sample_count, now.timestamp())
        state = self._storage.get_state(STATE_CLASSIFIER)
        if state:
            self._classifier.restore(state)
        commands = self._storage.get_state(STATE_COMMANDS) or {}
        for key in InputKey:
            saved_command = commands.get(key)
            if not isinstance(saved_command, dict):
                continue
            try:
                restored_state = CommandState.from_state(
                    saved_command, self._commands[key].hold_last
                )
            except (ValueError, TypeError):
                log.warning("ignoring the unreadable priority array of %s", key)
                continue
            if not self._commands[key].hold_last:  # a setting: the configured default wins
                restored_state = dataclasses.replace(
                    restored_state, relinquish_default=self._commands[key].relinquish_default
                )
            self._commands[key] = restored_state
        demand_state = self._storage.get_state(STATE_DEMAND)
        if demand_state:
            try:
                self._demand = DemandTracker.from_state(demand_state, self._demand_config)
            except ValueError:
                log.warning("demand state unreadable; starting a fresh billing period record")
        saved = self._storage.get_state(STATE_SNAPSHOT)
        if saved:
            try:
                restored = Snapshot.from_state(saved)
            except (KeyError, ValueError, TypeError):
                log.warning("ignoring an unreadable saved snapshot", exc_info=True)
            else:
                # The model fields describe what serves now (the baseline until the training
                # manager loads an accepted model); keep the measured figures.
                model = ModelStatus.serving(self._forecaster.name, restored.model)
                self._snapshot = dataclasses.replace(
                    restored, input_quality=self._input_quality(now), model=model
                )
        meter_state = self._commands[InputKey.METER_KW]
        if InputKey.METER_KW not in commands and self._snapshot.input_kw is not None:
            # Saved before priority arrays existed: hold the last reading, as a relinquish would.
            self._commands[InputKey.METER_KW] = dataclasses.replace(
                meter_state, relinquish_default=self._snapshot.input_kw
            )
        target_state = self._commands[InputKey.DEMAND_TARGET_KW]
        saved_target = self._demand.target_kw
        if (
            InputKey.DEMAND_TARGET_KW not in commands
            and saved_target is not None
            and saved_target != target_state.relinquish_default
        ):
            # Saved before priority arrays existed: the tracker's target was the operator's write.
            target_state = target_state.command(saved_target, REST_PRIORITY)
            self._commands[InputKey.DEMAND_TARGET_KW] = target_state
        self._demand.set_target(target_state.present_value)
        for target, kw in self._storage.forecasts_since(now_minute - LIVE_RMSE_WINDOW_MINUTES):
            self._errors.predicted(target, kw)
            observed = self._base_load(target)
            if target <= now_minute - 1 and not math.isnan(observed):
                self._errors.observed(target, observed)
        log.info(
            "restored %d cached minutes (latest %s), snapshot from %s",
            len(minutes),
            minute_start(latest.minute).isoformat() if latest else "none",
            self._snapshot.computed_at.isoformat() if self._snapshot.computed_at else "never",
        )

    async def run(self) -> None:
        """Recompute the snapshot every interval and watch the input for staleness."""
        interval = self._settings.snapshot_interval_s
        await self.tick()
        self.request_replay()
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
                    await self.pick_up_imports()
                except Exception:  # a database hiccup: try again next time, never stop the loop
                    log.exception("looking for imported minutes failed")

    async def stop(self) -> None:
        """Flush the open minute's partial mean and drain pending writes."""
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
        if self._grid.open_partial() is not None:
            self._live.request()  # the open minute's partial mean, kept for the next start
        self._persist_state()
        await self._writer.stop()

    # -- commands: BACnet writes and relinquishes, REST writes ---------------------------------

    def command_state(self, key: str) -> CommandState:
        """The priority array of the commandable input ``key``."""
        return self._commands[key]

    async def command_input(
        self, key: str, value: float | None, priority: int, source: str = "bacnet"
    ) -> None:
        """Write ``value`` (None relinquishes) into ``key``'s priority array at ``priority``.

        The priority-array winner is what the core uses from then on; every face shows it.
        """
        self._assert_loop()
        if key not in self._commands:
            raise InvalidRequest(f"unknown input {key!r}")
        check_priority(priority)
        number = None if value is None else self._validate_counted(key, value, source)
        if key in PERSISTED_INPUTS:
            self._writer.check_accepting()
        now = self._clock.now()
        self._commands[key] = self._commands[key].command(number, priority)
        self._apply_command(key, now, now, source)
        if key == InputKey.METER_KW and number is not None:
            await self._confirm_live()  # acknowledged means committed

    async def rest_command(
        self, values: dict[str, float | None], observed_at: datetime | None = None
    ) -> None:
        """REST writes of several inputs at REST_PRIORITY: all checked first, then applied.

        Refused (CommandConflict, HTTP 409) while a higher BACnet priority commands one of them.
        """
        self._assert_loop()
        now = self._clock.now()
        at = self._validator.timestamp(observed_at, now)
        checked: dict[str, float | None] = {}
        for key, value in values.items():
            if key not in self._commands:
                raise InvalidReading(f"unknown input {key!r}")
            checked[key] = None if value is None else self._validate_counted(key, value, "rest")
            self._commands[key].check_rest_write(key)
        if any(key in PERSISTED_INPUTS for key in checked):
            self._writer.check_accepting()
        for key, number in checked.items():
            self._commands[key] = self._commands[key].command(number, REST_PRIORITY)
            self._apply_command(key, at, now, "rest")
        if checked.get(InputKey.METER_KW) is not None:
            await self._confirm_live()  # acknowledged means committed

    def _validate_counted(self, key: str, value: float, source: str) -> float:
        try:
            number = self._validator.command(key, value)
        except InvalidReading:
            if key == InputKey.METER_KW:
                self.stats.count(False, source)
            raise
        return number

    def _apply_command(self, key: str, at: datetime, now: datetime, source: str) -> None:
        """Make the core use ``key``'s present value and publish it."""
        present = self._commands[key].present_value
        if key == InputKey.METER_KW:
            if present is not None:
                self.stats.count(True, source)
                self._accept_live(present, at, now)
                return
        elif key == InputKey.DEMAND_TARGET_KW:
            self._demand.set_target(present)
            self._persist_state()
            self._wake.set()
        elif present is None:
            self._inputs.pop(key, None)
        else:
            self._inputs[key] = (present, at)
        self._publish(self._with_inputs(now))

    def _with_inputs(self, now: datetime) -> Snapshot:
        """The current snapshot with every input field refreshed from the priority arrays."""
        meter = self._commands[InputKey.METER_KW].present_value
        return dataclasses.replace(
            self._snapshot,
            input_kw=meter,
            input_quality=self._input_quality(now),
            demand_target_kw=self._demand.target_kw,
            inputs=dict(self._inputs),
            input_qualities=self._input_qualities(now),
            commands=dict(self._commands),
            storage_fault=None if self._writer.fault is None else self._writer.fault.error,
        )

    # -- readings ------------------------------------------------------------------------------

    async def submit_reading(
        self, kw: float, observed_at: datetime | None = None, source: str = "rest"
    ) -> datetime:
        """One REST reading (a batch of one); returns its timestamp."""
        await self.submit_readings([Reading(kw, observed_at)], source)
        return observed_at or self._clock.now()

    async def submit_readings(self, readings: Sequence[ReadingLike], source: str) -> BatchResult:
        """Validate a whole batch first (all or nothing), then fold it in time order.

        Readings of the current minute are live: they are REST writes of the meter at
        REST_PRIORITY (refused while a higher BACnet priority commands it). Older ones are merged
        into history.
        """
        self._assert_loop()
        if not readings:
            raise InvalidReading("the batch is empty")
        if len(readings) > MAX_BATCH:
            raise InvalidReading(f"a batch holds at most {MAX_BATCH} readings")
        now = self._clock.now()
        checked: list[tuple[datetime, float]] = []
        for index, reading in enumerate(readings):
            if index and index % INGEST_SLICE == 0:
                await asyncio.sleep(0)  # a large batch must not hold the loop (nothing changed yet)
            try:
                checked.append(
                    (
                        self._validator.timestamp(reading.observed_at, now),
                        self._validator.kw(reading.kw),
                    )
                )
            except InvalidReading as exc:
                self.stats.count(False, source, len(readings))
                prefix = f"reading {index}: " if len(readings) > 1 else ""
                raise InvalidReading(f"{prefix}{exc}") from exc
        checked.sort(key=lambda item: item[0])
        live_from = self._live_from(now)
        history: dict[int, tuple[float, int]] = {}
        live: list[tuple[datetime, float]] = []
        for at, kw in checked:
            minute = minute_of(at)
            if minute < live_from:
                _add_history(history, minute, kw)
            else:
                live.append((at, kw))
        meter = self._commands[InputKey.METER_KW]
        if live:
            meter.check_rest_write("input-power-meter")
        self._writer.check_accepting()
        self.stats.count(True, source, len(checked))
        if live:
            await self._fold_live(live, history, now)
            await self._confirm_live()  # acknowledged means committed
        if history:
            means = await self._writer.confirm(
                self._writer.enqueue(
                    "merge history",
                    partial(self._storage.merge_history, history, source),
                    keep=recovery.history_keep(history, source),
                )
            )
            self._apply_history(means)
        return BatchResult(len(checked), len(live), len(history))

    async def _fold_live(
        self,
        live: list[tuple[datetime, float]],
        history: dict[int, tuple[float, int]],
        now: datetime,
    ) -> None:
        """Fold a batch's live readings into the grid in slices that yield, then publish once.

        A reading whose minute was closed meanwhile (the clock or another write moved on while
        this batch yielded) is merged as history instead, as it would have been had it come late.
        """
        was_stale = self._snapshot.input_quality != Quality.OK
        for index, (at, kw) in enumerate(live):
            if index and index % INGEST_SLICE == 0:
                await asyncio.sleep(0)
            minute = minute_of(at)
            live_from = self._grid.live_from_minute
            if live_from is not None and minute < live_from:
                _add_history(history, minute, kw)
                continue
            self._store_completed(self._grid.add(kw, at.timestamp()))
        meter = self._commands[InputKey.METER_KW]
        self._commands[InputKey.METER_KW] = meter.command(live[-1][1], REST_PRIORITY)
        self._publish(
            dataclasses.replace(
                self._with_inputs(now),
                input_observed_at=live[-1][0],
                input_quality=self._input_quality(now),
            )
        )
        if was_stale:
            self._wake.set()

    def _live_from(self, now: datetime) -> int:
        """The first minute a reading may fall in to be live; older readings are history.

        Live means the current or the previous minute (a BAS may deliver a few seconds late) and
        not before the grid's open minute.
        """
        earliest = minute_of(now) - 1
        grid_from = self._grid.live_from_minute
        return earliest if grid_from is None else max(earliest, grid_from)

    def _accept_live(self, kw: float, at: datetime, now: datetime) -> None:
        was_stale = self._snapshot.input_quality != Quality.OK
        completed = self._grid.add(kw, at.timestamp())
        self._store_completed(completed)
        self._publish(
            dataclasses.replace(
                self._with_inputs(now), input_observed_at=at, input_quality=self._input_quality(now)
            )
        )
        if was_stale:
            # The first fresh write after a gap clears the outputs' unreliable state now.
            self._wake.set()

    def _apply_history(self, means: dict[int, float]) -> None:
        for minute, kw in means.items():
            self._series.set(minute, kw)

    # -- optional inputs -----------------------------------------------------------------------

    def _optional_inputs(self) -> OptionalInputs:
        return OptionalInputs(
            **{
                name: DemandReading(value, at)
                for name, (value, at) in self._inputs.items()
                if name in INPUT_RANGES
            }
        )

    def _input_qualities(self, now: datetime) -> dict[str, Quality]:
        qualities = {}
        for name, (value, at) in self._inputs.items():
            fresh = value_if_fresh(value, at, now, self._settings.stale_after_s) is not None
            qualities[name] = Quality.OK if fresh else Quality.STALE_INPUT
        return qualities

    async def demand_intervals(
        self, start: datetime | None, end: datetime | None, limit: int
    ) -> list[DemandIntervalRecord]:
        """Closed demand intervals in [start, end), oldest first."""
        start_minute, end_minute = _minute_range(start, end)
        return await asyncio.to_thread(
            self._storage.list_intervals, start_minute, end_minute, limit
        )

    # -- queries -------------------------------------------------------------------------------

    async def readings(
        self, start: datetime | None, end: datetime | None, limit: int
    ) -> ReadingsPage:
        """Stored minutes in [start, end), oldest first, with the start of the next page."""
        if limit < 1:
            raise InvalidRequest("limit must be at least 1")
        start_minute, end_minute = _minute_range(start, end)
        rows = await asyncio.to_thread(
            self._storage.list_minutes, start_minute, end_minute, limit + 1
        )
        next_start = rows[limit].observed_at if len(rows) > limit else None
        return ReadingsPage(rows[:limit], next_start)

    async def model_runs(self, limit: int = 50) -> list[ModelRunRecord]:
        """Training runs, newest first."""
        return await asyncio.to_thread(self._storage.model_runs, limit)

    async def forecast_history(
        self, start: datetime | None, end: datetime | None, limit: int
    ) -> list[LoggedForecast]:
        """Logged 60-minute-ahead forecasts with target minutes in [start, end), oldest first
        (live and replayed)."""
        if limit < 1:
            raise InvalidRequest("limit must be at least 1")
        start_minute, end_minute = _minute_range(start, end)
        return await asyncio.to_thread(
            self._storage.forecast_log_between, start_minute, end_minute, limit
        )

    async def ready(self) -> bool:
        """True when the database answers and takes writes."""
        if self._writer.fault is not None:
            return False
        return await asyncio.to_thread(self._storage.ping)

    def snapshot_age_s(self) -> float | None:
        """Seconds since the outputs were last computed, None before the first computation."""
        if self._snapshot.computed_at is None:
            return None
        return (self._clock.now() - self._snapshot.computed_at).total_seconds()

    # -- the periodic computation --------------------------------------------------------------

    async def tick(self) -> Snapshot:
        """Close finished minutes and recompute every output into a new snapshot."""
        now = self._clock.now()
        self._store_completed(self._grid.close_until(now.timestamp()))
        snapshot = self._compute(now)
        self._publish(snapshot)
        self._persist_state()
        return snapshot

    def _compute(self, now: datetime) -> Snapshot:
        computed = self._computer.compute(
            self._snapshot,
            now,
            input_quality=self._input_quality(now),
            forecaster=self._forecaster,
            demand=self._demand,
            inputs=self._optional_inputs(),
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
        self._store_intervals(computed.closed_intervals)
        return dataclasses.replace(
            computed.snapshot,
            inputs=dict(self._inputs),
            input_qualities=self._input_qualities(now),
        )

    def use_forecaster(self, forecaster: Forecaster, run: ModelRunRecord) -> None:
        """Serve ``forecaster``, trained by ``run``, from the next computation on."""
        if forecaster.history_minutes + HORIZON_MINUTES > self._series.capacity_minutes:
            raise ValueError(
                f"{forecaster.name} needs {forecaster.history_minutes} minutes of history; "
                f"the cache holds {self._series.capacity_minutes}"
            )
        self._forecaster = forecaster
        self._computer.reset_bands()
        self.request_replay()
        self._snapshot = dataclasses.replace(
            self._snapshot,
            model=ModelStatus.serving(forecaster.name, self._snapshot.model, run),
        )
        self._wake.set()

    def note_training(self, training_minutes: float, finished_at: datetime | None) -> None:
        """Record the wall time of the last finished training run (model-training-time)."""
        if self._snapshot.model.training_minutes == training_minutes:
            return
        self._publish(
            dataclasses.replace(
                self._snapshot,
                model=dataclasses.replace(
                    self._snapshot.model, training_minutes=training_minutes, trained_at=finished_at
                ),
            )
        )

    def refresh_input(self, now: datetime) -> None:
        """Re-check the input's staleness now (``run`` calls it between ticks); publish a change."""
        quality = self._input_quality(now)
        if quality == self._snapshot.input_quality:
            return
        log.warning(
            "meter input is %s (limit %.0f s without a write)",
            quality,
            self._settings.stale_after_s,
        )
        self._publish(self._compute(now))

    def _input_quality(self, now: datetime) -> Quality:
        if self._grid.last_write_s is None:
            return Quality.NO_DATA
        if self._grid.is_stale(now.timestamp()):
            return Quality.STALE_INPUT
        return Quality.OK

    def _store_completed(self, completed: list[CompletedMinute]) -> None:
        if not completed:
            return
        outdoor = self._input_in_force(InputKey.OUTDOOR_AIR_TEMP)
        own = self._dispatched_in_force()
        closed: list[ClosedInterval] = []
        for item in completed:
            self._series.set(item.minute, item.kw)
            if outdoor is not None:
                self._outdoor.set(item.minute, outdoor)
            if own is not None:
                self._dispatched.set(item.minute, own)
            # The forecasts are of the base load: so is what they are scored against.
            self._errors.observed(item.minute, item.kw - (own or 0.0))
            self._computer.observed(item.minute, item.kw - (own or 0.0))
            closed.extend(self._demand.observe_minute(item.minute, item.kw))
        self._live.add_closed(completed, outdoor, own)
        self._store_intervals(closed)

    def _open_minute_now(self) -> tuple[CompletedMinute | None, float | None, float | None]:
        """The open minute's running mean, with the outdoor air and dispatched kW in force."""
        return (
            self._grid.open_partial(),
            self._input_in_force(InputKey.OUTDOOR_AIR_TEMP),
            self._dispatched_in_force(),
        )

    async def _confirm_live(self) -> None:
        """Wait until the live readings folded in so far are committed (StorageUnavailable if
        the database cannot confirm it: the reading is then not acknowledged)."""
        await self._writer.confirm(self._live.request())

    def _input_in_force(self, key: InputKey) -> float | None:
        """An optional input's value written within --stale-after-s, else None."""
        item = self._inputs.get(key)
        if item is None:
            return None
        value, at = item
        return value_if_fresh(value, at, self._clock.now(), self._settings.stale_after_s)

    def _dispatched_in_force(self) -> float | None:
        """kW of the battery and EV charging in force now (+ drawn from the grid), None if neither.

        The measured inputs while fresh; without a battery measurement, the setpoint the plan
        gives the BAS (what the inverter is told to do; the plan keeps it within the SOC limits).
        """
        dispatch = self._snapshot.dispatch
        battery = battery_power_in_force(
            self._input_in_force(InputKey.BATTERY_POWER_KW),
            dispatch.setpoint_kw if dispatch is not None else None,
        )
        ev = self._input_in_force(InputKey.EV_CHARGING_POWER_KW)
        if battery is None and ev is None:
            return None
        return (battery or 0.0) + (ev or 0.0)

    def _base_load(self, minute: int) -> float:
        """The meter less the dispatched kW of ``minute`` (NaN when the meter has none)."""
        own = self._dispatched.get(minute)
        return self._series.get(minute) - (0.0 if math.isnan(own) else own)

    def _store_intervals(self, closed: list[ClosedInterval]) -> None:
        if closed:
            self._writer.enqueue(
                "demand intervals", partial(self._storage.upsert_intervals, closed)
            )

    def _assert_loop(self) -> None:
        """Commands and publishing run on the event loop's thread, never in a worker thread."""
        if self._loop_thread is not None and threading.get_ident() != self._loop_thread:
            raise RuntimeError("DsmCore used off the event loop thread")

    def _storage_fault_changed(self, fault: WriterFault | None) -> None:
        if fault is None:
            log.info("storage fault cleared")
        self._publish(self._with_inputs(self._clock.now()))

    def _publish(self, snapshot: Snapshot) -> None:
        self._assert_loop()
        self._snapshot = snapshot
        for listener in self._listeners:
            try:
                listener(snapshot)
            except Exception:  # a faulty face must not stop the core
                log.exception("snapshot listener failed")

    def _persist_state(self) -> None:
        snapshot_state = self._snapshot.to_state()
        classifier_state = self._classifier.to_state()
        demand_state = self._demand.to_state()
        commands_state = {key: state.to_state() for key, state in self._commands.items()}
        horizon = minute_of(self._clock.now()) - LIVE_RMSE_WINDOW_MINUTES - HORIZON_MINUTES

        def write() -> None:
            self._storage.set_state(STATE_SNAPSHOT, snapshot_state)
            self._storage.set_state(STATE_CLASSIFIER, classifier_state)
            self._storage.set_state(STATE_DEMAND, demand_state)
            self._storage.set_state(STATE_COMMANDS, commands_state)
            self._storage.prune_forecasts(horizon)

        self._writer.enqueue("service state", write)


def _add_history(history: dict[int, tuple[float, int]], minute: int, kw: float) -> None:
    """Add one reading to a minute's (sum kW, count) of history to merge."""
    total, count = history.get(minute, (0.0, 0))
    history[minute] = (total + kw, count + 1)


def _minute_range(start: datetime | None, end: datetime | None) -> tuple[int | None, int | None]:
    """Minute bounds of a query's [start, end): both need an offset, end after start."""
    for name, value in (("start", start), ("end", end)):
        if value is not None and value.tzinfo is None:
            raise InvalidReading(f"{name} must include a time-zone offset (e.g. Z)")
    if start is not None and end is not None and end <= start:
        raise InvalidRequest("end must be after start")
    start_minute = math.ceil(start.timestamp() / SECONDS_PER_MINUTE) if start else None
    end_minute = math.ceil(end.timestamp() / SECONDS_PER_MINUTE) if end else None
    return start_minute, end_minute

"""DsmCore: the service both faces call. One instance per process, driven by one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from core.accuracy import LiveErrorTracker
from core.clock import Clock
from core.config import Settings
from core.demand import ClosedInterval, DemandConfig, DemandTracker, OptionalInputs, WindowMode
from core.demand import Reading as DemandReading
from core.errors import InvalidReading, InvalidRequest
from core.forecast.base import HORIZON_MINUTES, Forecast, Forecaster, MinuteHistory
from core.forecast.baseline import SeasonalMeanForecaster
from core.readings import CompletedMinute, ReadingGrid
from core.series import MinuteSeries
from core.signals import (
    RATE_WINDOW_MINUTES,
    LoadClassifier,
    rate_of_change_1min,
    rate_of_change_15min,
)
from core.snapshot import ModelStatus, Quality, Snapshot
from core.storage.models import DemandInterval, ModelRun
from core.storage.repository import Storage, StoredMinute
from core.timegrid import (
    MINUTES_PER_DAY,
    MINUTES_PER_WEEK,
    SECONDS_PER_MINUTE,
    minute_of,
    minute_start,
)

log = logging.getLogger(__name__)

SnapshotListener = Callable[[Snapshot], None]

# How far in the future a timestamp may lie (clock skew between the BAS and this box).
MAX_FUTURE_SKEW_S = 60.0
# Live RMSE of the served forecaster is taken over this trailing window of matched forecasts.
LIVE_RMSE_WINDOW_MINUTES = MINUTES_PER_DAY
MAX_BATCH = 100_000
CACHE_MIN_WEEKS = 5
STATE_SNAPSHOT = "snapshot"
STATE_CLASSIFIER = "load_classifier"
STATE_DEMAND = "demand_tracker"
# Plausible ranges of the optional BAS inputs, besides the meter's own range.
INPUT_RANGES: dict[str, tuple[str, float | None, float | None]] = {
    "pv_power_kw": ("kW", 0.0, None),
    "battery_soc_pct": ("%", 0.0, 100.0),
    "battery_power_kw": ("kW", None, None),
    "ev_charging_power_kw": ("kW", 0.0, None),
}


def demand_config(settings: Settings) -> DemandConfig:
    """The demand domain's configuration from the service settings."""
    return DemandConfig(
        timezone=settings.tz,
        interval_minutes=settings.demand_interval_minutes,
        window=WindowMode(settings.demand_window),
        billing_cycle_day=settings.billing_cycle_day,
        target_kw=settings.demand_target_kw,
        ratchet_to_period_peak=settings.demand_ratchet,
        deadband_kw=settings.demand_deadband_kw,
        min_on_minutes=settings.demand_min_on_minutes,
        min_off_minutes=settings.demand_min_off_minutes,
        meter_max_age_minutes=max(1, math.ceil(settings.stale_after_s / SECONDS_PER_MINUTE)),
        input_max_age_s=settings.stale_after_s,
        chiller_rated_kw=settings.chiller_rated_kw,
        chiller_min_pct=settings.chiller_min_pct,
        has_battery=settings.has_battery,
        battery_reserve_pct=settings.battery_reserve_pct,
        battery_charge_kw=settings.battery_charge_kw,
        has_ev=settings.has_ev,
        ev_charge_kw=settings.ev_charge_kw,
    )


@dataclass(frozen=True, slots=True)
class Reading:
    """One meter reading as submitted by a face; ``observed_at`` None means now."""

    kw: float
    observed_at: datetime | None = None


@dataclass(slots=True)
class ReadingStats:
    """Counters of readings accepted and refused, by source (for metrics)."""

    accepted: dict[str, int] = dataclasses.field(default_factory=dict)
    rejected: dict[str, int] = dataclasses.field(default_factory=dict)

    def count(self, accepted: bool, source: str, n: int = 1) -> None:
        """Add ``n`` to one counter."""
        table = self.accepted if accepted else self.rejected
        table[source] = table.get(source, 0) + n


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a batch of readings did."""

    accepted: int
    live: int
    historical_minutes: int


@dataclass(frozen=True, slots=True)
class ReadingsPage:
    """A page of stored minutes and where the next page starts."""

    items: list[StoredMinute]
    next_start: datetime | None


class DsmCore:
    """Reading cache, signals, forecast and persistence behind one snapshot."""

    def __init__(
        self, settings: Settings, storage: Storage, clock: Clock, forecaster: Forecaster
    ) -> None:
        self._settings = settings
        self._storage = storage
        self._clock = clock
        self._forecaster = forecaster
        self._tz = settings.tz
        self._window_minutes = max(1, int(settings.percentile_window_days * MINUTES_PER_DAY))
        self._baseline = SeasonalMeanForecaster(weeks=2)
        # Room for any forecaster a training run may produce (lags up to CACHE_MIN_WEEKS weeks).
        capacity = (
            max(
                self._window_minutes, forecaster.history_minutes, CACHE_MIN_WEEKS * MINUTES_PER_WEEK
            )
            + HORIZON_MINUTES
        )
        self._series = MinuteSeries(capacity)
        self._grid = ReadingGrid(settings.stale_after_s)
        self._classifier = LoadClassifier(
            settings.high_percentile,
            settings.low_percentile,
            settings.flag_min_dwell_s,
            settings.flag_min_history_minutes,
        )
        self._errors = LiveErrorTracker(LIVE_RMSE_WINDOW_MINUTES)
        self._demand_config = demand_config(settings)
        self._demand = DemandTracker(self._demand_config)
        self._inputs: dict[str, tuple[float, datetime]] = {}
        self._snapshot = Snapshot(model=ModelStatus(forecaster=forecaster.name))
        self._listeners: list[SnapshotListener] = []
        self._writes: asyncio.Queue[Callable[[], None]] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
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

    def subscribe(self, listener: SnapshotListener) -> None:
        """Call ``listener`` with every new snapshot (on the event loop)."""
        self._listeners.append(listener)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore cache, grid and last snapshot from the database; start the writer."""
        self._writes = asyncio.Queue()
        self._writer_task = asyncio.create_task(self._writer(), name="open-dsm-db-writer")
        now = self._clock.now()
        await asyncio.to_thread(self._restore, now)

    def _restore(self, now: datetime) -> None:
        now_minute = minute_of(now)
        minutes, values = self._storage.load_series(
            now_minute - self._series.capacity_minutes, now_minute
        )
        self._series.set_many(minutes, values)
        latest = self._storage.latest_minute()
        if latest is not None:
            self._grid.restore(latest.minute, latest.kw, latest.sample_count, now.timestamp())
        state = self._storage.get_state(STATE_CLASSIFIER)
        if state:
            self._classifier.restore(state)
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
                model = ModelStatus(
                    forecaster=self._forecaster.name,
                    live_rmse_kw=restored.model.live_rmse_kw,
                    live_rmse_samples=restored.model.live_rmse_samples,
                    training_minutes=restored.model.training_minutes,
                    trained_at=restored.model.trained_at,
                )
                self._snapshot = dataclasses.replace(
                    restored, input_quality=self._input_quality(now), model=model
                )
        self._snapshot = dataclasses.replace(
            self._snapshot, demand_target_kw=self._demand.target_kw
        )
        for target, kw in self._storage.forecasts_since(now_minute - LIVE_RMSE_WINDOW_MINUTES):
            self._errors.predicted(target, kw)
            observed = self._series.get(target)
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
        while True:
            now = self._clock.now().timestamp()
            next_tick = (math.floor(now / interval) + 1) * interval + 0.05
            deadline = next_tick
            stale_at = self._grid.stale_deadline_s()
            if stale_at is not None and now < stale_at < deadline:
                deadline = stale_at + 0.01
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, deadline - now))
            if self._clock.now().timestamp() >= next_tick or self._wake.is_set():
                await self.tick()
            else:
                self._refresh_input(self._clock.now())

    async def stop(self) -> None:
        """Flush the open minute's partial mean and drain pending writes."""
        if self._background:  # late readings being merged into history
            await asyncio.gather(*self._background, return_exceptions=True)
        partial = self._grid.open_partial()
        if partial is not None:
            completed = [partial]
            self._enqueue(lambda: self._storage.upsert_minutes(completed, "live"))
        self._persist_state()
        if self._writes is not None and self._writer_task is not None:
            await self._writes.join()
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task

    # -- readings ------------------------------------------------------------------------------

    def validate_kw(self, kw: float, source: str | None = None) -> float:
        """Return ``kw`` as a float if finite and plausible, else raise InvalidReading.

        With ``source`` given, a refusal is counted against it.
        """
        try:
            return self._check_kw(kw)
        except InvalidReading:
            if source is not None:
                self.stats.count(False, source)
            raise

    @staticmethod
    def _check_number(value: float, name: str) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            raise InvalidReading(f"{name} must be a number, got {value!r}") from exc
        if not math.isfinite(number):
            raise InvalidReading(f"{name} must be a finite number, got {number}")
        return number

    def _check_kw(self, kw: float) -> float:
        value = self._check_number(kw, "kw")
        low, high = self._settings.min_kw, self._settings.max_kw
        if not low <= value <= high:
            raise InvalidReading(
                f"kw {value:g} is outside the plausible range {low:g}..{high:g} kW"
            )
        return value

    def _validate_time(self, observed_at: datetime | None, now: datetime) -> datetime:
        if observed_at is None:
            return now
        if observed_at.tzinfo is None:
            raise InvalidReading("observed_at must include a time-zone offset (e.g. Z or +00:00)")
        if (observed_at - now).total_seconds() > MAX_FUTURE_SKEW_S:
            raise InvalidReading(
                f"observed_at {observed_at.isoformat()} is in the future (now {now.isoformat()})"
            )
        return observed_at

    def submit_reading(
        self, kw: float, observed_at: datetime | None = None, source: str = "bacnet"
    ) -> datetime:
        """Accept one live reading (BACnet write or REST); return its timestamp.

        Validation happens here, once, for both faces. A reading older than the open minute is
        merged into history instead (asynchronously).
        """
        now = self._clock.now()
        value = self.validate_kw(kw, source)
        try:
            at = self._validate_time(observed_at, now)
        except InvalidReading:
            self.stats.count(False, source)
            raise
        self.stats.count(True, source)
        if minute_of(at) < self._live_from(now):
            self._enqueue_history({minute_of(at): (value, 1)}, source)
            return at
        self._accept_live(value, at, now)
        return at

    async def submit_readings(self, readings: Sequence[Reading], source: str) -> BatchResult:
        """Validate a whole batch first (all or nothing), then fold it in time order."""
        if not readings:
            raise InvalidReading("the batch is empty")
        if len(readings) > MAX_BATCH:
            raise InvalidReading(f"a batch holds at most {MAX_BATCH} readings")
        now = self._clock.now()
        checked: list[tuple[datetime, float]] = []
        for index, reading in enumerate(readings):
            try:
                checked.append(
                    (self._validate_time(reading.observed_at, now), self._check_kw(reading.kw))
                )
            except InvalidReading as exc:
                self.stats.count(False, source, len(readings))
                prefix = f"reading {index}: " if len(readings) > 1 else ""
                raise InvalidReading(f"{prefix}{exc}") from exc
        self.stats.count(True, source, len(checked))
        checked.sort(key=lambda item: item[0])
        live_from = self._live_from(now)
        history: dict[int, tuple[float, int]] = {}
        live = 0
        for at, kw in checked:
            minute = minute_of(at)
            if minute < live_from:
                total, count = history.get(minute, (0.0, 0))
                history[minute] = (total + kw, count + 1)
            else:
                self._accept_live(kw, at, now)
                live += 1
        if history:
            means = await asyncio.to_thread(self._storage.merge_history, history, source)
            self._apply_history(means)
        return BatchResult(len(checked), live, len(history))

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
                self._snapshot,
                input_kw=kw,
                input_observed_at=at,
                input_quality=self._input_quality(now),
            )
        )
        if was_stale:
            # The first fresh write after a gap clears the outputs' unreliable state now.
            self._wake.set()

    def _apply_history(self, means: dict[int, float]) -> None:
        for minute, kw in means.items():
            self._series.set(minute, kw)

    def _enqueue_history(self, sums: dict[int, tuple[float, int]], source: str) -> None:
        async def merge() -> None:
            means = await asyncio.to_thread(self._storage.merge_history, sums, source)
            self._apply_history(means)

        # Keep a reference: the loop holds tasks only weakly, and a collected task never runs.
        task = asyncio.get_running_loop().create_task(merge())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- demand target and optional inputs -----------------------------------------------------

    def validate_target(self, kw: float) -> float:
        """A demand target must be a finite kW above zero and within the meter's range."""
        value = self._check_number(kw, "demand target")
        if not 0.0 < value <= self._settings.max_kw:
            raise InvalidReading(
                f"demand target {value:g} kW must be above 0 and at most {self._settings.max_kw:g}"
            )
        return value

    def set_demand_target(self, kw: float | None) -> None:
        """Set (or with None remove) the operator's demand target; persisted."""
        value = None if kw is None else self.validate_target(kw)
        self._demand.set_target(value)
        self._publish(dataclasses.replace(self._snapshot, demand_target_kw=value))
        self._persist_state()
        self._wake.set()

    def validate_input(self, name: str, value: float) -> float:
        """Check an optional input (pv_power_kw, battery_soc_pct, ...) against its range."""
        if name not in INPUT_RANGES:
            raise InvalidReading(f"unknown input {name!r}; known: {', '.join(INPUT_RANGES)}")
        number = self._check_number(value, name)
        unit, low, high = INPUT_RANGES[name]
        low = -self._settings.max_kw if low is None else low
        high = self._settings.max_kw if high is None else high
        if not low <= number <= high:
            raise InvalidReading(f"{name} {number:g} {unit} is outside {low:g}..{high:g} {unit}")
        return number

    def submit_input(self, name: str, value: float, observed_at: datetime | None = None) -> None:
        """Accept one optional input value (BACnet write or REST)."""
        number = self.validate_input(name, value)
        now = self._clock.now()
        at = self._validate_time(observed_at, now)
        self._inputs[name] = (number, at)
        self._publish(
            dataclasses.replace(
                self._snapshot,
                inputs=dict(self._inputs),
                input_qualities=self._input_qualities(now),
            )
        )

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
        for name, (_, at) in self._inputs.items():
            fresh = (now - at).total_seconds() <= self._settings.stale_after_s
            qualities[name] = Quality.OK if fresh else Quality.STALE_INPUT
        return qualities

    async def demand_intervals(
        self, start: datetime | None, end: datetime | None, limit: int
    ) -> list[DemandInterval]:
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

    async def model_runs(self, limit: int = 50) -> list[ModelRun]:
        """Training runs, newest first."""
        return await asyncio.to_thread(self._storage.model_runs, limit)

    async def ready(self) -> bool:
        """True when the database answers."""
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
        origin = minute_of(now) - 1
        input_quality = self._input_quality(now)
        fresh = input_quality == Quality.OK
        last_kw = self._series.get(origin)
        previous_kw = self._series.get(origin - 1)

        rate_1 = rate_of_change_1min(previous_kw, last_kw) if fresh else None
        rate_15 = (
            rate_of_change_15min(self._series.window(origin, RATE_WINDOW_MINUTES))
            if fresh
            else None
        )
        rate_quality = _quality(fresh, input_quality, rate_1 is not None)

        window = self._series.window(origin, self._window_minutes)
        flags = self._classifier.evaluate(last_kw if fresh else None, window, now)
        if not fresh:
            load_quality = input_quality
        elif not flags.evaluated:
            load_quality = Quality.INSUFFICIENT_HISTORY
        else:
            load_quality = Quality.OK

        history = MinuteHistory(
            origin - self._forecaster.history_minutes + 1,
            self._series.window(origin, self._forecaster.history_minutes),
        )
        forecast = self._run_forecaster(history, now)
        forecast_quality = _quality(fresh, input_quality, forecast is not None)
        if forecast is not None and fresh:
            target = forecast.origin_minute + HORIZON_MINUTES
            self._errors.predicted(target, forecast.one_hour_kw)
            self._enqueue(
                lambda: self._storage.log_forecast(
                    target, forecast.forecaster, forecast.one_hour_kw, now
                )
            )
        model = dataclasses.replace(
            self._snapshot.model,
            forecaster=self._forecaster.name,
            live_rmse_kw=self._errors.rmse_kw(),
            live_rmse_samples=self._errors.samples,
        )
        self._store_intervals(self._demand.close_due(now))
        demand = self._demand.evaluate(now, forecast, self._optional_inputs())
        return dataclasses.replace(
            self._snapshot,
            computed_at=now,
            input_quality=input_quality,
            last_minute_kw=None if math.isnan(last_kw) else last_kw,
            last_minute_at=minute_start(origin) if not math.isnan(last_kw) else None,
            rate_of_change_kw_per_min=rate_1,
            rate_of_change_15min_kw_per_min=rate_15,
            rate_quality=rate_quality,
            high_load=flags.high,
            low_load=flags.low,
            high_threshold_kw=flags.high_threshold_kw,
            low_threshold_kw=flags.low_threshold_kw,
            load_quality=load_quality,
            forecast=forecast,
            forecast_quality=forecast_quality,
            model=model,
            demand=demand,
            demand_target_kw=self._demand.target_kw,
            inputs=dict(self._inputs),
            input_qualities=self._input_qualities(now),
        )

    def _run_forecaster(self, history: MinuteHistory, now: datetime) -> Forecast | None:
        """The served forecaster's forecast; the baseline's if it fails (logged, never fatal)."""
        try:
            return self._forecaster.forecast(history, self._tz, now)
        except Exception:
            log.exception("forecaster %s failed; using the baseline", self._forecaster.name)
        baseline_history = MinuteHistory(
            history.end_minute - self._baseline.history_minutes + 1,
            self._series.window(history.end_minute, self._baseline.history_minutes),
        )
        return self._baseline.forecast(baseline_history, self._tz, now)

    def use_forecaster(self, forecaster: Forecaster, status: ModelStatus) -> None:
        """Serve ``forecaster`` from the next computation on (a newly accepted model)."""
        if forecaster.history_minutes + HORIZON_MINUTES > self._series.capacity_minutes:
            raise ValueError(
                f"{forecaster.name} needs {forecaster.history_minutes} minutes of history; "
                f"the cache holds {self._series.capacity_minutes}"
            )
        self._forecaster = forecaster
        self._snapshot = dataclasses.replace(
            self._snapshot,
            model=dataclasses.replace(
                status,
                live_rmse_kw=self._snapshot.model.live_rmse_kw,
                live_rmse_samples=self._snapshot.model.live_rmse_samples,
            ),
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

    def _refresh_input(self, now: datetime) -> None:
        """Staleness changed between ticks: mark the input and every derived output."""
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
        closed: list[ClosedInterval] = []
        for item in completed:
            self._series.set(item.minute, item.kw)
            self._errors.observed(item.minute, item.kw)
            closed.extend(self._demand.observe_minute(item.minute, item.kw))
        self._enqueue(lambda: self._storage.upsert_minutes(completed, "live"))
        self._store_intervals(closed)

    def _store_intervals(self, closed: list[ClosedInterval]) -> None:
        if closed:
            self._enqueue(lambda: self._storage.upsert_intervals(closed))

    def _publish(self, snapshot: Snapshot) -> None:
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
        horizon = minute_of(self._clock.now()) - LIVE_RMSE_WINDOW_MINUTES - HORIZON_MINUTES

        def write() -> None:
            self._storage.set_state(STATE_SNAPSHOT, snapshot_state)
            self._storage.set_state(STATE_CLASSIFIER, classifier_state)
            self._storage.set_state(STATE_DEMAND, demand_state)
            self._storage.prune_forecasts(horizon)

        self._enqueue(write)

    # -- the single database writer ------------------------------------------------------------

    def _enqueue(self, job: Callable[[], None]) -> None:
        if self._writes is None:
            job()  # not started (tests of pure paths): write synchronously
            return
        self._writes.put_nowait(job)

    async def _writer(self) -> None:
        """Run database writes one at a time, in order, off the event loop."""
        assert self._writes is not None
        while True:
            job = await self._writes.get()
            try:
                await asyncio.to_thread(job)
            except Exception:
                log.exception("database write failed")
            finally:
                self._writes.task_done()


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


def _quality(fresh: bool, input_quality: Quality, has_value: bool) -> Quality:
    if not fresh:
        return input_quality
    return Quality.OK if has_value else Quality.INSUFFICIENT_HISTORY

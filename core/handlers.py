"""One handler per command record (``core.ports``): validate once, apply, publish.

Every write from every face arrives here through ``DsmCore.command``: a BACnet write or
relinquish (``WriteInput``, ``RelinquishInput``), REST's input writes (``WriteInputs``), meter
readings from REST or an import (``SubmitReadings``), the trainer's results (``UseForecaster``,
``NoteTraining``), the site calendar's changes from REST and BACnet (``ReplaceCalendar``,
``SetCalendarEntries``, ``AddCalendarEntries``, ``RemoveCalendarEntries``). A value is
validated exactly once, here, and a refused meter value is counted under its source whichever
face sent it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any, Protocol

from core.calendar import SiteCalendar
from core.calendar_service import CalendarKeeper
from core.clock import Clock
from core.commands import REST_PRIORITY, InputKey, check_priority
from core.compute import SnapshotComputer
from core.errors import InvalidReading, InvalidRequest
from core.forecast.base import HORIZON_MINUTES
from core.history import ImportedHistory
from core.intake import BatchResult, ReadingStats
from core.minute_cache import MinuteCache, MinuteKeeper, meter_quality
from core.ports import (
    MAX_BATCH,
    AddCalendarEntries,
    Command,
    NoteTraining,
    RelinquishInput,
    RemoveCalendarEntries,
    ReplaceCalendar,
    SetCalendarEntries,
    SubmitReadings,
    UseForecaster,
    WriteInput,
    WriteInputs,
)
from core.readings import ReadingGrid
from core.snapshot import ModelStatus, Quality, Snapshot
from core.state import CoreState
from core.storage import recovery
from core.storage.repository import Storage
from core.timegrid import minute_of
from core.validation import InputValidator
from core.writer import DatabaseWriter

# A batch is validated and folded in slices of this many readings, yielding the loop between
# them (a slice takes a few ms: no request holds the loop past 50 ms).
INGEST_SLICE = 1000
# Inputs whose writes end up in the database: refused at the door while it cannot keep them.
PERSISTED_INPUTS = frozenset(
    {InputKey.METER_KW, InputKey.DEMAND_TARGET_KW, InputKey.OUTDOOR_AIR_TEMP}
)

Handler = Callable[[Any], Awaitable[Any]]


class Hub(Protocol):
    """What a handler asks of ``DsmCore``: publish, recompute soon, save the state."""

    def publish(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` the current one and hand it to every face."""
        ...

    def with_inputs(self, now: datetime) -> Snapshot:
        """The current snapshot with the input fields refreshed."""
        ...

    def wake(self) -> None:
        """Recompute at once rather than at the next interval."""
        ...

    def persist(self) -> None:
        """Queue the state for the database."""
        ...


class CommandHandlers:
    """The handlers of every command record, over the core's state and rooms."""

    def __init__(
        self,
        hub: Hub,
        *,
        state: CoreState,
        cache: MinuteCache,
        keeper: MinuteKeeper,
        grid: ReadingGrid,
        computer: SnapshotComputer,
        history: ImportedHistory,
        validator: InputValidator,
        stats: ReadingStats,
        storage: Storage,
        writer: DatabaseWriter,
        clock: Clock,
        calendar: CalendarKeeper,
    ) -> None:
        self._hub = hub
        self._state = state
        self._cache = cache
        self._keeper = keeper
        self._grid = grid
        self._computer = computer
        self._history = history
        self._validator = validator
        self._stats = stats
        self._storage = storage
        self._writer = writer
        self._clock = clock
        self._calendar = calendar

    def table(self) -> dict[type[Command[Any]], Handler]:
        """Each command record's one handler."""
        return {
            WriteInput: self.write_input,
            RelinquishInput: self.relinquish_input,
            WriteInputs: self.write_inputs,
            SubmitReadings: self.submit_readings,
            UseForecaster: self.use_forecaster,
            NoteTraining: self.note_training,
            ReplaceCalendar: self.replace_calendar,
            SetCalendarEntries: self.set_calendar_entries,
            AddCalendarEntries: self.add_calendar_entries,
            RemoveCalendarEntries: self.remove_calendar_entries,
        }

    # -- commandable inputs: BACnet writes and relinquishes, REST writes -----------------------

    async def write_input(self, cmd: WriteInput) -> None:
        """Write a value into the input's priority array; the winner is what the core uses."""
        await self._command_input(cmd.key, cmd.value, cmd.priority, cmd.source)

    async def relinquish_input(self, cmd: RelinquishInput) -> None:
        """Empty one slot of the input's priority array."""
        await self._command_input(cmd.key, None, cmd.priority, cmd.source)

    async def _command_input(
        self, key: str, value: float | None, priority: int, source: str
    ) -> None:
        commands = self._state.commands
        if key not in commands:
            raise InvalidRequest(f"unknown input {key!r}")
        check_priority(priority)
        number = None if value is None else self._validate_counted(key, value, source)
        if key in PERSISTED_INPUTS:
            self._writer.check_accepting()
        now = self._clock.now()
        commands[key] = commands[key].command(number, priority)
        self._apply_command(key, now, now, source)
        if key == InputKey.METER_KW and number is not None:
            await self._keeper.confirm_live()  # acknowledged means committed

    async def write_inputs(self, cmd: WriteInputs) -> None:
        """REST writes at REST_PRIORITY: all checked first, then applied.

        Refused (CommandConflict, HTTP 409) while a higher BACnet priority commands one of them.
        """
        commands = self._state.commands
        now = self._clock.now()
        at = self._validator.timestamp(cmd.observed_at, now)
        checked: dict[str, float | None] = {}
        for key, value in cmd.values.items():
            if key not in commands:
                raise InvalidReading(f"unknown input {key!r}")
            checked[key] = None if value is None else self._validate_counted(key, value, cmd.source)
            commands[key].check_rest_write(key)
        if any(key in PERSISTED_INPUTS for key in checked):
            self._writer.check_accepting()
        for key, number in checked.items():
            commands[key] = commands[key].command(number, REST_PRIORITY)
            self._apply_command(key, at, now, cmd.source)
        if checked.get(InputKey.METER_KW) is not None:
            await self._keeper.confirm_live()  # acknowledged means committed

    def _validate_counted(self, key: str, value: float, source: str) -> float:
        try:
            number = self._validator.command(key, value)
        except InvalidReading:
            if key == InputKey.METER_KW:
                self._stats.count(False, source)
            raise
        return number

    def _apply_command(self, key: str, at: datetime, now: datetime, source: str) -> None:
        """Make the core use ``key``'s present value and publish it."""
        present = self._state.commands[key].present_value
        if key == InputKey.METER_KW:
            if present is not None:
                self._stats.count(True, source)
                self._accept_live(present, at, now)
                return
        elif key == InputKey.DEMAND_TARGET_KW:
            self._state.demand.set_target(present)
            self._hub.persist()
            self._hub.wake()
        elif present is None:
            self._state.inputs.pop(key, None)
        else:
            self._state.inputs[key] = (present, at)
        self._hub.publish(self._hub.with_inputs(now))

    def _accept_live(self, kw: float, at: datetime, now: datetime) -> None:
        was_stale = self._state.snapshot.input_quality != Quality.OK
        self._keeper.close(self._grid.add(kw, at.timestamp()))
        self._hub.publish(
            dataclasses.replace(
                self._hub.with_inputs(now),
                input_observed_at=at,
                input_quality=meter_quality(self._grid, now),
            )
        )
        if was_stale:
            # The first fresh write after a gap clears the outputs' unreliable state now.
            self._hub.wake()

    # -- readings ------------------------------------------------------------------------------

    async def submit_readings(self, cmd: SubmitReadings) -> BatchResult:
        """Validate a whole batch first (all or nothing), then fold it in time order.

        Readings of the current minute are live: they are REST writes of the meter at
        REST_PRIORITY (refused while a higher BACnet priority commands it). Older ones are merged
        into history.
        """
        readings, source = cmd.readings, cmd.source
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
                self._stats.count(False, source, len(readings))
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
        if live:
            self._state.commands[InputKey.METER_KW].check_rest_write("input-power-meter")
        self._writer.check_accepting()
        self._stats.count(True, source, len(checked))
        if live:
            await self._fold_live(live, history, now)
            await self._keeper.confirm_live()  # acknowledged means committed
        if history:
            means = await self._writer.confirm(
                self._writer.enqueue(
                    "merge history",
                    partial(self._storage.merge_history, history, source),
                    keep=recovery.history_keep(history, source),
                )
            )
            self._cache.apply_history(means)
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
        was_stale = self._state.snapshot.input_quality != Quality.OK
        for index, (at, kw) in enumerate(live):
            if index and index % INGEST_SLICE == 0:
                await asyncio.sleep(0)
            minute = minute_of(at)
            live_from = self._grid.live_from_minute
            if live_from is not None and minute < live_from:
                _add_history(history, minute, kw)
                continue
            self._keeper.close(self._grid.add(kw, at.timestamp()))
        commands = self._state.commands
        commands[InputKey.METER_KW] = commands[InputKey.METER_KW].command(
            live[-1][1], REST_PRIORITY
        )
        self._hub.publish(
            dataclasses.replace(
                self._hub.with_inputs(now),
                input_observed_at=live[-1][0],
                input_quality=meter_quality(self._grid, now),
            )
        )
        if was_stale:
            self._hub.wake()

    def _live_from(self, now: datetime) -> int:
        """The first minute a reading may fall in to be live; older readings are history.

        Live means the current or the previous minute (a BAS may deliver a few seconds late) and
        not before the grid's open minute.
        """
        earliest = minute_of(now) - 1
        grid_from = self._grid.live_from_minute
        return earliest if grid_from is None else max(earliest, grid_from)

    # -- the trainer's results -----------------------------------------------------------------

    async def use_forecaster(self, cmd: UseForecaster) -> None:
        """Serve the forecaster from the next computation on (ValueError if the cache is short)."""
        forecaster = cmd.forecaster
        capacity = self._cache.capacity_minutes
        if forecaster.history_minutes + HORIZON_MINUTES > capacity:
            raise ValueError(
                f"{forecaster.name} needs {forecaster.history_minutes} minutes of history; "
                f"the cache holds {capacity}"
            )
        self._state.forecaster = forecaster
        self._computer.reset_bands()
        self._history.request_replay()
        snapshot = self._state.snapshot
        self._state.snapshot = dataclasses.replace(
            snapshot, model=ModelStatus.serving(forecaster.name, snapshot.model, cmd.run)
        )
        self._hub.wake()

    async def note_training(self, cmd: NoteTraining) -> None:
        """Record the wall time of the last finished training run (model-training-time)."""
        snapshot = self._state.snapshot
        if snapshot.model.training_minutes == cmd.training_minutes:
            return
        model = dataclasses.replace(
            snapshot.model, training_minutes=cmd.training_minutes, trained_at=cmd.finished_at
        )
        self._hub.publish(dataclasses.replace(snapshot, model=model))

    # -- the site calendar: REST's PUT, BACnet's date-list writes ------------------------------
    # The keeper checks the writer, stores, puts the calendar in force and tells its listeners
    # (the computer, the BACnet mirror), under its own lock; CalendarError / StorageUnavailable
    # pass through unchanged.

    async def replace_calendar(self, cmd: ReplaceCalendar) -> SiteCalendar:
        """Store the whole calendar and put it in force."""
        return await self._calendar.replace(cmd.calendar, cmd.source)

    async def set_calendar_entries(self, cmd: SetCalendarEntries) -> SiteCalendar:
        """Replace one day type's entries."""
        return await self._calendar.set_entries_of(cmd.day_type, cmd.entries, cmd.source)

    async def add_calendar_entries(self, cmd: AddCalendarEntries) -> SiteCalendar:
        """Add one day type's entries not listed yet."""
        return await self._calendar.add_entries(cmd.day_type, cmd.entries, cmd.source)

    async def remove_calendar_entries(self, cmd: RemoveCalendarEntries) -> SiteCalendar:
        """Remove listed entries of one day type (CalendarError if one is not listed)."""
        return await self._calendar.remove_entries(cmd.day_type, cmd.entries, cmd.source)


def _add_history(history: dict[int, tuple[float, int]], minute: int, kw: float) -> None:
    """Add one reading to a minute's (sum kW, count) of history to merge."""
    total, count = history.get(minute, (0.0, 0))
    history[minute] = (total + kw, count + 1)

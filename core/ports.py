"""The two ways into the core: commands (async, one typed record each) and reads (typed records).

Every face holds these two ports and nothing else of the core. A change of state is one
``await port.command(record)``: the record names what is asked, the core finds the record's one
handler, validates once (counting a refused reading whichever face sent it), applies and
publishes. A read returns the immutable snapshot or a typed record, never an ORM row.

``Command[R]`` carries the type its handler returns: ``await port.command(SubmitReadings(...))``
is a ``BatchResult`` to the type checker, ``await port.command(WriteInput(...))`` is None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Generic, Protocol, TypeVar

from core.accuracy import BandAdapter
from core.calendar import CalendarEntry, DayType, SiteCalendar
from core.commands import DEFAULT_PRIORITY, CommandState
from core.config import Settings
from core.dispatch.assets import Battery
from core.dispatch.controller import DispatchController
from core.forecast.base import Forecaster
from core.intake import BatchResult, ReadingLike, ReadingsPage, ReadingStats
from core.month import MonthSummary
from core.records import DemandIntervalRecord, HeldMinute, LoggedForecast, ModelRunRecord
from core.snapshot import Snapshot
from core.writer import DatabaseWriter

R = TypeVar("R")

# The most readings one SubmitReadings may carry (REST states it in its schema).
MAX_BATCH = 100_000


class Command(Generic[R]):
    """A request to change the core's state; ``R`` is what its handler returns."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class WriteInput(Command[None]):
    """Write ``value`` into the commandable input ``key`` at ``priority`` (a BACnet write)."""

    key: str
    value: float
    priority: int = DEFAULT_PRIORITY
    source: str = "bacnet"


@dataclass(frozen=True, slots=True)
class RelinquishInput(Command[None]):
    """Empty ``key``'s priority-array slot ``priority`` (a BACnet write of NULL)."""

    key: str
    priority: int = DEFAULT_PRIORITY
    source: str = "bacnet"


@dataclass(frozen=True, slots=True)
class WriteInputs(Command[None]):
    """REST writes of several inputs at REST_PRIORITY, all checked before any applies.

    A None value relinquishes REST's slot; ``observed_at`` (None: now) stamps the values.
    """

    values: Mapping[str, float | None]
    observed_at: datetime | None = None
    source: str = "rest"


@dataclass(frozen=True, slots=True)
class SubmitReadings(Command[BatchResult]):
    """Meter readings (one or a batch): current-minute ones are live, older ones history."""

    readings: Sequence[ReadingLike]
    source: str = "rest"


@dataclass(frozen=True, slots=True)
class UseForecaster(Command[None]):
    """Serve ``forecaster``, trained by ``run``, from the next computation on."""

    forecaster: Forecaster
    run: ModelRunRecord


@dataclass(frozen=True, slots=True)
class NoteTraining(Command[None]):
    """Record the wall time of the last finished training run (model-training-time)."""

    training_minutes: float
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class ReplaceCalendar(Command[SiteCalendar]):
    """Store ``calendar`` as the whole site calendar and put it in force (a REST PUT)."""

    calendar: SiteCalendar
    source: str = "rest"


@dataclass(frozen=True, slots=True)
class SetCalendarEntries(Command[SiteCalendar]):
    """Replace the entries of ``day_type``, others kept (a BACnet date-list write)."""

    day_type: DayType
    entries: Sequence[CalendarEntry]
    source: str = "bacnet"


@dataclass(frozen=True, slots=True)
class AddCalendarEntries(Command[SiteCalendar]):
    """Add the entries of ``day_type`` not listed yet (a BACnet AddListElement)."""

    day_type: DayType
    entries: Sequence[CalendarEntry]
    source: str = "bacnet"


@dataclass(frozen=True, slots=True)
class RemoveCalendarEntries(Command[SiteCalendar]):
    """Remove entries of ``day_type``; all must be listed (a BACnet RemoveListElement)."""

    day_type: DayType
    entries: Sequence[CalendarEntry]
    source: str = "bacnet"


class CommandPort(Protocol):
    """How a face changes the core: one async call per typed command record."""

    async def command(self, cmd: Command[R]) -> R:
        """Validate, apply and publish ``cmd``; raise the core's own errors when refused."""
        ...


class CalendarView(Protocol):
    """The site calendar as a face reads it; it changes only by the calendar commands."""

    @property
    def calendar(self) -> SiteCalendar:
        """The calendar in force."""
        ...

    def today(self) -> date:
        """The site-local date now."""
        ...

    def day_type_today(self) -> DayType | None:
        """Today's day type, None for an ordinary day."""
        ...

    def entries_of(self, day_type: DayType) -> list[CalendarEntry]:
        """The entries of one day type, in calendar order."""
        ...

    def subscribe(self, listener: Callable[[SiteCalendar], None]) -> None:
        """Call ``listener`` with the calendar after each change (and once now)."""
        ...


class CoreReads(Protocol):
    """How a face reads the core: the immutable snapshot and typed records."""

    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot (immutable)."""
        ...

    @property
    def settings(self) -> Settings:
        """The settings the core runs with."""
        ...

    @property
    def stats(self) -> ReadingStats:
        """Readings accepted and refused, by source."""
        ...

    @property
    def writer(self) -> DatabaseWriter:
        """The database writer (its fault state feeds /readyz and the metrics)."""
        ...

    @property
    def calendar(self) -> CalendarView:
        """The site calendar in force (read-only: changes are calendar commands)."""
        ...

    @property
    def dispatch_controller(self) -> DispatchController | None:
        """The dispatch controller, None without a battery."""
        ...

    @property
    def dispatch_battery(self) -> Battery | None:
        """The battery the dispatch planner runs, None without one."""
        ...

    @property
    def latest_minute(self) -> int | None:
        """The newest minute with a meter value in the cache, None if none."""
        ...

    @property
    def live_errors_kw(self) -> tuple[float, ...]:
        """The 60-minute-ahead errors (actual - forecast) in the live RMSE window."""
        ...

    def now(self) -> datetime:
        """The core's clock now."""
        ...

    def command_state(self, key: str) -> CommandState:
        """The priority array of the commandable input ``key``."""
        ...

    def held_minute(self, minute: int) -> HeldMinute:
        """The meter, base load and outdoor air held for ``minute``."""
        ...

    def band(self, forecaster: str, day_ahead: bool = False) -> BandAdapter:
        """The served band adapter of one forecaster's output."""
        ...

    def snapshot_age_s(self) -> float | None:
        """Seconds since the outputs were last computed, None before the first computation."""
        ...

    async def month(self) -> MonthSummary:
        """The billing period so far."""
        ...

    async def ready(self) -> bool:
        """True when the database answers and takes writes."""
        ...

    async def readings(
        self, start: datetime | None, end: datetime | None, limit: int
    ) -> ReadingsPage:
        """Stored minutes in [start, end), oldest first, paged."""
        ...

    async def demand_intervals(
        self, start: datetime | None, end: datetime | None, limit: int
    ) -> list[DemandIntervalRecord]:
        """Closed demand intervals in [start, end), oldest first."""
        ...

    async def forecast_history(
        self, start: datetime | None, end: datetime | None, limit: int
    ) -> list[LoggedForecast]:
        """Logged 60-minute-ahead forecasts with targets in [start, end), oldest first."""
        ...

    async def model_runs(self, limit: int = 50) -> list[ModelRunRecord]:
        """Training runs, newest first."""
        ...


class CorePorts(CommandPort, Protocol):
    """Both ports, as the composition root hands them to a face."""

    @property
    def reads(self) -> CoreReads:
        """The read side."""
        ...


@dataclass(frozen=True, slots=True)
class InputWriter:
    """What one writable BACnet point holds: the command port and the input it commands."""

    port: CommandPort
    key: str
    source: str = "bacnet"

    async def command(self, value: float | None, priority: int) -> None:
        """Send the write (None: the relinquish) of ``value`` at ``priority`` to the core."""
        if value is None:
            await self.port.command(RelinquishInput(self.key, priority, self.source))
        else:
            await self.port.command(WriteInput(self.key, value, priority, self.source))


@dataclass(frozen=True, slots=True)
class CalendarWriter:
    """What one BACnet Calendar object holds: the command port and the day type it lists."""

    port: CommandPort
    day_type: DayType
    source: str = "bacnet"

    async def set_entries(self, entries: Sequence[CalendarEntry]) -> SiteCalendar:
        """Send the date-list write (this day type's entries replaced) to the core."""
        return await self.port.command(SetCalendarEntries(self.day_type, entries, self.source))

    async def add_entries(self, entries: Sequence[CalendarEntry]) -> SiteCalendar:
        """Send an AddListElement to the core."""
        return await self.port.command(AddCalendarEntries(self.day_type, entries, self.source))

    async def remove_entries(self, entries: Sequence[CalendarEntry]) -> SiteCalendar:
        """Send a RemoveListElement to the core."""
        return await self.port.command(RemoveCalendarEntries(self.day_type, entries, self.source))

"""The site calendar in force: one truth that REST, BACnet, the forecasters and the planner read.

Every change (a REST PUT, a BACnet write to a Calendar object's date-list, an AddListElement or
RemoveListElement) is checked whole first, then committed through the single database writer,
and only then in force: a refused change changes nothing, an acknowledged one is stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import date
from zoneinfo import ZoneInfo

from core.calendar import CalendarEntry, CalendarError, DayType, SiteCalendar
from core.clock import Clock
from core.storage.repository import Storage
from core.writer import DatabaseWriter

log = logging.getLogger(__name__)

CalendarListener = Callable[[SiteCalendar], None]


class CalendarKeeper:
    """Holds the site calendar, stores every change and tells its listeners."""

    def __init__(
        self, storage: Storage, writer: DatabaseWriter, clock: Clock, tz: ZoneInfo
    ) -> None:
        self._storage = storage
        self._writer = writer
        self._clock = clock
        self._tz = tz
        self._calendar = SiteCalendar()
        self._listeners: list[CalendarListener] = []
        self._lock = asyncio.Lock()

    @property
    def calendar(self) -> SiteCalendar:
        """The calendar in force."""
        return self._calendar

    def subscribe(self, listener: CalendarListener) -> None:
        """Call ``listener`` with the calendar after each change (and once now)."""
        self._listeners.append(listener)
        listener(self._calendar)

    def today(self) -> date:
        """The site-local date now (by the injected clock)."""
        return self._clock.now().astimezone(self._tz).date()

    def day_type_today(self) -> DayType | None:
        """Today's day type, None for an ordinary day."""
        return self._calendar.day_type(self.today())

    async def load(self) -> None:
        """Read the stored calendar (at start-up; the read runs off the loop)."""
        try:
            self._set(await asyncio.to_thread(self._storage.load_calendar))
        except CalendarError as exc:  # edited by hand into something invalid: run without it
            log.error("the stored site calendar is invalid and is not used: %s", exc)

    async def reload(self) -> bool:
        """Re-read the stored calendar (``open-dsm import --calendar`` wrote it behind the
        service's back); True when it differed."""
        async with self._lock:
            stored = await asyncio.to_thread(self._storage.load_calendar)
            if stored.to_dict() == self._calendar.to_dict():
                return False
            self._set(stored)
            log.info("site calendar picked up from the database: %d entries", len(stored.entries))
            return True

    async def replace(self, calendar: SiteCalendar, source: str) -> SiteCalendar:
        """Store ``calendar`` and put it in force (StorageUnavailable while the writer is
        faulted: nothing changes)."""
        async with self._lock:
            return await self._commit(calendar, source)

    def entries_of(self, day_type: DayType) -> list[CalendarEntry]:
        """The entries of one day type, in calendar order."""
        return [e for e in self._calendar.entries if e.day_type == day_type]

    async def set_entries_of(
        self, day_type: DayType, entries: Sequence[CalendarEntry], source: str
    ) -> SiteCalendar:
        """Replace the entries of ``day_type`` (a BACnet date-list write); others stay."""
        async with self._lock:
            return await self._commit(self._with_type(day_type, list(entries)), source)

    async def add_entries(
        self, day_type: DayType, entries: Sequence[CalendarEntry], source: str
    ) -> SiteCalendar:
        """Add entries of ``day_type`` that are not there yet (AddListElement)."""
        async with self._lock:
            own = self.entries_of(day_type)
            keys = {_key(e) for e in own}
            for entry in entries:
                if _key(entry) not in keys:
                    own.append(entry)
                    keys.add(_key(entry))
            return await self._commit(self._with_type(day_type, own), source)

    async def remove_entries(
        self, day_type: DayType, entries: Sequence[CalendarEntry], source: str
    ) -> SiteCalendar:
        """Remove entries of ``day_type`` (RemoveListElement); CalendarError naming the first
        one that is not listed, and then nothing is removed."""
        async with self._lock:
            own = self.entries_of(day_type)
            remove = {_key(e) for e in entries}
            present = {_key(e) for e in own}
            for entry in entries:
                if _key(entry) not in present:
                    raise CalendarError(f"not in the {day_type.name} list: {entry.to_dict()}")
            kept = [e for e in own if _key(e) not in remove]
            return await self._commit(self._with_type(day_type, kept), source)

    def _with_type(self, day_type: DayType, own: list[CalendarEntry]) -> SiteCalendar:
        """The calendar with ``own`` as the entries of ``day_type``, others kept in order."""
        others = [e for e in self._calendar.entries if e.day_type != day_type]
        return self._calendar.with_entries([*others, *own])

    async def _commit(self, calendar: SiteCalendar, source: str) -> SiteCalendar:
        self._writer.check_accepting()
        await self._writer.submit("calendar", lambda: self._storage.save_calendar(calendar))
        self._set(calendar)
        log.info("site calendar changed by %s: %d entries", source, len(calendar.entries))
        return calendar

    def _set(self, calendar: SiteCalendar) -> None:
        self._calendar = calendar
        for listener in self._listeners:
            listener(calendar)


def _key(entry: CalendarEntry) -> tuple[object, str]:
    """What identifies an entry in a list (its dates and day type; the note does not)."""
    return (entry.dates, entry.day_type.name)

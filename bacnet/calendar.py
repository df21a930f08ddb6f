"""BACnet Calendar objects: one per day type, their date-list the site calendar's entries of that
type, their present-value true on a listed day.

A BAS integrator keeps holidays where a BAS keeps them: ``holidays-closed`` (calendar,1) lists
the days the site is closed; ``runs-like-monday`` .. ``runs-like-sunday`` (calendar,2..8) list
the days that run on another weekday's schedule. The date-list is writable (WriteProperty) and
changes by AddListElement / RemoveListElement, each a command to the core (``core.ports``'s
calendar records, sent by the object's ``CalendarWriter``); every change is checked whole, stored
(the one calendar REST shows too) and only then in force; a bad entry changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bacpypes3.basetypes import CalendarEntry as BacnetCalendarEntry
from bacpypes3.basetypes import DateRange, ErrorType, WeekNDay
from bacpypes3.constructeddata import ListOf
from bacpypes3.errors import ExecutionError
from bacpypes3.object import CalendarObject
from bacpypes3.primitivedata import Boolean, Date

from bacnet.calendar_table import CALENDARS, CalendarSpec
from bacnet.device import _PropertyList
from core.calendar import (
    CalendarEntry,
    CalendarError,
    DatePattern,
    DateSpan,
    DayType,
    SiteCalendar,
    parse_entry,
)
from core.calendar import (
    WeekNDay as CoreWeekNDay,
)
from core.errors import StorageUnavailable
from core.logs import RateLimitedLogger
from core.ports import CalendarView, CalendarWriter, CommandPort

log = logging.getLogger(__name__)
_refusals = RateLimitedLogger(log, interval_s=60.0)

ANY = 255  # BACnet's 'unspecified' octet in dates and week-n-day


def _bacnet_error(error_class: str, error_code: str) -> ExecutionError:
    return ExecutionError(errorClass=error_class, errorCode=error_code)


def _number(value: int, width: int = 2) -> str:
    return "*" if value == ANY else str(value).zfill(width)


def core_entry(entry: Any, day_type: DayType) -> CalendarEntry:
    """A BACnetCalendarEntry as a calendar entry of ``day_type``; CalendarError when invalid."""
    spec: dict[str, Any] = {"day_type": day_type.name}
    if entry.date is not None:
        year, month, day, weekday = tuple(entry.date)
        spec["date"] = (
            f"{_number(year + 1900 if year != ANY else ANY, 4)}-{_number(month)}-{_number(day)}"
        )
        if weekday != ANY:
            spec["weekday"] = int(weekday)
    elif entry.dateRange is not None:
        start, end = tuple(entry.dateRange.startDate), tuple(entry.dateRange.endDate)
        if ANY in start[:3] or ANY in end[:3]:
            raise CalendarError("a date range needs full start and end dates")
        spec["start"] = f"{start[0] + 1900:04d}-{start[1]:02d}-{start[2]:02d}"
        spec["end"] = f"{end[0] + 1900:04d}-{end[1]:02d}-{end[2]:02d}"
    elif entry.weekNDay is not None:
        raw = bytes(entry.weekNDay)
        if len(raw) != 3:
            raise CalendarError("week-n-day must be 3 octets")
        month, week, weekday = raw
        spec["week_n_day"] = {
            "month": None if month == ANY else month,
            "week_of_month": None if week == ANY else week,
            "weekday": None if weekday == ANY else weekday,
        }
    else:
        raise CalendarError("an empty calendar entry")
    return parse_entry(spec)


def _date(year: int | None, month: int | None, day: int | None, weekday: int | None) -> Date:
    return Date(
        (
            ANY if year is None else year - 1900,
            ANY if month is None else month,
            ANY if day is None else day,
            ANY if weekday is None else weekday + 1,
        )
    )


def bacnet_entry(entry: CalendarEntry) -> BacnetCalendarEntry:
    """A calendar entry as a BACnetCalendarEntry."""
    spec = entry.dates
    if isinstance(spec, DatePattern):
        return BacnetCalendarEntry(date=_date(spec.year, spec.month, spec.day, spec.weekday))
    if isinstance(spec, DateSpan):
        start, end = spec.start, spec.end
        return BacnetCalendarEntry(
            dateRange=DateRange(
                startDate=_date(start.year, start.month, start.day, start.weekday()),
                endDate=_date(end.year, end.month, end.day, end.weekday()),
            )
        )
    assert isinstance(spec, CoreWeekNDay)
    octets = bytes(
        [
            ANY if spec.month is None else spec.month,
            ANY if spec.week_of_month is None else spec.week_of_month,
            ANY if spec.weekday is None else spec.weekday + 1,
        ]
    )
    return BacnetCalendarEntry(weekNDay=WeekNDay(octets))


def core_entries(elements: Sequence[Any], day_type: DayType) -> list[CalendarEntry]:
    """Every element converted; ExecutionError value-out-of-range naming none changed."""
    out = []
    for number, element in enumerate(elements, start=1):
        try:
            out.append(core_entry(element, day_type))
        except (CalendarError, TypeError, ValueError) as exc:
            _refusals.warning("BACnet calendar entry %d refused: %s", number, exc)
            error = _bacnet_error("property", "valueOutOfRange")
            error.first_failed = number
            raise error from None
    return out


class SiteCalendarObject(_PropertyList, CalendarObject):  # type: ignore[misc]
    """A Calendar object over the core's calendar: date-list writable, present-value derived."""

    _spec: CalendarSpec
    _calendar: CalendarView
    _writer: CalendarWriter

    @property
    def network_writable(self) -> frozenset[str]:
        """Properties a network write may change: date-list, once the core's calendar is set."""
        return frozenset({"dateList"}) if getattr(self, "_writer", None) else frozenset()

    async def write_property(
        self, attr: int | str, value: Any, index: int | None = None, priority: int | None = None
    ) -> None:
        """date-list: replace this day type's entries; anything else is write-access-denied."""
        name = attr if isinstance(attr, str) else None
        if name is None:
            from bacpypes3.basetypes import PropertyIdentifier

            name = str(PropertyIdentifier(attr).attr)
        if name != "dateList":
            raise _bacnet_error("property", "writeAccessDenied")
        if index is not None:
            raise _bacnet_error("property", "propertyIsNotAnArray")
        entries = core_entries(list(value), self._spec.day_type)
        await self._change(self._writer.set_entries, entries)

    async def add_elements(self, elements: Sequence[Any]) -> None:
        """AddListElement to date-list (entries already there are kept once)."""
        entries = core_entries(elements, self._spec.day_type)
        await self._change(self._writer.add_entries, entries)

    async def remove_elements(self, elements: Sequence[Any]) -> None:
        """RemoveListElement from date-list; an entry not listed fails it whole."""
        entries = core_entries(elements, self._spec.day_type)
        listed = {(e.dates, e.day_type) for e in self._calendar.entries_of(self._spec.day_type)}
        for number, entry in enumerate(entries, start=1):
            if (entry.dates, entry.day_type) not in listed:
                error = _bacnet_error("services", "listElementNotFound")
                error.first_failed = number
                raise error
        await self._change(self._writer.remove_entries, entries)

    async def _change(
        self,
        how: Callable[[Sequence[CalendarEntry]], Awaitable[SiteCalendar]],
        entries: list[CalendarEntry],
    ) -> None:
        try:
            await how(entries)
        except CalendarError as exc:
            _refusals.warning("BACnet calendar write to %s refused: %s", self.objectName, exc)
            raise _bacnet_error("property", "valueOutOfRange") from None
        except StorageUnavailable as exc:
            _refusals.warning("BACnet calendar write to %s refused: %s", self.objectName, exc)
            raise _bacnet_error("device", "operationalProblem") from None

    def show(self, calendar: SiteCalendar, today_listed: bool) -> None:
        """Mirror the core's entries of this day type and today's answer (drives COV)."""
        own = [e for e in calendar.entries if e.day_type == self._spec.day_type]
        self.dateList = ListOf(BacnetCalendarEntry)([bacnet_entry(e) for e in own])
        wanted = Boolean(today_listed)
        if bool(getattr(self, "presentValue")) != bool(wanted):  # noqa: B009
            self.presentValue = wanted


def build_calendar_objects(
    calendar: CalendarView, commands: CommandPort | None
) -> list[SiteCalendarObject]:
    """One Calendar object per day type, mirroring ``calendar`` (call inside the running loop);
    their date-lists are writable, by commands to ``commands``, unless it is None."""
    objects = []
    for spec in CALENDARS:
        obj = SiteCalendarObject(
            objectIdentifier=("calendar", spec.instance),
            objectName=spec.name,
            description=spec.description,
            presentValue=False,
            dateList=[],
        )
        obj._spec = spec
        obj._calendar = calendar
        if commands is not None:
            obj._writer = CalendarWriter(commands, spec.day_type)
        objects.append(obj)
    return objects


class CalendarMirror:
    """Keeps the Calendar objects in step with the core's calendar and the site's date."""

    def __init__(self, keeper: CalendarView, objects: list[SiteCalendarObject]) -> None:
        self._keeper = keeper
        self._objects = objects
        self._shown: tuple[object, ...] | None = None
        keeper.subscribe(self._changed)

    def _changed(self, _calendar: SiteCalendar) -> None:
        self._shown = None
        self.refresh()

    def refresh(self) -> None:
        """Update date-lists and present-values when the calendar or the date changed."""
        calendar = self._keeper.calendar
        today = self._keeper.today()
        key = (id(calendar), today)
        if key == self._shown:
            return
        self._shown = key
        kind = calendar.day_type(today)
        for obj in self._objects:
            obj.show(calendar, kind == obj._spec.day_type)


def change_list_error(error: ExecutionError) -> tuple[ErrorType, int]:
    """The ChangeList-Error parts of a refused Add/RemoveListElement."""
    return (
        ErrorType(errorClass=error.errorClass, errorCode=error.errorCode),
        int(getattr(error, "first_failed", 0)),
    )


async def change_list(app: Any, obj: Any, apdu: Any, add: bool) -> None:
    """AddListElement / RemoveListElement (``add`` False): the Calendar objects' date-list
    only; answered with SimpleAck, or ChangeList-Error naming the first failed element."""
    from bacpypes3.apdu import ChangeListError, SimpleAckPDU
    from bacpypes3.basetypes import PropertyIdentifier

    try:
        if obj is None:
            raise _bacnet_error("object", "unknownObject")
        pid = apdu.propertyIdentifier
        name = str(PropertyIdentifier(pid).attr) if isinstance(pid, int) else str(pid)
        if obj.get_property_type(pid) is None:
            raise _bacnet_error("property", "unknownProperty")
        if not isinstance(obj, SiteCalendarObject) or name != "dateList":
            raise _bacnet_error("property", "writeAccessDenied")
        if apdu.propertyArrayIndex is not None:
            raise _bacnet_error("property", "propertyIsNotAnArray")
        try:
            elements = list(apdu.listOfElements.cast_out(ListOf(BacnetCalendarEntry)))
        except Exception:
            raise _bacnet_error("property", "invalidDataType") from None
        await (obj.add_elements if add else obj.remove_elements)(elements)
    except ExecutionError as error:
        error_type, first = change_list_error(error)
        # bacpypes3's ChangeListError names no service: a subclass per service names it.
        kind = type("ChangeListError", (ChangeListError,), {"service_choice": apdu.apduService})
        await app.response(kind(errorType=error_type, firstFailedElementNumber=first, context=apdu))
        return
    await app.response(SimpleAckPDU(context=apdu))

"""The Calendar objects' table: instance, name and day type of each, described once.

Both the device (``bacnet.calendar``) and the EDE export read it. It imports no bacpypes3, so the
REST face can export the point list without loading the BACnet stack. Names and instances are a
contract with integrators, like the point table's: never rename or renumber them.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.calendar import WEEKDAYS, DayType

CALENDAR_OBJECT_TYPE = "calendar"
CALENDAR_OBJECT_TYPE_CODE = 6  # BACnetObjectType calendar


@dataclass(frozen=True, slots=True)
class CalendarSpec:
    """One Calendar object: its instance, name and the day type its date-list holds."""

    instance: int
    name: str
    day_type: DayType
    description: str


CALENDARS: tuple[CalendarSpec, ...] = (
    CalendarSpec(
        1,
        "holidays-closed",
        DayType(None),
        "Days the site is closed (date-list writable): forecasts and the dispatch plan read them "
        "as the site's closed weekday",
    ),
    *(
        CalendarSpec(
            2 + i,
            f"runs-like-{name}",
            DayType(i),
            f"Days that run on the {name.title()} schedule (date-list writable): forecasts and "
            f"the dispatch plan read them as a {name.title()}",
        )
        for i, name in enumerate(WEEKDAYS)
    ),
)

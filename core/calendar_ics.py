"""Calendar files: the JSON document the REST API takes, or an iCalendar (.ics) list of holidays.

An .ics event becomes one entry per occurrence inside a window of dates (recurring events are
expanded by ``recurring-ical-events``): a single date, or a range for an event of several days.
Its day type is ``like <weekday>`` when its summary, categories or description say so (e.g.
"Staff day (like monday)"), ``closed`` otherwise (a holiday).
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from core.calendar import (
    WEEKDAYS,
    CalendarEntry,
    CalendarError,
    DatePattern,
    DateSpan,
    DayType,
    SiteCalendar,
    parse_calendar,
)

_LIKE = re.compile(r"\blike[\s_-]+(" + "|".join(WEEKDAYS) + r")\b", re.IGNORECASE)
MAX_ICS_BYTES = 2_000_000
# The default window an .ics is expanded over: from a year before ``today`` to two years after.
DEFAULT_YEARS_BACK = 1
DEFAULT_YEARS_AHEAD = 2


def default_window(today: date) -> tuple[date, date]:
    """The dates recurring .ics events are expanded over when none is given."""
    return (
        date(today.year - DEFAULT_YEARS_BACK, 1, 1),
        date(today.year + DEFAULT_YEARS_AHEAD, 12, 31),
    )


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    raise CalendarError(f"ics: {value!r} is not a date")


def _day_type_of(event: Any) -> DayType:
    texts: list[str] = []
    for key in ("SUMMARY", "CATEGORIES", "DESCRIPTION"):
        value = event.get(key)
        if value is None:
            continue
        if hasattr(value, "cats"):
            texts.extend(str(c) for c in value.cats)
        elif isinstance(value, list):
            for item in value:
                texts.extend(str(c) for c in getattr(item, "cats", [item]))
        else:
            texts.append(str(value))
    for text in texts:
        found = _LIKE.search(text)
        if found:
            return DayType.parse(f"like {found.group(1)}")
    return DayType(None)


def parse_ics(data: bytes, first: date, last: date) -> list[CalendarEntry]:
    """Entries for every occurrence of the .ics events between ``first`` and ``last``
    (inclusive), in date order; CalendarError for a file that is not iCalendar."""
    import icalendar
    import recurring_ical_events

    if len(data) > MAX_ICS_BYTES:
        raise CalendarError(f"ics: file larger than {MAX_ICS_BYTES} bytes")
    if last < first:
        raise CalendarError(f"ics: window end {last} is before its start {first}")
    try:
        cal = icalendar.Calendar.from_ical(data)
        events = recurring_ical_events.of(cal).between(first, last + timedelta(days=1))
    except CalendarError:
        raise
    except Exception as exc:  # the parsers raise many types for a malformed file
        raise CalendarError(f"ics: not a readable iCalendar file ({exc})") from None
    entries: list[CalendarEntry] = []
    seen: set[tuple[date, date, str]] = set()
    for event in events:
        start_value = event.get("DTSTART")
        if start_value is None:
            continue
        start = _as_date(start_value.dt)
        end_value = event.get("DTEND")
        if end_value is not None:
            end_raw = end_value.dt
            end = _as_date(end_raw)
            # DTEND of an all-day event is the day after; of a timed event, its own day.
            if not isinstance(end_raw, datetime) and end > start:
                end -= timedelta(days=1)
        else:
            end = start
        start, end = max(start, first), min(max(end, start), last)
        if end < start:
            continue
        kind = _day_type_of(event)
        key = (start, end, kind.name)
        if key in seen:
            continue
        seen.add(key)
        note = str(event.get("SUMMARY", ""))[:200]
        spec = (
            DatePattern(start.year, start.month, start.day)
            if start == end
            else DateSpan(start, end)
        )
        entries.append(CalendarEntry(spec, kind, note))
    entries.sort(key=lambda e: _first_day(e))
    return entries


def _first_day(entry: CalendarEntry) -> date:
    spec = entry.dates
    if isinstance(spec, DateSpan):
        return spec.start
    if isinstance(spec, DatePattern) and spec.single is not None:
        return spec.single
    return date.min


def is_ics(data: bytes) -> bool:
    """Whether ``data`` looks like an iCalendar file (BEGIN:VCALENDAR first)."""
    return data.lstrip(b"\xef\xbb\xbf \t\r\n").upper().startswith(b"BEGIN:VCALENDAR")


def parse_calendar_bytes(data: bytes, first: date, last: date) -> SiteCalendar:
    """A calendar from a file's bytes: an .ics (expanded over ``first``..``last``) or the JSON
    document; CalendarError for anything else."""
    if is_ics(data):
        return SiteCalendar(tuple(parse_ics(data, first, last)))
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalendarError(f"calendar file is neither iCalendar nor JSON ({exc})") from None
    return parse_calendar(document)


def load_calendar_file(path: str | Path, first: date, last: date) -> SiteCalendar:
    """Read a calendar file (.ics or JSON); CalendarError naming the file on any problem."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CalendarError(f"{path}: {exc.strerror or exc}") from None
    try:
        return parse_calendar_bytes(data, first, last)
    except CalendarError as exc:
        raise CalendarError(f"{path}: {exc}") from None

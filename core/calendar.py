"""Day types the site can be told: dates (single, ranges, BACnet week-n-day) and what kind of day
each one is (``closed`` or ``like <weekday>``), and the resolution of a date to its day type.

Pure logic: no storage, no I/O. The forecasters read a calendar as the *effective weekday* of
each local day (a day listed ``like monday`` is a Monday; a ``closed`` day is the site's closed
weekday, Sunday unless told otherwise) and as the *same-type day* k weeks back (the k-th earlier
day with the same effective weekday: a holiday last week is skipped, a Tuesday that runs like a
Monday reads the Mondays before it). Without a calendar neither changes anything.
"""

from __future__ import annotations

import calendar as pycalendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
CLOSED = "closed"
DAY_TYPES = (CLOSED, *(f"like {d}" for d in WEEKDAYS))
# BACnet encodings: month 13/14 odd/even months; day 32 last day of the month, 33/34 odd/even
# days; week-of-month 1..5 the days 1-7 .. 29-31, 6 the last 7 days of the month.
ODD_MONTHS, EVEN_MONTHS = 13, 14
LAST_DAY, ODD_DAYS, EVEN_DAYS = 32, 33, 34
LAST_WEEK = 6
MAX_ENTRIES = 1000
# How far back a same-type day is looked for, in weeks beyond the asked-for k (then 7k days).
SEARCH_SLACK_WEEKS = 8
EPOCH = date(1970, 1, 1)

IntArray = npt.NDArray[np.int64]


class CalendarError(ValueError):
    """A calendar document or entry that cannot be accepted; the message is safe to show."""


def parse_weekday(value: Any, what: str = "weekday") -> int:
    """Monday = 0 from a name ('monday', 'Mon') or a BACnet day-of-week number (1 = Monday)."""
    if isinstance(value, bool):
        raise CalendarError(f"{what}: {value!r} is not a weekday")
    if isinstance(value, int):
        if 1 <= value <= 7:
            return value - 1
        raise CalendarError(f"{what}: {value} is not a weekday number (1 = Monday .. 7 = Sunday)")
    if isinstance(value, str):
        text = value.strip().lower()
        for i, name in enumerate(WEEKDAYS):
            if len(text) >= 3 and name.startswith(text):
                return i
    raise CalendarError(f"{what}: {value!r} is not a weekday (monday .. sunday)")


@dataclass(frozen=True, slots=True)
class DayType:
    """What kind of day a listed date is: closed, or running like one weekday's schedule."""

    like_weekday: int | None  # None: closed

    @classmethod
    def parse(cls, text: Any) -> DayType:
        """'closed' or 'like <weekday>' (case and spacing free); CalendarError otherwise."""
        if not isinstance(text, str):
            raise CalendarError(f"day_type: {text!r} is not one of {', '.join(DAY_TYPES)}")
        words = text.strip().lower().replace("-", " ").replace("_", " ").split()
        if words == [CLOSED]:
            return cls(None)
        if len(words) == 2 and words[0] == "like":
            try:
                return cls(parse_weekday(words[1]))
            except CalendarError:
                pass
        raise CalendarError(f"day_type: {text!r} is not one of {', '.join(DAY_TYPES)}")

    @property
    def name(self) -> str:
        """The canonical text: 'closed' or 'like monday'."""
        return CLOSED if self.like_weekday is None else f"like {WEEKDAYS[self.like_weekday]}"


@dataclass(frozen=True, slots=True)
class DatePattern:
    """A BACnet Date, any field of which may be a wildcard (None): '2022-08-23', '*-12-25'."""

    year: int | None
    month: int | None  # 1..12, 13 odd months, 14 even months
    day: int | None  # 1..31, 32 last day, 33 odd days, 34 even days
    weekday: int | None = None  # Monday = 0

    def matches(self, d: date) -> bool:
        """Whether ``d`` is one of the days this pattern names."""
        if self.year is not None and d.year != self.year:
            return False
        if not _month_matches(self.month, d.month):
            return False
        if self.weekday is not None and d.weekday() != self.weekday:
            return False
        if self.day is None:
            return True
        if self.day == LAST_DAY:
            return d.day == pycalendar.monthrange(d.year, d.month)[1]
        if self.day == ODD_DAYS:
            return d.day % 2 == 1
        if self.day == EVEN_DAYS:
            return d.day % 2 == 0
        return d.day == self.day

    @property
    def single(self) -> date | None:
        """The one date it names when no field is a wildcard, else None."""
        if self.year is None or self.month is None or self.day is None:
            return None
        if self.month > 12 or self.day > 31:
            return None
        return date(self.year, self.month, self.day)

    def text(self) -> str:
        """'YYYY-MM-DD' with '*' for a wildcard (odd/even/last as their BACnet numbers)."""

        def part(v: int | None, width: int) -> str:
            return "*" if v is None else str(v).zfill(width)

        return f"{part(self.year, 4)}-{part(self.month, 2)}-{part(self.day, 2)}"


@dataclass(frozen=True, slots=True)
class DateSpan:
    """Every date from ``start`` to ``end``, both included."""

    start: date
    end: date

    def matches(self, d: date) -> bool:
        """Whether ``d`` is inside the span."""
        return self.start <= d <= self.end


@dataclass(frozen=True, slots=True)
class WeekNDay:
    """BACnet week-n-day: month (None any, 13 odd, 14 even), week of month (1..5: days 1-7 ..
    29-31, 6: the last 7 days; None any) and weekday (None any): '4th Thursday of November'."""

    month: int | None
    week_of_month: int | None
    weekday: int | None

    def matches(self, d: date) -> bool:
        """Whether ``d`` is one of the days this pattern names."""
        if not _month_matches(self.month, d.month):
            return False
        if self.weekday is not None and d.weekday() != self.weekday:
            return False
        if self.week_of_month is None:
            return True
        if self.week_of_month == LAST_WEEK:
            return d.day > pycalendar.monthrange(d.year, d.month)[1] - 7
        return (d.day - 1) // 7 + 1 == self.week_of_month


def _month_matches(month: int | None, actual: int) -> bool:
    if month is None:
        return True
    if month == ODD_MONTHS:
        return actual % 2 == 1
    if month == EVEN_MONTHS:
        return actual % 2 == 0
    return month == actual


DateSpec = DatePattern | DateSpan | WeekNDay


@dataclass(frozen=True, slots=True)
class CalendarEntry:
    """One line of the calendar: which dates, what kind of day, and an optional note."""

    dates: DateSpec
    day_type: DayType
    note: str = ""

    def matches(self, d: date) -> bool:
        """Whether ``d`` is one of this entry's dates."""
        return self.dates.matches(d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form the REST API and calendar files use."""
        out: dict[str, Any] = {"day_type": self.day_type.name}
        spec = self.dates
        if isinstance(spec, DatePattern):
            out["date"] = spec.text()
            if spec.weekday is not None:
                out["weekday"] = WEEKDAYS[spec.weekday]
        elif isinstance(spec, DateSpan):
            out["start"] = spec.start.isoformat()
            out["end"] = spec.end.isoformat()
        else:
            out["week_n_day"] = {
                "month": spec.month,
                "week_of_month": spec.week_of_month,
                "weekday": None if spec.weekday is None else WEEKDAYS[spec.weekday],
            }
        if self.note:
            out["note"] = self.note
        return out


def _parse_date(text: Any, what: str) -> date:
    if not isinstance(text, str):
        raise CalendarError(f"{what}: {text!r} is not a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise CalendarError(f"{what}: {text!r} is not a date (YYYY-MM-DD)") from None


def _pattern_field(text: str, lo: int, hi: int, what: str, full: str) -> int | None:
    if text == "*":
        return None
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise CalendarError(f"date: {full!r}: {what} {text!r} is not '*' or {lo}..{hi}")
    return int(text)


def parse_date_pattern(text: Any, weekday: Any = None) -> DatePattern:
    """'YYYY-MM-DD' where any field may be '*' (month 13/14 odd/even, day 32 last, 33/34
    odd/even); a full date must exist."""
    if not isinstance(text, str) or text.strip().count("-") != 2:
        raise CalendarError(f"date: {text!r} is not a date (YYYY-MM-DD, '*' for any field)")
    full = text.strip()
    y, m, d = full.split("-")
    year = _pattern_field(y, 1900, 2154, "year", full)
    month = _pattern_field(m, 1, 14, "month", full)
    day = _pattern_field(d, 1, 34, "day", full)
    wd = None if weekday is None else parse_weekday(weekday)
    pattern = DatePattern(year, month, day, wd)
    if year is not None and month is not None and day is not None and month <= 12 and day <= 31:
        actual = _parse_date(full, "date")  # a full date must exist (no 2022-02-30)
        if wd is not None:
            # A full date's day of week is redundant (BACnet clients often send it): dropped when
            # right, so the same date compares equal with or without it; an error when wrong.
            if wd != actual.weekday():
                raise CalendarError(
                    f"date: {full} is a {WEEKDAYS[actual.weekday()]}, not a {WEEKDAYS[wd]}"
                )
            pattern = DatePattern(year, month, day)
    elif (
        month is not None
        and month <= 12
        and day is not None
        and day <= 31
        and day > pycalendar.monthrange(2000, month)[1]
    ):
        raise CalendarError(f"date: {full!r}: month {month} has no day {day}")
    return pattern


def parse_entry(data: Any) -> CalendarEntry:
    """One entry from its JSON form; CalendarError naming what is wrong."""
    if not isinstance(data, Mapping):
        raise CalendarError(f"entry: {data!r} is not an object")
    known = {"day_type", "date", "weekday", "start", "end", "week_n_day", "note"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CalendarError(f"entry: unknown field(s) {', '.join(map(str, unknown))}")
    day_type = DayType.parse(data.get("day_type"))
    forms = [k for k in ("date", "start", "week_n_day") if k in data]
    if len(forms) != 1:
        raise CalendarError("entry: give exactly one of 'date', 'start'/'end' or 'week_n_day'")
    spec: DateSpec
    if "date" in data:
        spec = parse_date_pattern(data["date"], data.get("weekday"))
    elif "start" in data:
        if "end" not in data:
            raise CalendarError("entry: a range needs both 'start' and 'end'")
        start = _parse_date(data["start"], "start")
        end = _parse_date(data["end"], "end")
        if end < start:
            raise CalendarError(f"entry: end {end} is before start {start}")
        spec = DateSpan(start, end)
    else:
        spec = _parse_week_n_day(data["week_n_day"])
    note = data.get("note", "")
    if not isinstance(note, str) or len(note) > 200:
        raise CalendarError("entry: note must be text of at most 200 characters")
    return CalendarEntry(spec, day_type, note)


def _parse_week_n_day(data: Any) -> WeekNDay:
    if not isinstance(data, Mapping):
        raise CalendarError(f"week_n_day: {data!r} is not an object")
    unknown = sorted(set(data) - {"month", "week_of_month", "weekday"})
    if unknown:
        raise CalendarError(f"week_n_day: unknown field(s) {', '.join(map(str, unknown))}")
    month = data.get("month")
    week = data.get("week_of_month")
    for name, value, hi in (("month", month, 14), ("week_of_month", week, LAST_WEEK)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi
        ):
            raise CalendarError(f"week_n_day: {name} {value!r} is not null or 1..{hi}")
    wd = data.get("weekday")
    return WeekNDay(month, week, None if wd is None else parse_weekday(wd, "week_n_day weekday"))


@dataclass(slots=True)
class SiteCalendar:
    """The site's calendar: entries (the first that lists a date decides its type) and the
    weekday a ``closed`` day runs like (Sunday unless told)."""

    entries: tuple[CalendarEntry, ...] = ()
    closed_like: int = 6
    _weekday_cache: dict[int, tuple[int, bool]] = field(
        default_factory=dict, repr=False, compare=False
    )
    _lag_cache: dict[tuple[int, int], int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.entries) > MAX_ENTRIES:
            raise CalendarError(f"at most {MAX_ENTRIES} entries, got {len(self.entries)}")
        if not 0 <= self.closed_like <= 6:
            raise CalendarError("closed_like must be a weekday")

    @property
    def empty(self) -> bool:
        """True when nothing is listed (the forecasters then behave as without a calendar)."""
        return not self.entries

    def entry_for(self, d: date) -> CalendarEntry | None:
        """The first entry that lists ``d``, or None for an ordinary day."""
        for entry in self.entries:
            if entry.matches(d):
                return entry
        return None

    def day_type(self, d: date) -> DayType | None:
        """The day type of ``d``, None for an ordinary day."""
        entry = self.entry_for(d)
        return None if entry is None else entry.day_type

    def weekday_of(self, d: date) -> int:
        """The weekday ``d`` runs like (Monday = 0): its own unless the calendar lists it."""
        kind = self.day_type(d)
        if kind is None:
            return d.weekday()
        return self.closed_like if kind.like_weekday is None else kind.like_weekday

    def _resolved(self, day: int) -> tuple[int, bool]:
        got = self._weekday_cache.get(day)
        if got is None:
            d = EPOCH + timedelta(days=day)
            got = (self.weekday_of(d), self.day_type(d) is not None)
            self._weekday_cache[day] = got
        return got

    def weekday_of_index(self, day: int) -> int:
        """``weekday_of`` for a local day number (days since 1970-01-01), cached."""
        return self._resolved(day)[0]

    def is_listed_index(self, day: int) -> bool:
        """Whether the calendar lists the local day number ``day``."""
        return self._resolved(day)[1]

    def ordinary(self, days: IntArray) -> npt.NDArray[np.bool_]:
        """Which local day numbers (any shape) the calendar does not list."""
        days = np.asarray(days, dtype=np.int64)
        unique, inverse = np.unique(days, return_inverse=True)
        found = np.fromiter(
            (not self.is_listed_index(int(d)) for d in unique), dtype=np.bool_, count=len(unique)
        )
        out: npt.NDArray[np.bool_] = found[inverse.reshape(days.shape)]
        return out

    def weekdays(self, days: IntArray) -> IntArray:
        """Effective weekdays of local day numbers (any shape)."""
        days = np.asarray(days, dtype=np.int64)
        unique, inverse = np.unique(days, return_inverse=True)
        found = np.fromiter(
            (self.weekday_of_index(int(d)) for d in unique), dtype=np.int64, count=len(unique)
        )
        return np.asarray(found[inverse.reshape(days.shape)], dtype=np.int64)

    def same_type_lag(self, day: int, k: int) -> int:
        """Days back from ``day`` to the k-th earlier ordinary (unlisted) day of the weekday
        ``day`` runs like (7k when nothing is listed near it; 7k too when none is found within
        the slack). A listed day is an exception: it reads its type's ordinary days and is read
        by none (a holiday last week does not pull this week's base down; a Tuesday that ran
        like a Monday is not a sample of the Mondays after it)."""
        key = (day, k)
        got = self._lag_cache.get(key)
        if got is None:
            got = 7 * k
            want = self.weekday_of_index(day)
            seen = 0
            for back in range(1, 7 * (k + SEARCH_SLACK_WEEKS) + 1):
                weekday, listed = self._resolved(day - back)
                if weekday == want and not listed:
                    seen += 1
                    if seen == k:
                        got = back
                        break
            self._lag_cache[key] = got
        return got

    def same_type_lags(self, days: IntArray, k: int) -> IntArray:
        """``same_type_lag`` for local day numbers (any shape)."""
        days = np.asarray(days, dtype=np.int64)
        unique, inverse = np.unique(days, return_inverse=True)
        found = np.fromiter(
            (self.same_type_lag(int(d), k) for d in unique), dtype=np.int64, count=len(unique)
        )
        return np.asarray(found[inverse.reshape(days.shape)], dtype=np.int64)

    def listed_dates(self, first: date, last: date) -> list[tuple[date, DayType]]:
        """Every listed date from ``first`` to ``last`` with its day type."""
        out: list[tuple[date, DayType]] = []
        d = first
        while d <= last:
            kind = self.day_type(d)
            if kind is not None:
                out.append((d, kind))
            d += timedelta(days=1)
        return out

    def with_entries(self, entries: Iterable[CalendarEntry]) -> SiteCalendar:
        """A copy with other entries (same closed weekday)."""
        return SiteCalendar(tuple(entries), self.closed_like)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (REST body, calendar file)."""
        return {
            "closed_like": WEEKDAYS[self.closed_like],
            "entries": [e.to_dict() for e in self.entries],
        }


def parse_calendar(data: Any) -> SiteCalendar:
    """A calendar from its JSON document ({"closed_like": ..., "entries": [...]}) or a bare
    list of entries; CalendarError naming the first thing wrong (entry numbers from 1)."""
    if isinstance(data, list):
        data = {"entries": data}
    if not isinstance(data, Mapping):
        raise CalendarError("a calendar is an object with 'entries' (and 'closed_like')")
    unknown = sorted(set(data) - {"entries", "closed_like"})
    if unknown:
        raise CalendarError(f"calendar: unknown field(s) {', '.join(map(str, unknown))}")
    raw = data.get("entries", [])
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise CalendarError("calendar: 'entries' must be a list")
    if len(raw) > MAX_ENTRIES:
        raise CalendarError(f"calendar: at most {MAX_ENTRIES} entries, got {len(raw)}")
    entries = []
    for i, item in enumerate(raw, start=1):
        try:
            entries.append(parse_entry(item))
        except CalendarError as exc:
            raise CalendarError(f"entry {i}: {exc}") from None
    closed = data.get("closed_like", "sunday")
    return SiteCalendar(tuple(entries), parse_weekday(closed, "closed_like"))


def day_numbers(local_minutes: IntArray) -> IntArray:
    """Local day numbers (days since 1970-01-01 local) of site-local minute indices."""
    return np.asarray(np.floor_divide(local_minutes, 1440), dtype=np.int64)

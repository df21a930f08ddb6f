"""The site calendar: which dates are closed or run like another weekday (REST face)."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CommandsDep, CoreDep, WriteAllowed
from api.errors import error_responses
from core.calendar import WEEKDAYS, CalendarError, SiteCalendar, parse_calendar
from core.ports import ReplaceCalendar

router = APIRouter(prefix="/api/v1", tags=["calendar"])


class WeekNDayIn(BaseModel):
    """BACnet week-n-day: null fields match any."""

    model_config = ConfigDict(extra="forbid")

    month: int | None = Field(None, description="1..12, 13 odd months, 14 even months")
    week_of_month: int | None = Field(
        None, description="1..5: days 1-7 .. 29-31; 6: the last 7 days of the month"
    )
    weekday: str | int | None = Field(None, description="monday .. sunday (or 1 = Monday .. 7)")


class CalendarEntryIn(BaseModel):
    """One entry: exactly one of ``date``, ``start``/``end`` or ``week_n_day``, and its type."""

    model_config = ConfigDict(extra="forbid")

    day_type: str = Field(
        description="'closed' (runs like the site's closed weekday) or 'like <weekday>'",
        examples=["closed", "like monday"],
    )
    date: str | None = Field(
        None,
        description="YYYY-MM-DD, '*' for any field (month 13/14 odd/even, day 32 last, 33/34 "
        "odd/even): '2022-08-23', '*-12-25'",
        examples=["2022-08-23"],
    )
    weekday: str | int | None = Field(None, description="with 'date': only on this weekday")
    start: str | None = Field(None, description="first date of a range (YYYY-MM-DD)")
    end: str | None = Field(None, description="last date of a range, included")
    week_n_day: WeekNDayIn | None = None
    note: str | None = Field(None, max_length=200)


class CalendarIn(BaseModel):
    """The whole site calendar; the first entry that lists a date decides its type."""

    model_config = ConfigDict(extra="forbid")

    closed_like: str = Field("sunday", description="the weekday a 'closed' day runs like")
    entries: list[CalendarEntryIn] = Field(default_factory=list, max_length=1000)


class TodayOut(BaseModel):
    """What kind of day it is today at the site."""

    date: str
    day_type: str = Field(description="'closed', 'like <weekday>', or 'ordinary' (not listed)")
    runs_like: str = Field(description="the weekday today's forecasts and plan read it as")


class CalendarOut(CalendarIn):
    """The calendar in force, and what it makes of today."""

    today: TodayOut


def _out(calendar: SiteCalendar, today: date) -> CalendarOut:
    kind = calendar.day_type(today)
    document = calendar.to_dict()
    return CalendarOut(
        closed_like=document["closed_like"],
        entries=[CalendarEntryIn.model_validate(e) for e in document["entries"]],
        today=TodayOut(
            date=today.isoformat(),
            day_type="ordinary" if kind is None else kind.name,
            runs_like=WEEKDAYS[calendar.weekday_of(today)],
        ),
    )


@router.get("/calendar", response_model=CalendarOut, response_model_exclude_none=True)
async def get_calendar(core: CoreDep) -> CalendarOut:
    """The site calendar in force (the same one the BACnet Calendar objects show)."""
    # async: read on the loop thread, where the core changes it.
    keeper = core.calendar
    return _out(keeper.calendar, keeper.today())


@router.put(
    "/calendar",
    response_model=CalendarOut,
    response_model_exclude_none=True,
    dependencies=[WriteAllowed],
    responses=error_responses(
        422,
        503,
        e422="A date or a day type is invalid; nothing changed.",
        e503="The database is not taking writes; nothing changed.",
    ),
)
async def put_calendar(core: CoreDep, commands: CommandsDep, body: CalendarIn) -> CalendarOut:
    """Replace the whole site calendar (holidays, closed days, days that run like another
    weekday); forecasts and the dispatch plan read it from their next run."""
    try:
        calendar = parse_calendar(body.model_dump(exclude_none=True))
    except CalendarError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    stored = await commands.command(ReplaceCalendar(calendar, "rest"))
    return _out(stored, core.calendar.today())

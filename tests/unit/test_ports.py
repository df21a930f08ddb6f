"""The command port's records and the writer a BACnet point holds (pure logic, a fake port)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from core import ports
from core.calendar import CalendarError, DayType, SiteCalendar, parse_entry
from core.commands import InputKey
from core.handlers import CommandHandlers
from core.ports import (
    AddCalendarEntries,
    CalendarWriter,
    Command,
    InputWriter,
    RelinquishInput,
    RemoveCalendarEntries,
    ReplaceCalendar,
    SetCalendarEntries,
    SubmitReadings,
    WriteInput,
    WriteInputs,
)

CALENDAR_RECORDS = (ReplaceCalendar, SetCalendarEntries, AddCalendarEntries, RemoveCalendarEntries)


class _RecordingPort:
    """A command port that keeps what it is sent."""

    def __init__(self) -> None:
        self.sent: list[Command[Any]] = []

    async def command(self, cmd: Command[Any]) -> Any:
        self.sent.append(cmd)
        return None


def test_a_point_writer_sends_one_write_record_with_its_key_priority_and_source() -> None:
    port = _RecordingPort()
    writer = InputWriter(port, InputKey.METER_KW)
    asyncio.run(writer.command(12.5, 8))
    assert port.sent == [WriteInput(InputKey.METER_KW, 12.5, 8, "bacnet")]


def test_a_null_write_is_sent_as_a_relinquish_of_that_priority() -> None:
    port = _RecordingPort()
    writer = InputWriter(port, InputKey.DEMAND_TARGET_KW)
    asyncio.run(writer.command(None, 5))
    assert port.sent == [RelinquishInput(InputKey.DEMAND_TARGET_KW, 5, "bacnet")]


def test_command_records_are_frozen() -> None:
    record = WriteInputs({"pv_power_kw": 3.5})
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.source = "bacnet"  # type: ignore[misc]
    assert SubmitReadings([]).source == "rest"


def _handler_table() -> dict[type[Command[Any]], Any]:
    """The handler table (it only names bound methods: no state is needed to read it)."""
    return object.__new__(CommandHandlers).table()


def test_every_command_record_has_exactly_one_handler_of_its_own() -> None:
    records = {
        value
        for value in vars(ports).values()
        if isinstance(value, type) and issubclass(value, Command) and value is not Command
    }
    table = _handler_table()
    assert set(CALENDAR_RECORDS) <= records
    assert set(table) == records
    names = [handler.__func__.__name__ for handler in table.values()]
    assert len(set(names)) == len(names)  # no handler serves two records


class _RecordingKeeper:
    """A calendar keeper that keeps what it is asked (or refuses, as the real one may)."""

    def __init__(self, refuse: Exception | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.refuse = refuse

    async def _call(self, *args: Any) -> SiteCalendar:
        self.calls.append(args)
        if self.refuse is not None:
            raise self.refuse
        return SiteCalendar()

    async def replace(self, calendar: SiteCalendar, source: str) -> SiteCalendar:
        return await self._call("replace", calendar, source)

    async def set_entries_of(self, day_type: DayType, entries: Any, source: str) -> SiteCalendar:
        return await self._call("set", day_type, list(entries), source)

    async def add_entries(self, day_type: DayType, entries: Any, source: str) -> SiteCalendar:
        return await self._call("add", day_type, list(entries), source)

    async def remove_entries(self, day_type: DayType, entries: Any, source: str) -> SiteCalendar:
        return await self._call("remove", day_type, list(entries), source)


def _calendar_handlers(keeper: _RecordingKeeper) -> dict[type[Command[Any]], Any]:
    handlers = object.__new__(CommandHandlers)
    handlers._calendar = keeper  # type: ignore[assignment]
    return handlers.table()


def test_each_calendar_record_reaches_its_keeper_method_with_its_day_type_and_source() -> None:
    keeper = _RecordingKeeper()
    table = _calendar_handlers(keeper)
    closed = DayType.parse("closed")
    entry = parse_entry({"date": "2026-12-25", "day_type": "closed"})
    whole = SiteCalendar().with_entries([entry])
    for record in (
        ReplaceCalendar(whole, "rest"),
        SetCalendarEntries(closed, [entry]),
        AddCalendarEntries(closed, [entry]),
        RemoveCalendarEntries(closed, [entry]),
    ):
        asyncio.run(table[type(record)](record))
    assert keeper.calls == [
        ("replace", whole, "rest"),
        ("set", closed, [entry], "bacnet"),
        ("add", closed, [entry], "bacnet"),
        ("remove", closed, [entry], "bacnet"),
    ]


def test_a_refused_calendar_change_reaches_the_face_unchanged() -> None:
    refusal = CalendarError("not in the closed list")
    table = _calendar_handlers(_RecordingKeeper(refuse=refusal))
    record = RemoveCalendarEntries(DayType.parse("closed"), [])
    with pytest.raises(CalendarError) as raised:
        asyncio.run(table[RemoveCalendarEntries](record))
    assert raised.value is refusal


def test_a_calendar_writer_sends_its_day_type_with_each_change() -> None:
    port = _RecordingPort()
    closed = DayType.parse("closed")
    writer = CalendarWriter(port, closed)
    entry = parse_entry({"date": "2026-12-25", "day_type": "closed"})

    async def send() -> None:
        await writer.set_entries([entry])
        await writer.add_entries([entry])
        await writer.remove_entries([entry])

    asyncio.run(send())
    assert port.sent == [
        SetCalendarEntries(closed, [entry], "bacnet"),
        AddCalendarEntries(closed, [entry], "bacnet"),
        RemoveCalendarEntries(closed, [entry], "bacnet"),
    ]

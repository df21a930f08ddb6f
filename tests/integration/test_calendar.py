"""The site calendar over real loopback BACnet and real HTTP on one core (fake clock, migrated
SQLite): a BAS writes holidays into a Calendar object's date-list, REST shows the same calendar,
bad entries change nothing, and the stored calendar survives a restart."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Callable
from datetime import date
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from api.app import create_app
from bacnet.device import BacnetFace
from bacnet.table import BacnetPointTable
from core.clock import FakeClock
from core.config import Settings
from core.ports import ReplaceCalendar
from core.service import DsmCore
from core.storage.repository import Storage
from open_dsm.bootstrap import bacnet_writers
from tests import bacnet_wire as wire
from tests.helpers import free_port, submit_reading

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CALENDAR = 6  # BACnet object type
DATE_LIST, PRESENT_VALUE, OBJECT_NAME = 23, 85, 77
ADD_LIST_ELEMENT, REMOVE_LIST_ELEMENT = 8, 9
HOLIDAYS, LIKE_MONDAY = 1, 2  # instances: holidays-closed, runs-like-monday
OBJECT, PROPERTY, SERVICES = 1, 2, 5  # error classes
INVALID_DATA_TYPE, UNKNOWN_OBJECT, UNKNOWN_PROPERTY = 9, 31, 32
VALUE_OUT_OF_RANGE, WRITE_ACCESS_DENIED, LIST_ELEMENT_NOT_FOUND = 37, 40, 81
AUTH = {"Authorization": "Bearer s3cret"}


def _calendar_id(instance: int) -> bytes:
    return struct.pack(">I", (CALENDAR << 22) | instance)


def date_entry(year: int, month: int, day: int) -> bytes:
    """BACnetCalendarEntry date [0] (day of week unspecified)."""
    return bytes([0x0C, year - 1900, month, day, 0xFF])


def range_entry(start: date, end: date) -> bytes:
    """BACnetCalendarEntry dateRange [1] of two application-tagged dates."""

    def app_date(d: date) -> bytes:
        return bytes([0xA4, d.year - 1900, d.month, d.day, d.isoweekday()])

    return wire.opening(1) + app_date(start) + app_date(end) + wire.closing(1)


def week_n_day_entry(month: int, week: int, weekday: int) -> bytes:
    """BACnetCalendarEntry weekNDay [2] (weekday 1 = Monday)."""
    return bytes([0x2B, month, week, weekday])


def write_date_list(instance: int, entries: bytes, invoke_id: int = 1) -> bytes:
    """WriteProperty date-list (no priority)."""
    body = wire.ctx(0, _calendar_id(instance)) + wire.ctx(1, wire.unsigned(DATE_LIST))
    body += wire.opening(3) + entries + wire.closing(3)
    return wire.confirmed(15, body, invoke_id)


def change_list(service: int, instance: int, entries: bytes, invoke_id: int = 1) -> bytes:
    """AddListElement / RemoveListElement on date-list."""
    body = wire.ctx(0, _calendar_id(instance)) + wire.ctx(1, wire.unsigned(DATE_LIST))
    body += wire.opening(3) + entries + wire.closing(3)
    return wire.confirmed(service, body, invoke_id)


def read(instance: int, prop: int, invoke_id: int = 1) -> bytes:
    """ReadProperty of a Calendar object."""
    body = wire.ctx(0, _calendar_id(instance)) + wire.ctx(1, wire.unsigned(prop))
    return wire.confirmed(12, body, invoke_id)


def boolean_of(reply: wire.Reply) -> bool:
    """The Boolean value of a ReadProperty-ACK."""
    assert reply.kind == wire.COMPLEX_ACK
    at = reply.apdu.index(b"\x3e")
    tag = reply.apdu[at + 1]
    assert tag in (0x10, 0x11)
    return tag == 0x11


@contextlib.asynccontextmanager
async def running_site(
    make_core: Callable[..., DsmCore], settings: Settings
) -> AsyncIterator[tuple[DsmCore, BacnetFace, wire.WireClient, httpx.AsyncClient]]:
    """One core with its BACnet face and its REST app on loopback, on this event loop."""
    port = free_port(socket.SOCK_DGRAM)
    update: dict[str, Any] = {
        "bacnet_address": f"127.0.0.1/8:{port}",
        "device_instance": 500901,
        "api_token": SecretStr("s3cret"),
    }
    core = make_core(**update)
    await core.start()
    face = BacnetFace(settings.model_copy(update=update), "test")
    face.start(core.snapshot, bacnet_writers(core), core.reads.calendar, core)
    core.subscribe(face.sync)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(
        core,
        point_table=BacnetPointTable(settings.model_copy(update=update)),
        bacnet_bound=lambda: face.bound,
        version="test",
    )
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off", access_log=False))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    client = wire.WireClient(port)
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=10)
    try:
        await face.wait_bound(5)
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for this)
            await asyncio.sleep(0.01)
        yield core, face, client, http
    finally:
        await http.aclose()
        client.close()
        server.should_exit = True
        await serving
        sock.close()
        face.close()
        await core.stop()


async def test_a_bas_writes_a_holiday_and_reads_present_value_true_on_that_date(
    make_core: Any, settings: Settings, clock: FakeClock, storage: Storage
) -> None:
    # The fake clock starts on 2026-07-01 12:00 UTC (site zone UTC).
    async with running_site(make_core, settings) as (core, face, client, http):
        name = await client.ask(read(HOLIDAYS, OBJECT_NAME))
        assert b"holidays-closed" in name.apdu
        assert boolean_of(await client.ask(read(HOLIDAYS, PRESENT_VALUE))) is False
        entries = date_entry(2026, 7, 2) + week_n_day_entry(11, 4, 4)
        reply = await client.ask(write_date_list(HOLIDAYS, entries))
        assert reply.kind == wire.SIMPLE_ACK
        # Not today yet: present-value false; tomorrow (fake clock) it is true.
        assert boolean_of(await client.ask(read(HOLIDAYS, PRESENT_VALUE))) is False
        clock.advance(24 * 3600)
        face.sync(core.snapshot)
        assert boolean_of(await client.ask(read(HOLIDAYS, PRESENT_VALUE))) is True
        # REST shows the same calendar, and what it makes of today.
        got = (await http.get("/api/v1/calendar")).json()
        assert got["entries"] == [
            {"day_type": "closed", "date": "2026-07-02"},
            {
                "day_type": "closed",
                "week_n_day": {"month": 11, "week_of_month": 4, "weekday": "thursday"},
            },
        ]
        assert got["today"] == {"date": "2026-07-02", "day_type": "closed", "runs_like": "sunday"}
        # The read-back date-list holds both entries as BACnet encodes them.
        listed = await client.ask(read(HOLIDAYS, DATE_LIST))
        assert date_entry(2026, 7, 2) in listed.apdu and week_n_day_entry(11, 4, 4) in listed.apdu
        # Stored: the database has it (a restart reads it back).
        assert storage.load_calendar().to_dict() == core.reads.calendar.calendar.to_dict()


async def test_rest_and_bacnet_show_the_same_calendar_and_list_changes(
    make_core: Any, settings: Settings, clock: FakeClock
) -> None:
    async with running_site(make_core, settings) as (core, face, client, http):
        body = {
            "closed_like": "saturday",
            "entries": [
                {"date": "2026-07-01", "day_type": "like monday", "note": "staff day"},
                {"start": "2026-12-24", "end": "2026-12-31", "day_type": "closed"},
            ],
        }
        assert (await http.put("/api/v1/calendar", json=body)).status_code == 401
        put = await http.put("/api/v1/calendar", json=body, headers=AUTH)
        assert put.status_code == 200, put.text
        assert put.json()["today"]["runs_like"] == "monday"
        # BACnet: runs-like-monday lists today and is true; holidays-closed has the range.
        assert boolean_of(await client.ask(read(LIKE_MONDAY, PRESENT_VALUE))) is True
        assert boolean_of(await client.ask(read(HOLIDAYS, PRESENT_VALUE))) is False
        listed = await client.ask(read(HOLIDAYS, DATE_LIST))
        assert range_entry(date(2026, 12, 24), date(2026, 12, 31)) in listed.apdu
        # AddListElement adds to one day type; the REST calendar has it next.
        add = change_list(ADD_LIST_ELEMENT, HOLIDAYS, date_entry(2027, 1, 1))
        assert (await client.ask(add)).kind == wire.SIMPLE_ACK
        got = (await http.get("/api/v1/calendar")).json()
        assert {"day_type": "closed", "date": "2027-01-01"} in got["entries"]
        assert got["closed_like"] == "saturday"
        # RemoveListElement of an entry that is not listed: ChangeList-Error, nothing removed.
        missing = change_list(
            REMOVE_LIST_ELEMENT, HOLIDAYS, date_entry(2027, 1, 1) + date_entry(2027, 5, 5)
        )
        reply = await client.ask(missing)
        assert reply.kind == wire.ERROR and reply.error == (SERVICES, LIST_ELEMENT_NOT_FOUND)
        assert reply.apdu.endswith(b"\x19\x02")  # first failed element: the 2nd
        assert len(core.reads.calendar.calendar.entries) == 3
        remove = change_list(REMOVE_LIST_ELEMENT, HOLIDAYS, date_entry(2027, 1, 1))
        assert (await client.ask(remove)).kind == wire.SIMPLE_ACK
        assert len((await http.get("/api/v1/calendar")).json()["entries"]) == 2
        # Writing runs-like-monday's list replaces only its own entries.
        reply = await client.ask(write_date_list(LIKE_MONDAY, date_entry(2026, 8, 4)))
        assert reply.kind == wire.SIMPLE_ACK
        got = (await http.get("/api/v1/calendar")).json()
        assert [e.get("date") or e["start"] for e in got["entries"]] == [
            "2026-12-24",
            "2026-08-04",
        ]
        face.sync(core.snapshot)
        assert boolean_of(await client.ask(read(LIKE_MONDAY, PRESENT_VALUE))) is False


async def test_a_bad_date_or_day_type_is_a_clear_error_that_changes_nothing(
    make_core: Any, settings: Settings, storage: Storage
) -> None:
    async with running_site(make_core, settings) as (core, _face, client, http):
        good = {"entries": [{"date": "2026-07-01", "day_type": "closed"}]}
        assert (await http.put("/api/v1/calendar", json=good, headers=AUTH)).status_code == 200
        before = core.reads.calendar.calendar.to_dict()
        for bad, words in (
            ({"entries": [{"date": "2026-02-30", "day_type": "closed"}]}, "2026-02-30"),
            ({"entries": [{"date": "2026-07-04", "day_type": "like someday"}]}, "day_type"),
            (
                {"entries": [{"start": "2026-07-09", "end": "2026-07-01", "day_type": "closed"}]},
                "before",
            ),
        ):
            reply = await http.put("/api/v1/calendar", json=bad, headers=AUTH)
            assert reply.status_code == 422, reply.text
            assert words in reply.json()["detail"]
        unknown = {"entries": [{"date": "2026-07-01", "day_type": "closed", "colour": "red"}]}
        assert (await http.put("/api/v1/calendar", json=unknown, headers=AUTH)).status_code == 422
        # BACnet: 30 February (second element) answers value-out-of-range, nothing changes.
        reply = await client.ask(
            write_date_list(HOLIDAYS, date_entry(2026, 7, 3) + date_entry(2026, 2, 30))
        )
        assert reply.kind == wire.ERROR and reply.error == (PROPERTY, VALUE_OUT_OF_RANGE)
        reply = await client.ask(change_list(ADD_LIST_ELEMENT, HOLIDAYS, date_entry(2026, 2, 30)))
        assert reply.kind == wire.ERROR and reply.error == (PROPERTY, VALUE_OUT_OF_RANGE)
        # present-value is not writable.
        not_writable = write_date_list(HOLIDAYS, b"").replace(
            wire.ctx(1, wire.unsigned(DATE_LIST)), wire.ctx(1, wire.unsigned(PRESENT_VALUE))
        )
        reply = await client.ask(not_writable)
        assert reply.kind == wire.ERROR and reply.error == (PROPERTY, WRITE_ACCESS_DENIED)
        # AddListElement: garbage elements, a point that is not a list, an unknown object.
        reply = await client.ask(change_list(ADD_LIST_ELEMENT, HOLIDAYS, wire.real(1.0)))
        assert reply.kind == wire.ERROR and reply.error == (PROPERTY, INVALID_DATA_TYPE)
        on_point = change_list(ADD_LIST_ELEMENT, HOLIDAYS, date_entry(2026, 7, 9)).replace(
            wire.ctx(0, _calendar_id(HOLIDAYS)), wire.ctx(0, wire.object_id("analog-value", 1))
        )
        reply = await client.ask(on_point)  # an analog point has no date-list
        assert reply.kind == wire.ERROR and reply.error == (PROPERTY, UNKNOWN_PROPERTY)
        reply = await client.ask(change_list(ADD_LIST_ELEMENT, 99, date_entry(2026, 7, 9)))
        assert reply.kind == wire.ERROR and reply.error == (OBJECT, UNKNOWN_OBJECT)
        assert core.reads.calendar.calendar.to_dict() == before
        assert storage.load_calendar().to_dict() == before


async def test_the_served_forecasts_read_a_listed_day_as_its_type(
    make_core: Any, clock: FakeClock, storage: Storage
) -> None:
    """A site whose Mondays (8-17 h, 30 kW) and Tuesdays (11-20 h, 12 kW) differ: on a Tuesday
    listed 'like monday' the served forecast at 8:30 expects a Monday's 9:30."""
    from datetime import UTC, datetime

    import numpy as np

    from core.calendar import parse_calendar
    from core.timegrid import minute_of

    first = minute_of(datetime(2026, 6, 8, tzinfo=UTC))  # a Monday (site zone UTC)
    now = datetime(2026, 7, 7, 8, 29, 30, tzinfo=UTC)  # a Tuesday
    minutes = np.arange(first, minute_of(now), dtype=np.int64)
    hour, weekday = (minutes % 1440) / 60, (minutes // 1440 + 3) % 7
    kw = np.full(len(minutes), 5.0)
    kw[(weekday == 0) & (hour >= 8) & (hour < 17)] = 30.0
    kw[(weekday == 1) & (hour >= 11) & (hour < 20)] = 12.0
    kw[(weekday >= 2) & (hour >= 8) & (hour < 17)] = 20.0
    storage.insert_missing_minutes(first, kw, "import")
    clock.set(now)
    core = make_core()
    await core.start()
    try:

        async def served() -> tuple[float, float]:
            await submit_reading(core, 5.0)
            clock.advance(60)
            snapshot = await core.tick()
            assert snapshot.forecast is not None and snapshot.day_ahead is not None
            ten = minute_of(datetime(2026, 7, 7, 10, tzinfo=UTC)) - snapshot.day_ahead.start_minute
            return snapshot.forecast.one_hour_kw, snapshot.day_ahead.p50_kw[ten // 15]

        assert await served() == (5.0, 5.0)  # an ordinary Tuesday: closed until 11 h
        listed = parse_calendar({"entries": [{"date": "2026-07-07", "day_type": "like monday"}]})
        await core.command(ReplaceCalendar(listed, "test"))
        assert await served() == (30.0, 30.0)  # like a Monday: open since 8 h
    finally:
        await core.stop()

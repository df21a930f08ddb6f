"""One truth per commandable input, and storage faults that are reported, never hidden.

The core over a real migrated SQLite file: random BACnet writes and relinquishes at random
priorities interleaved with REST writes always leave the core, the point table (what BACnet,
REST /points and /metrics publish) and the stored minutes agreeing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event

from bacnet.points import POINTS_BY_NAME, Reliability
from core.clock import FakeClock
from core.commands import REST_PRIORITY, InputKey
from core.errors import CommandConflict, StorageUnavailable
from core.factory import build_core
from core.forecast.baseline import SeasonalMeanForecaster
from core.ports import WriteInputs
from core.service import DsmCore
from core.snapshot import Quality
from core.storage.repository import Storage
from core.timegrid import minute_of
from core.writer import DatabaseWriter
from tests.conftest import START
from tests.helpers import command_input, submit_reading

pytestmark = [pytest.mark.integration]

METER = POINTS_BY_NAME["input-power-meter"]
TARGET = POINTS_BY_NAME["demand-target"]

# One operation: ("bacnet", priority, value or None to relinquish) or ("rest", 16, value).
_values = st.floats(min_value=0.5, max_value=500.0, allow_nan=False).map(lambda v: round(v, 3))
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("bacnet"), st.integers(1, 16), st.none() | _values),
        st.tuples(st.just("rest"), st.just(REST_PRIORITY), _values),
    ),
    min_size=1,
    max_size=25,
)


def _winner(slots: dict[int, float]) -> float | None:
    return slots[min(slots)] if slots else None


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_ops, use_target=st.booleans())
def test_bacnet_and_rest_writes_agree_everywhere(settings, storage: Storage, ops, use_target):  # type: ignore[no-untyped-def]
    """After any sequence of writes, every face shows the priority-array winner."""

    async def scenario() -> None:
        clock = FakeClock(START)  # a fresh clock and core per example, one database
        core = build_core(settings, storage, clock, SeasonalMeanForecaster())
        await core.start()
        key = InputKey.DEMAND_TARGET_KW if use_target else InputKey.METER_KW
        point = TARGET if use_target else METER
        slots: dict[int, float] = {}
        held: float | None = None  # the meter holds its last value when every slot is empty
        samples: dict[int, list[float]] = {}
        for face, priority, value in ops:
            clock.advance(7)
            if face == "rest":
                conflict = bool(slots) and min(slots) < REST_PRIORITY
                if conflict:
                    with pytest.raises(CommandConflict):
                        await _rest(core, key, value)
                    continue
                await _rest(core, key, value)
            else:
                await command_input(core, key, value, priority, "bacnet")
            before = _winner(slots)
            if value is None:
                slots.pop(priority, None)
            else:
                slots[priority] = value
            winner = _winner(slots)
            if winner is None and not use_target:
                winner = held if before is None else before
            held = winner
            expected = winner
            state = core.reads.command_state(key)
            assert state.present_value == expected
            assert state.active_priority == (min(slots) if slots else None)
            published = point.value_of(core.snapshot)
            assert published == expected
            if not use_target and expected is not None:
                samples.setdefault(minute_of(clock.now()), []).append(expected)
        clock.advance(61)
        await core.tick()
        await core.writer.drain()
        if not use_target:
            stored = {row.minute: row.kw for row in storage.list_minutes(None, None, 1000)}
            for minute, values in samples.items():
                if minute < minute_of(clock.now()):
                    assert stored[minute] == pytest.approx(sum(values) / len(values))
        await core.stop()
        storage_reset(storage)

    asyncio.run(scenario())


async def _rest(core: DsmCore, key: str, value: float) -> None:
    if key == InputKey.METER_KW:
        await submit_reading(core, value)
    else:
        await core.command(WriteInputs({key: value}))


def storage_reset(storage: Storage) -> None:
    """Empty the tables between Hypothesis examples (one database for all of them)."""
    from sqlalchemy import text

    with storage.engine.begin() as conn:
        for table in ("minute_readings", "service_state", "forecast_log", "demand_intervals"):
            conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def sqlite_only(engine: Engine) -> Engine:
    """The storage-fault tests use SQLite's query_only to make the database read-only."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite query_only")
    return engine


class _FullDisk:
    """Make every new SQLite connection refuse writes (SQLITE_READONLY), as a read-only mount or a
    dead disk does; the service sees the same OperationalError as for a full disk."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.full = False
        event.listen(engine, "connect", self._on_connect)

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        if self.full:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA query_only = ON")
            cursor.close()

    def set(self, full: bool) -> None:
        self.full = full
        self.engine.dispose()  # every pooled connection reconnects under the new limit


@pytest.fixture
def full_disk(sqlite_only: Engine) -> Iterator[_FullDisk]:
    disk = _FullDisk(sqlite_only)
    yield disk
    event.remove(sqlite_only, "connect", disk._on_connect)


@pytest.mark.anyio
async def test_unwritable_database_is_reported_refused_and_nothing_acknowledged_is_lost(
    settings, storage: Storage, clock: FakeClock, full_disk: _FullDisk
):  # type: ignore[no-untyped-def]
    writer = DatabaseWriter(clock, retry_initial_s=0.05, retry_max_s=0.2)
    core = build_core(settings, storage, clock, SeasonalMeanForecaster(), writer=writer)
    await core.start()
    await core.writer.drain()
    full_disk.set(True)
    acknowledged: dict[int, float] = {}
    # Write a reading in each of 40 minutes until the writer notices the full disk (the rows of
    # closed minutes pile up behind it and the door closes).
    for _ in range(40):
        minute = minute_of(clock.now())
        try:
            await submit_reading(core, 20.0 + minute % 7)
        except StorageUnavailable:
            break
        acknowledged[minute] = 20.0 + minute % 7
        clock.advance(60)
        await core.tick()
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the read-only database was never reported")
    assert writer.fault is not None and "readonly" in writer.fault.error
    snapshot = core.snapshot
    assert snapshot.storage_fault is not None
    assert METER.reliability(snapshot) is Reliability.UNRELIABLE_OTHER
    assert METER.quality(snapshot) is Quality.STORAGE_FAULT
    assert not await core.reads.ready()
    with pytest.raises(StorageUnavailable):
        await core.command(WriteInputs({"demand_target_kw": 30.0}))
    # Writable again: the queued writes are retried and every acknowledged minute is kept.
    full_disk.set(False)
    for _ in range(100):
        await asyncio.sleep(0.05)
        if writer.fault is None and writer.pending == 0:
            break
    assert writer.fault is None
    assert core.snapshot.storage_fault is None
    assert METER.reliability(core.snapshot) is not Reliability.UNRELIABLE_OTHER
    clock.advance(60)
    await core.tick()
    await core.writer.drain()
    stored = {row.minute: row.kw for row in storage.list_minutes(None, None, 1000)}
    for minute, kw in acknowledged.items():
        assert stored[minute] == pytest.approx(kw)
    assert writer.dropped_total == 0
    assert await core.reads.ready()
    await core.stop()


@pytest.mark.anyio
async def test_rest_reading_refused_while_bacnet_priority_commands(make_core, clock):  # type: ignore[no-untyped-def]
    core = make_core()
    await core.start()
    await command_input(core, InputKey.METER_KW, 12.5, 8, "bacnet")
    clock.advance(5)
    with pytest.raises(CommandConflict, match="priority 8"):
        await submit_reading(core, 30.0)
    assert core.snapshot.input_kw == 12.5
    assert METER.present_value(core.snapshot) == 12.5
    await command_input(core, InputKey.METER_KW, 60.0, 16, "bacnet")
    await command_input(core, InputKey.METER_KW, None, 8, "bacnet")  # relinquish reaches the core
    assert core.snapshot.input_kw == 60.0
    clock.advance(5)
    await submit_reading(core, 30.0)  # REST writes priority 16 once nothing above commands
    assert core.snapshot.input_kw == 30.0
    assert core.reads.command_state(InputKey.METER_KW).priority_array[15] == 30.0
    await core.stop()


@pytest.mark.anyio
async def test_commands_off_the_loop_thread_are_refused(make_core):  # type: ignore[no-untyped-def]
    core = make_core()
    await core.start()
    with pytest.raises(RuntimeError, match="event loop thread"):
        # A worker thread (where a sync FastAPI route would run) with a loop of its own.
        await asyncio.to_thread(asyncio.run, command_input(core, InputKey.PV_POWER_KW, 1.0, 16))
    assert core.snapshot.optional_input(InputKey.PV_POWER_KW) is None
    await core.stop()


def test_timestamp_year_one_is_refused(settings) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from core.errors import InvalidReading
    from core.validation import InputValidator

    with pytest.raises(InvalidReading, match="before 2000"):
        InputValidator(settings).timestamp(datetime(1, 1, 1, tzinfo=UTC), START)
    assert InputValidator(settings).timestamp(START - timedelta(days=1), START)

"""Acknowledged means committed: a live reading's acknowledgement comes after the transaction
that holds it, so a crash at any moment (here: just after a minute boundary) loses none, and the
minute in progress is rebuilt from what was stored."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.clock import FakeClock
from core.commands import InputKey
from core.factory import build_core
from core.forecast.baseline import SeasonalMeanForecaster
from core.intake import Reading
from core.ports import SubmitReadings
from core.service import DsmCore
from core.storage.migrate import upgrade_to_head
from core.storage.repository import Storage, create_db_engine
from core.timegrid import minute_of
from core.writer import DatabaseWriter
from tests.conftest import START
from tests.helpers import command_input, submit_reading

pytestmark = pytest.mark.anyio


async def _crash(core: DsmCore) -> None:
    """Stop the writer the way a kill -9 would: nothing queued is written any more."""
    task = core.writer._task
    assert task is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("after_boundary_s", [0.03, 0.1])
async def test_a_crash_just_after_a_minute_boundary_loses_no_acknowledged_reading(  # type: ignore[no-untyped-def]
    settings, tmp_path: Path, after_boundary_s: float
):
    url = f"sqlite:///{tmp_path / 'ack.sqlite3'}"
    engine = create_db_engine(url)
    upgrade_to_head(engine)
    storage = Storage(engine)
    clock = FakeClock(START)
    core = build_core(
        settings, storage, clock, SeasonalMeanForecaster(), writer=DatabaseWriter(clock)
    )
    await core.start()
    acknowledged: dict[int, list[float]] = {}
    for second in range(0, 60, 5):  # BACnet and REST writes through one minute
        clock.set(START.replace(second=second))
        kw = 10.0 + second
        if second % 10:
            await command_input(core, InputKey.METER_KW, kw, 16)
        else:
            await core.command(SubmitReadings([Reading(kw)], "rest"))
        acknowledged.setdefault(minute_of(clock.now()), []).append(kw)
    boundary = START.replace(second=0).timestamp() + 60
    clock.set(datetime.fromtimestamp(boundary + after_boundary_s, UTC))
    await submit_reading(core, 99.0)  # closes the first minute, opens the next
    acknowledged.setdefault(minute_of(clock.now()), []).append(99.0)
    await _crash(core)  # no stop(): no flush, nothing queued written
    engine.dispose()

    engine = create_db_engine(url)
    storage = Storage(engine)
    stored = {row.minute: row for row in storage.list_minutes(None, None, 10)}
    for minute, values in acknowledged.items():
        assert stored[minute].kw == pytest.approx(sum(values) / len(values))
        assert stored[minute].sample_count == len(values)
    # The restarted core reopens the minute in progress with its stored samples.
    again = build_core(settings, storage, clock, SeasonalMeanForecaster())
    await again.start()
    await submit_reading(again, 1.0)
    await again.stop()
    current = minute_of(clock.now())
    row = {r.minute: r for r in storage.list_minutes(None, None, 10)}[current]
    assert row.sample_count == 2 and row.kw == pytest.approx((99.0 + 1.0) / 2)
    engine.dispose()


async def test_the_stored_open_minute_is_not_taken_for_an_import(  # type: ignore[no-untyped-def]
    settings, make_core, storage: Storage
):
    core = make_core()
    await core.start()
    await submit_reading(core, 12.0)  # committed: the open minute's running mean is stored
    assert storage.count_minutes() == 1
    assert await core.history.pick_up_imports() == 0
    await core.stop()

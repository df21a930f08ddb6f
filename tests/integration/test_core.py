"""The core over a real migrated SQLite file, driven by a fake clock."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import bindparam, update

from core.accuracy import DAY_AHEAD_BAND_GAMMA
from core.clock import FakeClock
from core.errors import InvalidReading
from core.intake import Reading
from core.ports import SubmitReadings, WriteInputs
from core.snapshot import Quality
from core.storage.models import MinuteReading
from core.storage.repository import Storage
from core.timegrid import minute_of
from core.trainer import base_load_series
from tests.conftest import START
from tests.helpers import submit_reading

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def _drain(core) -> None:  # type: ignore[no-untyped-def]
    await core.writer.drain()


async def test_live_writes_become_persisted_minutes(make_core, clock: FakeClock, storage: Storage):
    core = make_core()
    await core.start()
    await submit_reading(core, 10.0)
    clock.advance(20)
    await submit_reading(core, 14.0)
    clock.advance(41)  # into the next minute
    snapshot = await core.tick()
    await _drain(core)
    rows = storage.list_minutes(None, None, 10)
    assert [(r.minute, r.kw, r.sample_count) for r in rows] == [(minute_of(START), 12.0, 2)]
    assert snapshot.input_kw == 14.0
    assert snapshot.last_minute_kw == 12.0
    assert snapshot.input_quality is Quality.OK
    await core.stop()


async def test_invalid_readings_change_nothing(make_core, clock: FakeClock, storage: Storage):
    core = make_core(max_kw=100.0)
    await core.start()
    for bad in (math.nan, math.inf, -math.inf, 1e9):
        with pytest.raises(InvalidReading):
            await submit_reading(core, bad)
    with pytest.raises(InvalidReading, match="future"):
        await submit_reading(core, 5.0, START + timedelta(minutes=5))
    batch = [Reading(5.0, START - timedelta(minutes=3)), Reading(math.nan)]
    with pytest.raises(InvalidReading, match="reading 1"):
        await core.command(SubmitReadings(batch, "rest"))
    await _drain(core)
    assert storage.count_minutes() == 0
    assert core.snapshot.input_kw is None
    assert core.reads.stats.rejected == {"rest": 7}
    await core.stop()


async def test_staleness_marks_input_and_outputs_then_clears(make_core, clock: FakeClock):
    core = make_core()
    await core.start()
    assert core.snapshot.input_quality is Quality.NO_DATA
    await submit_reading(core, 10.0)
    for _ in range(3):
        clock.advance(60)
        await submit_reading(core, 10.0)
    clock.advance(61)
    snapshot = await core.tick()
    assert snapshot.input_quality is Quality.OK
    assert snapshot.rate_quality is Quality.OK
    clock.advance(300)  # last write now 361 s ago
    core.refresh_input(clock.now())
    stale = core.snapshot
    assert stale.input_quality is Quality.STALE_INPUT
    assert stale.rate_quality is Quality.STALE_INPUT
    assert stale.forecast_quality is Quality.STALE_INPUT
    assert stale.load_quality is Quality.STALE_INPUT
    await submit_reading(core, 11.0)
    assert core.snapshot.input_quality is Quality.OK  # the first fresh write clears it
    await core.stop()


async def test_history_batches_merge_by_weighted_mean(make_core, clock: FakeClock, storage):
    core = make_core()
    await core.start()
    past = START - timedelta(hours=1)
    first = await core.command(SubmitReadings([Reading(10.0, past), Reading(20.0, past)], "rest"))
    assert (first.accepted, first.live, first.historical_minutes) == (2, 0, 1)
    await core.command(SubmitReadings([Reading(40.0, past + timedelta(seconds=5))], "rest"))
    rows = storage.list_minutes(None, None, 10)
    assert [(r.kw, r.sample_count) for r in rows] == [(pytest.approx(70.0 / 3), 3)]
    await core.stop()


async def test_restart_restores_cache_snapshot_and_flag_dwell(make_core, clock, storage):
    core = make_core(flag_min_history_minutes=10)
    await core.start()
    # Twelve minutes rising from 1 to 12 kW, then a high minute.
    for minute in range(12):
        await submit_reading(core, float(minute + 1))
        clock.advance(60)
    await submit_reading(core, 50.0)
    clock.advance(60)
    before = await core.tick()
    assert before.high_load and before.load_quality is Quality.OK
    await core.stop()

    clock.advance(30)
    again = make_core(flag_min_history_minutes=10)
    await again.start()
    restored = again.snapshot
    assert restored.high_load and restored.input_kw == 50.0
    assert restored.computed_at == before.computed_at
    assert again.reads.held_minute(minute_of(START)).meter_kw == 1.0
    # The high flag was set less than 15 minutes ago: it may not drop yet.
    await submit_reading(again, 1.0)
    clock.advance(60)
    assert (await again.tick()).high_load
    await again.stop()


async def test_forecast_uses_two_weeks_of_history_and_scores_itself(make_core, clock, storage):
    core = make_core()
    # Two weeks and a bit of a daily sine, stored as history through the batch path.
    start = START - timedelta(days=15)
    minutes = int((START - start).total_seconds() // 60)
    values = 10 + 5 * np.sin(np.arange(minutes) * 2 * np.pi / 1440)
    readings = [
        Reading(float(v), start + timedelta(minutes=i, seconds=10)) for i, v in enumerate(values)
    ]
    await core.start()
    await core.command(SubmitReadings(readings, "import"))
    await core.stop()
    core = make_core()
    await core.start()
    for _ in range(70):
        phase = (minute_of(clock.now()) - minute_of(start)) * 2 * np.pi / 1440
        await submit_reading(core, float(10 + 5 * np.sin(phase)))
        clock.advance(60)
        await core.tick()
    snapshot = core.snapshot
    assert snapshot.forecast is not None and snapshot.forecast_quality is Quality.OK
    assert snapshot.forecast.forecaster == "mean-2-weeks"
    target = minute_of(clock.now()) - 1 + 60
    expected = 10 + 5 * np.sin((target - minute_of(start)) * 2 * np.pi / 1440)
    assert snapshot.forecast.one_hour_kw == pytest.approx(expected, abs=1e-6)
    # Ten forecasts have matured; the live RMSE needs 60 before it reports.
    assert snapshot.model.live_rmse_samples == 10
    assert snapshot.model.rmse_kw is None
    # The 15-minute blocks that closed scored the day-ahead bands served before them (one
    # forecast per block); each outcome moved the band's scale by the stated step.
    band = core.reads.band("mean-2-weeks", day_ahead=True)
    assert band.outcomes > 0 and snapshot.model.day_ahead_band_coverage == band.coverage()
    drift = band.outcomes - band.inside - 0.2 * band.outcomes
    assert snapshot.model.day_ahead_band_scale == pytest.approx(
        math.exp(DAY_AHEAD_BAND_GAMMA * drift)
    )
    # The published band: each side at least 10 % of the point, times the scale (the daily
    # sine repeats exactly, so the seasonal range itself has zero width).
    served = snapshot.day_ahead
    assert served is not None and served.p10_kw is not None and served.p90_kw is not None
    scale = snapshot.model.day_ahead_band_scale
    floor = 0.1 * scale * np.abs(served.p50_kw)
    assert np.all(np.subtract(served.p50_kw, served.p10_kw) >= floor - 1e-9)
    assert np.all(np.subtract(served.p90_kw, served.p50_kw) >= floor - 1e-9)
    assert np.all(np.subtract(served.p90_kw, served.p10_kw) > 0.0)
    await core.stop()


async def test_demand_intervals_peak_target_and_restart(make_core, clock, storage) -> None:
    core = make_core(demand_target_kw=20.0)
    await core.start()
    # Align to a quarter hour, then 15 minutes at 10 kW and 15 minutes at 30 kW.
    clock.set(START.replace(minute=0))
    for minute in range(30):
        await submit_reading(core, 10.0 if minute < 15 else 30.0)
        clock.advance(60)
        await core.tick()
    await core.writer.drain()
    intervals = storage.list_intervals(None, None, 10)
    assert [(i.average_kw, i.complete) for i in intervals] == [(10.0, True), (30.0, True)]
    demand = core.snapshot.demand
    assert demand is not None
    assert demand.period_peak_kw == 30.0
    assert demand.target_kw == 20.0
    assert demand.effective_target_kw == 30.0  # never chase a peak already paid for
    # The operator lowers the target; a bad one is refused and changes nothing.
    with pytest.raises(InvalidReading):
        await core.command(WriteInputs({"demand_target_kw": -5.0}))
    await core.command(WriteInputs({"demand_target_kw": 25.0}))
    assert core.snapshot.demand_target_kw == 25.0
    # Optional inputs are validated against their ranges.
    with pytest.raises(InvalidReading, match="battery_soc_pct 150"):
        await core.command(WriteInputs({"battery_soc_pct": 150.0}))
    await core.command(WriteInputs({"pv_power_kw": 3.5}))
    assert core.snapshot.optional_input("pv_power_kw") == 3.5
    await core.stop()

    again = make_core(demand_target_kw=20.0)
    await again.start()
    restored = await again.tick()
    assert restored.demand is not None
    assert restored.demand.period_peak_kw == 30.0
    assert restored.demand_target_kw == 25.0  # the operator's target survives a restart
    await again.stop()


async def test_outdoor_air_is_stored_beside_each_closed_minute(make_core, clock, storage) -> None:
    core = make_core()
    await core.start()
    await core.command(WriteInputs({"outdoor_air_temp": 91.5}))
    await submit_reading(core, 10.0)
    clock.advance(61)
    await core.tick()
    await core.writer.drain()
    minutes, temps = storage.load_outdoor_air(minute_of(START) - 5, minute_of(START) + 5)
    assert list(minutes) == [minute_of(START)] and list(temps) == [91.5]
    with pytest.raises(InvalidReading, match="outdoor_air_temp"):
        await core.command(WriteInputs({"outdoor_air_temp": 500.0}))
    await core.stop()


async def test_the_forecasters_see_the_meter_less_the_battery_it_dispatched(
    make_core, clock, storage
) -> None:
    """Two weeks in which a battery shaved every afternoon by 4 kW: the meter peaked at 11 kW, the
    building at 15. The forecasts, the training data and the live score are of the building."""
    start = START - timedelta(days=15)
    span = int((START - start).total_seconds() // 60)
    first = minute_of(start)

    def base(minute: int) -> float:
        return float(10 + 5 * np.sin((minute - first) * 2 * np.pi / 1440))

    shaved = {m: -4.0 for m in range(first, first + span) if base(m) > 11}
    meter = np.array([base(m) + shaved.get(m, 0.0) for m in range(first, first + span)])
    storage.insert_missing_minutes(first, meter, "live")
    # As the live path stores them (upsert_minutes with dispatched=), in one statement.
    table = MinuteReading.__table__
    with storage.engine.begin() as conn:
        conn.execute(
            update(table)
            .where(table.c.minute == bindparam("m"))
            .values(dispatched_kw=bindparam("own")),
            [{"m": m, "own": kw} for m, kw in shaved.items()],
        )
    core = make_core(has_battery=True, battery_capacity_kwh=20.0, battery_charge_kw=10.0)
    await core.start()
    for _ in range(70):
        minute = minute_of(clock.now())
        own = shaved.get(minute - 1440, 0.0)  # the same shaving as the day before
        await core.command(WriteInputs({"battery_power_kw": own}))
        await submit_reading(core, base(minute) + own)
        clock.advance(60)
        await core.tick()
    await core.writer.drain()
    snapshot = core.snapshot
    origin = minute_of(clock.now()) - 1
    assert snapshot.forecast is not None and snapshot.forecast.forecaster == "mean-2-weeks"
    assert snapshot.forecast.one_hour_kw == pytest.approx(base(origin + 60), abs=1e-6)
    day = snapshot.day_ahead
    assert day is not None
    # The building's afternoon peak (15 kW), not the shaved meter's (11 kW).
    assert max(day.p50_kw) > 14.5
    # Each live minute is stored with the battery power written for it.
    minutes, own_kw = storage.load_dispatched(minute_of(START), origin)
    expected = {m: shaved.get(m - 1440, 0.0) for m in range(minute_of(START), origin + 1)}
    assert dict(zip(minutes.tolist(), own_kw.tolist(), strict=True)) == pytest.approx(expected)
    # The live score compares the forecast with the building, so it is exact here.
    assert snapshot.model.live_rmse_samples == 10
    assert max(abs(error) for error in core.reads.live_errors_kw) < 1e-6
    # Training reads the same base load.
    minutes, values = base_load_series(storage, first, origin)
    assert np.allclose(values, [base(m) for m in minutes.tolist()])
    # Without a battery measurement, the plan's own setpoint is what the battery was told to do.
    await core.command(WriteInputs({"battery_power_kw": None}))
    clock.advance(30 * 60)  # the last measurement goes stale
    await submit_reading(core, 12.0)
    await core.tick()
    assert core.snapshot.dispatch is not None
    setpoint = core.snapshot.dispatch.setpoint_kw
    clock.advance(60)
    await submit_reading(core, 12.0)  # closes the minute the setpoint was in force
    await core.writer.drain()
    minutes, own_kw = storage.load_dispatched(origin + 1, minute_of(clock.now()))
    assert own_kw[-1] == pytest.approx(setpoint)
    await core.stop()
    # A restart restores what was dispatched along with the meter.
    again = make_core(has_battery=True, battery_capacity_kwh=20.0, battery_charge_kw=10.0)
    await again.start()
    assert again.reads.held_minute(minutes[-1]).base_load_kw == pytest.approx(12.0 - setpoint)
    await again.stop()


async def test_the_open_minute_flushed_at_stop_keeps_its_outdoor_air_and_battery(
    make_core, clock, storage
) -> None:
    core = make_core()
    await core.start()
    await core.command(WriteInputs({"outdoor_air_temp": 88.0, "battery_power_kw": -3.0}))
    await submit_reading(core, 10.0)
    await core.stop()  # the minute is still open: its partial mean is flushed
    minute = minute_of(START)
    assert list(zip(*storage.load_outdoor_air(minute, minute), strict=True)) == [(minute, 88.0)]
    assert list(zip(*storage.load_dispatched(minute, minute), strict=True)) == [(minute, -3.0)]


async def test_a_running_service_picks_up_an_import(make_core, clock, storage) -> None:
    """``open-dsm import`` writes the database directly while the service runs: the next check
    adds the imported minutes (and outdoor air) to the cache, and live minutes keep their values."""
    core = make_core()
    await core.start()
    await submit_reading(core, 10.0)
    clock.advance(60)
    await core.tick()
    live = minute_of(START)
    assert await core.history.pick_up_imports() == 0  # nothing new
    # Two weeks before now, imported behind the service's back, overlapping the live minute.
    first = live - 14 * 1440
    values = np.full(14 * 1440 + 1, 7.0)
    storage.insert_missing_minutes(first, values, "import")
    storage.upsert_weather({first: 70.0, first + 1: 71.0})
    assert core.snapshot.forecast is None or core.snapshot.forecast.one_hour_kw != 7.0
    assert await core.history.pick_up_imports() == 14 * 1440
    assert core.reads.held_minute(first).meter_kw == 7.0
    assert core.reads.held_minute(live).meter_kw == 10.0  # the live minute wins
    assert core.reads.held_minute(first + 1).outdoor_air_temp == 71.0
    await submit_reading(core, 10.0)
    clock.advance(60)
    snapshot = await core.tick()
    assert snapshot.forecast is not None
    assert snapshot.forecast.one_hour_kw == pytest.approx(7.0)  # the imported day before
    assert await core.history.pick_up_imports() == 0
    await core.stop()

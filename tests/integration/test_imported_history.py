"""Imported history over a real migrated file: it seeds the billing-period peak, fills the month
view and gets the forecasts the served forecaster would have made (marked replayed)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import bindparam, update

from core.clock import FakeClock
from core.storage.models import MinuteReading
from core.storage.repository import Storage
from core.timegrid import minute_of, minute_start
from tests.conftest import START

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

# START is 2026-07-01 12:00 UTC; the site is on UTC with the billing cycle on the 1st.
PERIOD_START = START.replace(hour=0)
SPIKE = PERIOD_START + timedelta(hours=3)  # 03:00-03:15: the period's peak, 50 kW
OLD_SPIKE = PERIOD_START - timedelta(hours=5)  # last period's 80 kW: must not count


def _imported(storage: Storage) -> tuple[int, np.ndarray]:
    first = minute_of(START - timedelta(days=20))
    last = minute_of(START) - 1
    minutes = np.arange(first, last + 1)
    kw = 10.0 + 2.0 * np.sin(minutes * 2 * np.pi / 1440)
    for at, value in ((SPIKE, 50.0), (OLD_SPIKE, 80.0)):
        lo = minute_of(at)
        kw[(minutes >= lo) & (minutes < lo + 15)] = value
    storage.insert_missing_minutes(first, kw, "import")
    return first, kw


async def test_imported_minutes_seed_the_peak_and_the_month(make_core, storage: Storage) -> None:
    first, kw = _imported(storage)
    core = make_core(demand_target_kw=30.0)
    await core.start()
    await core.writer.drain()
    # The period peak is the imported 03:00 interval, not last period's 80 kW.
    month = await core.reads.month()
    assert month.billed_peak_kw == pytest.approx(50.0)
    assert month.billed_peak_start_minute == minute_of(SPIKE)
    assert month.demand_charge == pytest.approx(50.0 * 15.0)
    in_period = kw[minute_of(PERIOD_START) - first :]
    assert month.measured_minutes == len(in_period)
    assert month.energy_kwh == pytest.approx(float(in_period.sum()) / 60.0)
    assert month.energy_cost == pytest.approx(month.energy_kwh * 0.10)
    assert month.top_intervals[0].start_minute == minute_of(SPIKE)
    assert [p.kw for p in month.daily_peaks] == [pytest.approx(50.0)]
    assert month.dispatch_saving_kw is None  # no battery dispatched
    stored = storage.list_intervals(minute_of(PERIOD_START), None, 1000)
    assert len(stored) == 12 * 4  # 00:00 .. 12:00 in 15-minute intervals
    peak_row = max(stored, key=lambda row: row.average_kw)
    assert peak_row.start_minute == minute_of(SPIKE) and peak_row.counted_for_peak

    # The tracker the BACnet point and /demand read has the same peak after a tick.
    snapshot = await core.tick()
    assert snapshot.demand is not None
    assert snapshot.demand.period_peak_kw == pytest.approx(50.0)
    assert snapshot.demand.period_peak_start_minute == minute_of(SPIKE)
    await core.stop()


async def test_month_counts_what_the_battery_took_off(make_core, storage: Storage) -> None:
    _imported(storage)
    # The battery discharged 20 kW during the spike: the building drew 70, the meter 50.
    table = MinuteReading.__table__
    with storage.engine.begin() as conn:
        conn.execute(
            update(table).where(table.c.minute == bindparam("m")).values(dispatched_kw=-20.0),
            [{"m": m} for m in range(minute_of(SPIKE), minute_of(SPIKE) + 15)],
        )
    core = make_core(has_battery=True, battery_capacity_kwh=40.0, battery_charge_kw=20.0)
    await core.start()
    month = await core.reads.month()
    assert month.billed_peak_kw == pytest.approx(50.0)
    assert month.peak_without_dispatch_kw == pytest.approx(70.0)
    assert month.dispatch_saving_kw == pytest.approx(20.0)
    assert month.dispatch_saving == pytest.approx(20.0 * 15.0)
    assert month.dispatched_minutes == 15
    await core.stop()


async def test_replayed_forecasts_fill_the_last_day(
    make_core, clock: FakeClock, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The replay yields the loop after every forecast here (slice_s=0); its pause between slices
    # is for the service's other work, and only makes this test wait.
    monkeypatch.setattr("core.history.REPLAY_PAUSE_S", 0.0)
    _imported(storage)
    core = make_core()
    await core.start()
    now_minute = minute_of(clock.now())
    # A forecast logged live for one target minute is kept as it is.
    live_target = now_minute - 30
    storage.log_forecast(live_target, "live-one", 1.5, minute_start(live_target - 59))
    count = await core.history.replay_forecasts(slice_s=0.0)
    assert count == 24 * 60 + 60 - 2  # targets now-1440 .. now+58, less the live one
    rows = storage.forecast_log_between(now_minute - 1440, now_minute + 60, 5000)
    assert len(rows) == count + 1
    for row in rows:
        if row.target_minute == live_target:
            assert not row.replayed and row.forecaster == "live-one"
            continue
        assert row.replayed and row.forecaster == "mean-2-weeks"
        lead = minute_start(row.target_minute) - row.made_at
        assert lead == timedelta(minutes=59)
        assert np.isfinite(row.kw)
    # The live error ignores replayed forecasts; replaying again replaces, never duplicates.
    assert storage.forecasts_since(now_minute - 1440) == [(live_target, 1.5)]
    assert await core.history.replay_forecasts() == count
    assert len(storage.forecast_log_between(now_minute - 1440, now_minute + 60, 5000)) == count + 1
    # A live forecast for a replayed minute replaces it.
    storage.log_forecast(now_minute + 10, "live-two", 2.0, minute_start(now_minute - 49))
    row = next(
        r
        for r in storage.forecast_log_between(now_minute + 10, now_minute + 11, 5)
        if r.target_minute == now_minute + 10
    )
    assert not row.replayed and row.forecaster == "live-two"
    await core.stop()

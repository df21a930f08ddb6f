"""The month view's vectorised intervals equal the demand tracker's, and its money adds up."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from core.demand import DemandConfig
from core.dispatch.assets import Tariff
from core.month import fixed_intervals, month_summary, period_intervals
from core.timegrid import minute_of


@pytest.mark.parametrize("zone", ["America/Chicago", "Asia/Kolkata", "UTC"])
@pytest.mark.parametrize("length", [15, 30])
def test_fixed_intervals_match_the_tracker(zone: str, length: int) -> None:
    """Across a DST change (Chicago, 3 Nov 2024) and a billing-period start, with gaps."""
    config = DemandConfig(timezone=ZoneInfo(zone), interval_minutes=length, billing_cycle_day=2)
    start = minute_of(datetime(2024, 10, 31, 3, 7, tzinfo=UTC))
    rng = np.random.default_rng(7)
    values = 10 + rng.random(6 * 1440 + 11) * 20
    values[rng.random(len(values)) < 0.2] = np.nan  # scattered gaps
    values[2000:2100] = np.nan  # a long one
    fast = fixed_intervals(start, values, config)
    slow = period_intervals(start, values, config)
    # The tracker also closes the last interval when its last minute is there; the fast one
    # leaves an interval out only while it has not ended.
    slow = [i for i in slow if i.start_minute + length <= start + len(values)]
    assert [i.start_minute for i in fast] == [i.start_minute for i in slow]
    for a, b in zip(fast, slow, strict=True):
        assert a.average_kw == pytest.approx(b.average_kw)
        assert (a.observed_minutes, a.complete, a.period_start_minute) == (
            b.observed_minutes,
            b.complete,
            b.period_start_minute,
        )
        assert a.counted_for_peak == (b.observed_minutes * 100 / length >= 50.0)


def test_month_summary_charges_and_battery_saving() -> None:
    tz = ZoneInfo("America/Chicago")
    config = DemandConfig(timezone=tz, interval_minutes=15)
    start = minute_of(datetime(2026, 12, 1, 6, 0, tzinfo=UTC))  # local midnight, 1 Dec
    minutes = 2 * 1440
    meter = np.full(minutes, 10.0)
    own = np.full(minutes, np.nan)
    meter[600:615] = 30.0  # the peak: the battery discharged 5 kW in it (building: 35)
    own[600:615] = -5.0
    meter[1995:2010] = 32.0  # a higher interval, but the battery charged 4 kW in it (base 28)
    own[1995:2010] = 4.0
    tariff = Tariff(demand_charge_per_kw=12.0, tou_prices=((0, 0.1), (14, 0.3)))
    now = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
    summary = month_summary(start, meter, own, config, tariff, now, None)
    assert summary.billed_peak_kw == pytest.approx(32.0)
    assert summary.billed_peak_start_minute == start + 1995
    assert summary.demand_charge == pytest.approx(32.0 * 12.0)
    assert summary.peak_without_dispatch_kw == pytest.approx(35.0)
    assert summary.dispatch_saving_kw == pytest.approx(3.0)
    assert summary.dispatch_saving == pytest.approx(36.0)
    assert summary.energy_kwh == pytest.approx(float(meter.sum()) / 60.0)
    local_hours = np.array(
        [datetime.fromtimestamp((start + m) * 60, UTC).astimezone(tz).hour for m in range(minutes)]
    )
    prices = np.where(local_hours >= 14, 0.3, 0.1)
    assert summary.energy_cost == pytest.approx(float((meter / 60.0 * prices).sum()))
    assert [round(p.kw, 3) for p in summary.daily_peaks] == [30.0, 32.0]
    assert summary.top_intervals[0].average_kw == pytest.approx(32.0)
    # The live tracker's higher peak wins.
    tracked = month_summary(start, meter, own, config, tariff, now, (40.0, start + 100))
    assert tracked.billed_peak_kw == 40.0 and tracked.billed_peak_start_minute == start + 100

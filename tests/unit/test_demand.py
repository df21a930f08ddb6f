"""Unit tests of the pure demand-charge domain (core.demand); explicit timestamps only."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from core.demand import (
    ClosedInterval,
    DemandConfig,
    DemandTracker,
    OptionalInputs,
    ProjectionMethod,
    Quality,
    Reading,
    WindowMode,
    allowance_kw,
    base_load_kw,
    billing_period,
    elapsed_minutes_kw,
    gross_load_kw,
    interval_start_minute,
    probability_of_exceedance,
    sigma_from_band_kw,
    value_if_fresh,
)
from core.forecast.base import Forecast
from core.timegrid import minute_of, minute_start

NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")
# 2024-06-03 10:00 UTC, the start of a 5/15/30-minute interval on a UTC site.
S = minute_of(datetime(2024, 6, 3, 10, 0, tzinfo=UTC))
NO_INPUTS = OptionalInputs()


def at(minute: int) -> datetime:
    """A moment a few seconds into ``minute`` (how the service calls evaluate)."""
    return minute_start(minute) + timedelta(seconds=5)


def forecast(
    origin: int, kw: float | list[float], band_kw: tuple[float, float] | None = None
) -> Forecast:
    """A 60-minute forecast from ``origin``: flat ``kw`` or a list, optional (p10, p90) offsets."""
    values = tuple(kw) if isinstance(kw, list) else (kw,) * 60
    p10 = p90 = None
    if band_kw is not None:
        p10 = tuple(v + band_kw[0] for v in values)
        p90 = tuple(v + band_kw[1] for v in values)
    return Forecast("test", minute_start(origin), origin, values, p10, p90)


def feed(tracker: DemandTracker, start: int, values_kw: list[float]) -> list[ClosedInterval]:
    """Observe consecutive minutes from ``start``; return every interval they closed."""
    closed: list[ClosedInterval] = []
    for offset, kw in enumerate(values_kw):
        closed.extend(tracker.observe_minute(start + offset, kw))
    return closed


def fresh(value: float, minute: int) -> Reading:
    return Reading(value, at(minute))


# -- interval alignment ------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "expected_start_min"), [(5, 5), (15, 0), (30, 0)])
def test_fixed_intervals_align_to_the_clock(length: int, expected_start_min: int) -> None:
    minute = minute_of(datetime(2024, 6, 3, 10, 7, tzinfo=UTC))
    expected = minute_of(datetime(2024, 6, 3, 10, expected_start_min, tzinfo=UTC))
    assert interval_start_minute(minute, length, ZoneInfo("UTC")) == expected


@pytest.mark.parametrize("length", [5, 15, 30])
def test_fixed_intervals_align_to_the_local_clock_not_utc(length: int) -> None:
    # Kolkata is UTC+5:30: 04:37 UTC is 10:07 local, so intervals start at local 10:00/10:05.
    minute = minute_of(datetime(2024, 6, 3, 4, 37, tzinfo=UTC))
    local_start = 10 * 60 + (7 // length) * length
    expected = minute_of(datetime(2024, 6, 3, local_start // 60, local_start % 60, tzinfo=KOLKATA))
    assert interval_start_minute(minute, length, KOLKATA) == expected
    # The UTC-aligned answer would be different for 15 and 30 (04:30 is local 10:00).
    if length == 30:
        assert expected == minute_of(datetime(2024, 6, 3, 4, 30, tzinfo=UTC))


def test_fixed_intervals_stay_contiguous_across_dst_fall_back() -> None:
    # New York, 2024-11-03: 02:00 EDT (06:00 UTC) becomes 01:00 EST; the 01:xx hour repeats.
    first = minute_of(datetime(2024, 11, 3, 4, 0, tzinfo=UTC))
    starts = sorted({interval_start_minute(m, 15, NEW_YORK) for m in range(first, first + 240)})
    assert len(starts) == 16
    assert all(b - a == 15 for a, b in itertools.pairwise(starts))
    # 06:05 UTC is 01:05 EST (second pass): its interval starts at 06:00 UTC, not 05:00 UTC.
    assert interval_start_minute(first + 125, 15, NEW_YORK) == first + 120
    tracker = DemandTracker(DemandConfig(timezone=NEW_YORK, interval_minutes=15))
    closed = feed(tracker, first, [100.0] * 240)
    assert [c.start_minute for c in closed] == starts
    assert all(c.complete and c.average_kw == 100.0 for c in closed)


def test_fixed_intervals_across_dst_spring_forward() -> None:
    # 2024-03-10 07:00 UTC: 02:00 EST becomes 03:00 EDT; 07:10 UTC is 03:10 EDT.
    minute = minute_of(datetime(2024, 3, 10, 7, 10, tzinfo=UTC))
    assert interval_start_minute(minute, 30, NEW_YORK) == minute - 10
    assert interval_start_minute(minute - 11, 30, NEW_YORK) == minute - 40  # 01:59 EST -> 01:30


def test_fixed_interval_length_must_divide_the_hour() -> None:
    with pytest.raises(ValueError, match="divide 60"):
        DemandConfig(interval_minutes=7)
    assert DemandConfig(interval_minutes=7, window=WindowMode.SLIDING).interval_minutes == 7


# -- averages, projections, allowance ----------------------------------------------------------


def test_average_so_far_projection_and_allowance_with_forecast() -> None:
    tracker = DemandTracker(DemandConfig(target_kw=130.0))
    observed = [100.0, 110.0, 120.0, 130.0, 140.0]
    feed(tracker, S, observed)
    snap = tracker.evaluate(at(S + 5), forecast(S + 4, 150.0), NO_INPUTS)
    iv = snap.interval
    assert iv.start_minute == S
    assert (iv.elapsed_minutes, iv.observed_minutes, iv.remaining_minutes) == (5, 5, 10)
    assert iv.average_so_far_kw == pytest.approx(sum(observed) / 5)
    assert iv.projection is ProjectionMethod.FORECAST
    assert iv.projected_kw == pytest.approx((sum(observed) + 150.0 * 10) / 15)
    assert iv.allowance_kw == pytest.approx((130.0 * 15 - sum(observed)) / 10)
    assert snap.decisions.kw_to_shed == pytest.approx((600.0 + 1500.0) / 15 - 130.0)
    assert snap.decisions.quality["kw_to_shed"] is Quality.GOOD


def test_projection_without_forecast_holds_the_latest_minute() -> None:
    tracker = DemandTracker(DemandConfig(target_kw=130.0))
    feed(tracker, S, [100.0, 110.0, 120.0, 130.0, 140.0])
    snap = tracker.evaluate(at(S + 5), None, NO_INPUTS)
    assert snap.interval.projection is ProjectionMethod.HELD
    assert snap.interval.projected_kw == pytest.approx((600.0 + 140.0 * 10) / 15)
    assert snap.decisions.kw_to_shed == pytest.approx(2000.0 / 15 - 130.0)
    assert snap.decisions.quality["kw_to_shed"] is Quality.DEGRADED
    assert any("no forecast" in note for note in snap.notes)
    assert snap.next_hour_peak_kw is None
    assert snap.p_exceed_interval is None


def test_stale_forecast_is_ignored_for_the_held_projection() -> None:
    tracker = DemandTracker(DemandConfig(target_kw=130.0, forecast_max_age_minutes=5))
    feed(tracker, S, [100.0] * 10)
    snap = tracker.evaluate(at(S + 10), forecast(S + 3, 500.0), NO_INPUTS)
    assert snap.interval.projection is ProjectionMethod.HELD
    assert snap.interval.projected_kw == pytest.approx(100.0)
    assert any("forecast stale (6 min old)" in note for note in snap.notes)


def test_allowance_pure_function() -> None:
    assert allowance_kw(100.0, 15, 1000.0, 5) == pytest.approx((1500.0 - 1000.0) / 5)
    assert allowance_kw(100.0, 15, 1600.0, 5) == pytest.approx(-20.0)  # target already lost
    assert allowance_kw(100.0, 15, 1500.0, 0) is None  # nothing left to allocate


def test_gap_minutes_do_not_count_and_mark_the_interval_incomplete() -> None:
    tracker = DemandTracker(DemandConfig())
    tracker.observe_minute(S, 100.0)
    tracker.observe_minute(S + 1, 200.0)
    tracker.observe_minute(S + 3, 300.0)  # S + 2 is a gap
    snap = tracker.evaluate(at(S + 4), None, NO_INPUTS)
    assert snap.interval.average_so_far_kw == pytest.approx(200.0)
    assert snap.interval.observed_minutes == 3
    # The gap is taken at the observed mean: 4 * 200 elapsed, then 11 minutes held at 300.
    assert snap.interval.projected_kw == pytest.approx((4 * 200.0 + 11 * 300.0) / 15)
    closed = feed(tracker, S + 4, [100.0] * 11)
    assert len(closed) == 1
    assert closed[0].observed_minutes == 14
    assert not closed[0].complete
    assert closed[0].average_kw == pytest.approx((600.0 + 1100.0) / 14)


def test_close_due_closes_an_interval_whose_last_minute_never_came() -> None:
    tracker = DemandTracker(DemandConfig())
    feed(tracker, S, [120.0] * 10)
    assert tracker.close_due(at(S + 14)) == []
    closed = tracker.close_due(at(S + 16))
    assert [(c.start_minute, c.observed_minutes, c.average_kw) for c in closed] == [(S, 10, 120.0)]
    assert tracker.period_peak_kw == 120.0


def test_out_of_order_and_non_finite_minutes_are_ignored() -> None:
    tracker = DemandTracker(DemandConfig())
    feed(tracker, S, [100.0, 100.0])
    assert tracker.observe_minute(S, 900.0) == []
    assert tracker.observe_minute(S + 2, math.nan) == []
    snap = tracker.evaluate(at(S + 2), None, NO_INPUTS)
    assert snap.interval.average_so_far_kw == 100.0


# -- billing period and peak -------------------------------------------------------------------


def test_billing_period_follows_the_local_cycle_day() -> None:
    period = billing_period(datetime(2024, 3, 20, 12, tzinfo=UTC), NEW_YORK, 15)
    assert period.start == datetime(2024, 3, 15, 4, tzinfo=UTC)  # local midnight, EDT
    assert period.end == datetime(2024, 4, 15, 4, tzinfo=UTC)
    # 03:59 UTC on the 15th is still the 14th in New York: the previous period (EST start).
    before = billing_period(datetime(2024, 3, 15, 3, 59, tzinfo=UTC), NEW_YORK, 15)
    assert before.start == datetime(2024, 2, 15, 5, tzinfo=UTC)
    assert before.end == period.start
    january = billing_period(datetime(2024, 1, 10, tzinfo=UTC), ZoneInfo("UTC"), 15)
    assert january.start == datetime(2023, 12, 15, tzinfo=UTC)


def test_peak_is_tracked_and_reset_on_the_cycle_day() -> None:
    tracker = DemandTracker(DemandConfig(billing_cycle_day=1))
    last_hour = minute_of(datetime(2024, 1, 31, 23, 0, tzinfo=UTC))
    closed = feed(tracker, last_hour, [100.0] * 15 + [120.0] * 15 + [110.0] * 15)
    assert [c.average_kw for c in closed] == [100.0, 120.0, 110.0]
    assert tracker.period_peak_kw == 120.0
    assert tracker.period_peak_start_minute == last_hour + 15
    jan_snap = tracker.evaluate(at(last_hour + 50), None, NO_INPUTS)
    assert jan_snap.period_peak_kw == 120.0
    assert jan_snap.period.start == datetime(2024, 1, 1, tzinfo=UTC)

    feb = minute_of(datetime(2024, 2, 1, tzinfo=UTC))
    closed = feed(tracker, last_hour + 45, [115.0] * 15 + [90.0] * 15)
    assert closed[0].period_start_minute == minute_of(datetime(2024, 1, 1, tzinfo=UTC))
    assert closed[1].period_start_minute == feb
    assert tracker.period_peak_kw == 90.0
    assert tracker.period_peak_start_minute == feb
    snap = tracker.evaluate(at(feb + 20), None, NO_INPUTS)
    assert snap.period_peak_kw == 90.0
    assert snap.period.start == datetime(2024, 2, 1, tzinfo=UTC)


def test_evaluate_in_a_new_period_forgets_the_old_peak() -> None:
    tracker = DemandTracker(DemandConfig(target_kw=50.0))
    jan = minute_of(datetime(2024, 1, 31, 23, 0, tzinfo=UTC))
    feed(tracker, jan, [120.0] * 15)
    feb = minute_of(datetime(2024, 2, 1, tzinfo=UTC))
    snap = tracker.evaluate(at(feb), None, NO_INPUTS)
    assert snap.period_peak_kw is None
    assert snap.effective_target_kw == 50.0


def test_short_intervals_do_not_set_the_peak() -> None:
    tracker = DemandTracker(DemandConfig(peak_min_coverage_pct=50.0))
    tracker.observe_minute(S, 500.0)  # 1 of 15 minutes
    closed = tracker.observe_minute(S + 15, 100.0)
    assert closed[0].average_kw == 500.0
    assert not closed[0].counted_for_peak
    assert tracker.period_peak_kw is None


# -- target, shed, chiller ---------------------------------------------------------------------


@pytest.mark.parametrize("ratchet", [True, False])
def test_effective_target_is_the_peak_already_paid_for(ratchet: bool) -> None:
    config = DemandConfig(target_kw=100.0, ratchet_to_period_peak=ratchet)
    tracker = DemandTracker(config)
    feed(tracker, S, [120.0] * 15 + [125.0] * 5)
    snap = tracker.evaluate(at(S + 20), forecast(S + 19, 133.0), NO_INPUTS)
    projected = (5 * 125.0 + 10 * 133.0) / 15
    assert snap.interval.projected_kw == pytest.approx(projected)
    effective = 120.0 if ratchet else 100.0
    assert snap.effective_target_kw == effective
    assert snap.target_kw == 100.0
    assert snap.decisions.kw_to_shed == pytest.approx(projected - effective)


def test_no_shed_when_under_target_and_set_target() -> None:
    tracker = DemandTracker(DemandConfig(target_kw=200.0))
    feed(tracker, S, [100.0] * 5)
    assert tracker.evaluate(at(S + 5), forecast(S + 4, 150.0), NO_INPUTS).decisions.kw_to_shed == 0
    tracker.set_target(120.0)
    snap = tracker.evaluate(at(S + 5), forecast(S + 4, 150.0), NO_INPUTS)
    assert snap.decisions.kw_to_shed == pytest.approx((500.0 + 1500.0) / 15 - 120.0)


def test_no_target_means_no_shedding() -> None:
    tracker = DemandTracker(DemandConfig())
    feed(tracker, S, [100.0] * 5)
    snap = tracker.evaluate(at(S + 5), forecast(S + 4, 150.0), NO_INPUTS)
    assert snap.effective_target_kw is None
    assert snap.decisions.kw_to_shed == 0.0
    assert snap.decisions.quality["kw_to_shed"] is Quality.UNAVAILABLE


def test_chiller_limit_steps_with_shed_and_is_rate_limited() -> None:
    config = DemandConfig(
        target_kw=100.0,
        chiller_rated_kw=100.0,
        chiller_min_pct=40.0,
        chiller_max_step_down_pct=20.0,
        chiller_step_up_pct=10.0,
        chiller_hold_minutes=5,
        deadband_kw=5.0,
    )
    tracker = DemandTracker(config)

    def limit(now: int, forecast_kw: float) -> float:
        # The meter reads 100 kW every minute, so shed = (forecast - 100) * remaining / 15.
        snap = tracker.evaluate(at(now), forecast(now - 1, forecast_kw), NO_INPUTS)
        return snap.decisions.chiller_capacity_limit_pct

    feed(tracker, S - 1, [100.0])
    assert limit(S, 110.0) == pytest.approx(100.0 - 100.0 * 10.0 / 100.0)  # shed 10 -> 90
    feed(tracker, S, [100.0])
    assert limit(S + 1, 130.0) == pytest.approx(90.0)  # held: 1 < 5 minutes since the change
    feed(tracker, S + 1, [100.0] * 4)
    shed = (130.0 - 100.0) * 10 / 15
    assert limit(S + 5, 130.0) == pytest.approx(90.0 - 100.0 * shed / 100.0)  # 70
    feed(tracker, S + 5, [100.0] * 9 + [80.0])
    # The meter fell to 80 kW: the forecast (50) and the measured level are both under the
    # target less the deadband, so the limit steps up. (At a measured 100 kW it would not: the
    # rest of the interval is projected at least at the measured level.)
    assert limit(S + 15, 50.0) == pytest.approx(70.0 + 10.0)
    feed(tracker, S + 15, [100.0] * 5)
    assert limit(S + 20, 1000.0) == pytest.approx(80.0 - 20.0)  # step capped at 20 %
    feed(tracker, S + 20, [100.0] * 5)
    assert limit(S + 25, 1000.0) == pytest.approx(40.0)  # 60 - 20, at the 40 % floor
    feed(tracker, S + 25, [100.0] * 5)
    assert limit(S + 30, 1000.0) == pytest.approx(40.0)  # clamped


def test_chiller_unconfigured_is_100_and_unavailable() -> None:
    tracker = DemandTracker(DemandConfig(target_kw=10.0))
    feed(tracker, S, [100.0] * 5)
    decisions = tracker.evaluate(at(S + 5), forecast(S + 4, 150.0), NO_INPUTS).decisions
    assert decisions.chiller_capacity_limit_pct == 100.0
    assert decisions.quality["chiller_capacity_limit_pct"] is Quality.UNAVAILABLE


# -- permits and discharge ---------------------------------------------------------------------


def permit_config(**overrides: Any) -> DemandConfig:
    base = DemandConfig(
        target_kw=200.0,
        deadband_kw=5.0,
        has_battery=True,
        battery_charge_kw=20.0,
        has_ev=True,
        ev_charge_kw=10.0,
    )
    return replace(base, **overrides)


def all_inputs(minute: int, soc_pct: float = 60.0, battery_kw: float = 0.0) -> OptionalInputs:
    return OptionalInputs(
        pv_power_kw=fresh(30.0, minute),
        battery_soc_pct=fresh(soc_pct, minute),
        battery_power_kw=fresh(battery_kw, minute),
        ev_charging_power_kw=fresh(0.0, minute),
    )


def test_permits_granted_with_headroom() -> None:
    tracker = DemandTracker(permit_config())
    feed(tracker, S, [100.0] * 5)
    snap = tracker.evaluate(at(S + 5), forecast(S + 4, 150.0), all_inputs(S + 5))
    # Current window: (200*15 - 500 - 10*150) / 10 = 100; later windows: 200 - 150 = 50.
    assert snap.decisions.charge_headroom_kw == pytest.approx(50.0)
    assert snap.decisions.ev_charge_permit  # 50 - 10 >= 5
    assert snap.decisions.battery_charge_permit  # 50 - 10 - 20 >= 5
    assert snap.decisions.quality["ev_charge_permit"] is Quality.GOOD
    assert snap.next_hour_peak_kw == pytest.approx(150.0)
    assert snap.gross_load_kw == pytest.approx(gross_load_kw(100.0, 30.0, 0.0, 0.0))


def test_permits_withheld_without_headroom() -> None:
    tracker = DemandTracker(permit_config())
    feed(tracker, S, [100.0] * 5)
    snap = tracker.evaluate(at(S + 5), forecast(S + 4, 195.0), all_inputs(S + 5))
    assert snap.decisions.charge_headroom_kw == pytest.approx(200.0 - 195.0)
    assert not snap.decisions.ev_charge_permit  # 5 - 10 < 5
    assert not snap.decisions.battery_charge_permit


def test_permits_use_p90_when_a_band_exists() -> None:
    tracker = DemandTracker(permit_config())
    feed(tracker, S, [100.0] * 5)
    snap = tracker.evaluate(at(S + 5), forecast(S + 4, 150.0, (-10.0, 35.0)), all_inputs(S + 5))
    assert snap.decisions.charge_headroom_kw == pytest.approx(200.0 - 185.0)
    assert snap.decisions.ev_charge_permit  # 15 - 10 >= 5
    assert not snap.decisions.battery_charge_permit  # 15 - 10 (EV) - 20 < 5


def test_permits_withheld_without_forecast() -> None:
    tracker = DemandTracker(permit_config())
    feed(tracker, S, [100.0] * 5)
    snap = tracker.evaluate(at(S + 5), None, all_inputs(S + 5))
    assert not snap.decisions.ev_charge_permit
    assert snap.decisions.quality["ev_charge_permit"] is Quality.UNAVAILABLE
    assert any("withheld without a usable forecast" in note for note in snap.notes)


def test_discharge_requested_only_above_the_soc_reserve() -> None:
    for soc, expected in [(50.0, True), (20.0, False), (15.0, False)]:
        tracker = DemandTracker(permit_config(target_kw=120.0, battery_reserve_pct=20.0))
        feed(tracker, S, [150.0] * 5)
        snap = tracker.evaluate(at(S + 5), forecast(S + 4, 150.0), all_inputs(S + 5, soc))
        assert snap.decisions.kw_to_shed == pytest.approx(30.0)
        assert snap.decisions.battery_discharge_request is expected
        assert not snap.decisions.battery_charge_permit


def test_discharge_stops_at_the_reserve_despite_min_on_time() -> None:
    tracker = DemandTracker(permit_config(target_kw=120.0, battery_reserve_pct=20.0))
    feed(tracker, S, [150.0] * 5)
    snap = tracker.evaluate(at(S + 5), forecast(S + 4, 150.0), all_inputs(S + 5, 50.0))
    assert snap.decisions.battery_discharge_request
    feed(tracker, S + 5, [150.0])
    snap = tracker.evaluate(at(S + 6), forecast(S + 5, 150.0), all_inputs(S + 6, 19.0))
    assert not snap.decisions.battery_discharge_request


def test_discharge_stops_at_once_when_the_soc_goes_stale() -> None:
    tracker = DemandTracker(permit_config(target_kw=120.0, input_max_age_s=300.0))
    feed(tracker, S, [150.0] * 5)
    snap = tracker.evaluate(at(S + 5), forecast(S + 4, 150.0), all_inputs(S + 5, 50.0))
    assert snap.decisions.battery_discharge_request
    feed(tracker, S + 5, [150.0])
    inputs = replace(
        all_inputs(S + 6), battery_soc_pct=Reading(50.0, at(S + 6) - timedelta(0, 301))
    )
    snap = tracker.evaluate(at(S + 6), forecast(S + 5, 150.0), inputs)
    assert not snap.decisions.battery_discharge_request
    assert "battery_soc_pct stale (301 s old): ignored" in snap.notes


def test_discharge_keeps_running_while_it_is_what_holds_the_target() -> None:
    tracker = DemandTracker(permit_config(target_kw=120.0, deadband_kw=5.0, min_on_minutes=0))
    feed(tracker, S, [150.0] * 5)
    assert tracker.evaluate(
        at(S + 5), forecast(S + 4, 150.0), all_inputs(S + 5)
    ).decisions.battery_discharge_request
    # The battery now discharges 60 kW and the meter drops to 90 kW: projected 110 < 115, but
    # stopping would put back 60 * 9 / 15 = 36 kW: 146 > 115, so the request stays.
    feed(tracker, S + 5, [90.0])
    inputs = all_inputs(S + 6, 50.0, battery_kw=-60.0)
    snap = tracker.evaluate(at(S + 6), forecast(S + 5, 90.0), inputs)
    assert snap.interval.projected_kw == pytest.approx((750.0 + 90.0 + 9 * 90.0) / 15)
    assert snap.decisions.battery_discharge_request


def test_discharge_unavailable_without_soc_notes_it() -> None:
    tracker = DemandTracker(permit_config(target_kw=120.0))
    feed(tracker, S, [150.0] * 5)
    inputs = OptionalInputs(battery_power_kw=fresh(0.0, S + 5))
    snap = tracker.evaluate(at(S + 5), forecast(S + 4, 150.0), inputs)
    assert not snap.decisions.battery_discharge_request
    assert snap.decisions.quality["battery_discharge_request"] is Quality.UNAVAILABLE
    assert "battery_soc_pct missing" in snap.notes


# -- hysteresis --------------------------------------------------------------------------------


def test_a_flag_cannot_flip_back_before_the_min_on_and_off_times() -> None:
    config = permit_config(target_kw=100.0, min_on_minutes=5, min_off_minutes=5)
    tracker = DemandTracker(config)
    history: list[bool] = []
    # Meter 90 kW every minute (under the target less the deadband, so the measured level holds
    # the projection under it); the forecast alone swings the projection over / under target.
    feed(tracker, S, [90.0])
    for offset in range(1, 12):
        if offset > 1:
            tracker.observe_minute(S + offset - 1, 90.0)
        kw = 200.0 if offset == 1 or offset >= 7 else 50.0
        snap = tracker.evaluate(
            at(S + offset), forecast(S + offset - 1, kw), all_inputs(S + offset)
        )
        history.append(snap.decisions.battery_discharge_request)
    # On at +1; wants off from +2 but holds 5 minutes (off at +6); wants on from +7 but holds
    # off for 5 minutes (on at +11).
    assert history == [True, True, True, True, True, False, False, False, False, False, True]


# -- inputs ------------------------------------------------------------------------------------


def test_stale_and_missing_inputs_degrade_with_notes() -> None:
    tracker = DemandTracker(permit_config(input_max_age_s=300.0))
    feed(tracker, S, [100.0] * 5)
    inputs = OptionalInputs(
        battery_soc_pct=Reading(80.0, at(S + 5) - timedelta(minutes=10)),
        battery_power_kw=fresh(0.0, S + 5),
        pv_power_kw=Reading(30.0, at(S + 5) + timedelta(minutes=5)),  # from the future
    )
    snap = tracker.evaluate(at(S + 5), forecast(S + 4, 150.0), inputs)
    assert "battery_soc_pct stale (600 s old): ignored" in snap.notes
    assert "ev_charging_power_kw missing" in snap.notes
    assert "pv_power_kw timestamped in the future: ignored" in snap.notes
    assert snap.gross_load_kw is None
    assert snap.decisions.quality["battery_discharge_request"] is Quality.UNAVAILABLE
    assert snap.decisions.quality["ev_charge_permit"] is Quality.DEGRADED
    # Unknown present EV power is assumed 0, so the full 10 kW is added: 50 - 10 >= 5.
    assert snap.decisions.ev_charge_permit


def test_stale_meter_gives_no_projection() -> None:
    tracker = DemandTracker(DemandConfig(target_kw=100.0, meter_max_age_minutes=5))
    feed(tracker, S, [100.0])
    snap = tracker.evaluate(at(S + 20), None, NO_INPUTS)
    assert snap.interval.projected_kw is None
    assert snap.interval.projection is ProjectionMethod.NONE
    assert snap.decisions.quality["kw_to_shed"] is Quality.UNAVAILABLE
    assert "no recent meter minute: no held-load fallback" in snap.notes


def test_load_definitions() -> None:
    # Meter 80 kW with 50 kW of PV, the battery charging 20 kW and an EV drawing 7 kW.
    assert base_load_kw(80.0, 20.0, 7.0) == pytest.approx(80.0 - 20.0 - 7.0)
    assert gross_load_kw(80.0, 50.0, 20.0, 7.0) == pytest.approx(80.0 + 50.0 - 20.0 - 7.0)
    assert base_load_kw(80.0, -30.0) == pytest.approx(110.0)  # discharging hid 30 kW of load


def test_base_load_forecast_adds_back_the_running_dispatched_loads() -> None:
    tracker = DemandTracker(permit_config(forecast_is_base_load=True))
    feed(tracker, S, [100.0] * 5)
    inputs = OptionalInputs(
        battery_soc_pct=fresh(60.0, S + 5),
        battery_power_kw=fresh(20.0, S + 5),
        ev_charging_power_kw=fresh(7.0, S + 5),
    )
    snap = tracker.evaluate(at(S + 5), forecast(S + 4, 120.0), inputs)
    assert snap.interval.projected_kw == pytest.approx((500.0 + 10 * (120.0 + 27.0)) / 15)
    # Without a battery measurement the plan's setpoint (discharging 15 kW) is added back; a
    # measurement, when fresh, wins over it.
    unmeasured = OptionalInputs(
        battery_soc_pct=fresh(60.0, S + 5), ev_charging_power_kw=fresh(7.0, S + 5)
    )
    snap = tracker.evaluate(
        at(S + 5), forecast(S + 4, 120.0), unmeasured, battery_setpoint_kw=-15.0
    )
    assert snap.interval.projected_kw == pytest.approx((500.0 + 10 * (120.0 - 15.0 + 7.0)) / 15)
    assert not any("unknown battery" in note for note in snap.notes)
    snap = tracker.evaluate(at(S + 5), forecast(S + 4, 120.0), inputs, battery_setpoint_kw=-15.0)
    assert snap.interval.projected_kw == pytest.approx((500.0 + 10 * (120.0 + 27.0)) / 15)


# -- persistence -------------------------------------------------------------------------------


def test_state_round_trips_through_json() -> None:
    config = permit_config(target_kw=130.0, chiller_rated_kw=100.0)
    tracker = DemandTracker(config)
    feed(tracker, S, [120.0] * 15 + [150.0] * 5)
    tracker.set_target(125.0)
    tracker.evaluate(at(S + 20), forecast(S + 19, 160.0), all_inputs(S + 20))
    state = json.loads(json.dumps(tracker.to_state()))
    restored = DemandTracker.from_state(state, config)
    assert restored.to_state() == tracker.to_state()
    assert restored.target_kw == 125.0
    assert restored.period_peak_kw == 120.0
    for t in (tracker, restored):
        feed(t, S + 20, [155.0, 160.0])
    a = tracker.evaluate(at(S + 22), forecast(S + 21, 165.0), all_inputs(S + 22))
    b = restored.evaluate(at(S + 22), forecast(S + 21, 165.0), all_inputs(S + 22))
    assert a == b
    assert a.decisions.battery_discharge_request


def test_state_with_a_changed_interval_drops_the_partial_interval_and_peak() -> None:
    tracker = DemandTracker(DemandConfig(target_kw=100.0))
    feed(tracker, S, [120.0] * 20)
    state = tracker.to_state()
    restored = DemandTracker.from_state(state, DemandConfig(interval_minutes=5, target_kw=90.0))
    assert restored.period_peak_kw is None
    assert restored.target_kw == 90.0  # a config target follows the config
    with pytest.raises(ValueError, match="version"):
        DemandTracker.from_state({**state, "version": 99}, DemandConfig())
    with pytest.raises(ValueError, match="malformed"):
        DemandTracker.from_state({"version": 1}, DemandConfig())


# -- probabilities -----------------------------------------------------------------------------


def test_probability_of_exceedance_pure() -> None:
    assert probability_of_exceedance(100.0, 10.0, 100.0) == pytest.approx(0.5)
    assert probability_of_exceedance(100.0, 10.0, 110.0) == pytest.approx(0.158655, abs=1e-6)
    assert probability_of_exceedance(100.0, 0.0, 99.0) == 1.0
    assert probability_of_exceedance(100.0, 0.0, 101.0) == 0.0
    assert sigma_from_band_kw(90.0, 90.0 + 2.563 * 4.0) == pytest.approx(4.0)


def test_interval_probability_uses_the_mean_of_step_sigmas() -> None:
    half = 2.563 * 10.0 / 2  # step sigma 10 kW
    tracker = DemandTracker(DemandConfig(target_kw=160.0))
    feed(tracker, S - 1, [150.0])
    snap = tracker.evaluate(at(S), forecast(S - 1, 150.0, (-half, half)), NO_INPUTS)
    # No minute elapsed: mean 150, sigma of the mean 15 * 10 / 15 = 10, P(> 160) = 1 - Phi(1).
    assert snap.p_exceed_interval == pytest.approx(0.158655, abs=1e-5)
    feed(tracker, S, [150.0] * 5)
    snap = tracker.evaluate(at(S + 5), forecast(S + 4, 150.0, (-half, half)), NO_INPUTS)
    # 5 known minutes: sigma of the mean 10 * 10 / 15; z = 10 / (100 / 15) = 1.5.
    assert snap.p_exceed_interval == pytest.approx(0.0668072, abs=1e-5)
    assert snap.p_exceed_next_hour == pytest.approx(0.158655, abs=1e-5)  # full later windows


def test_probability_is_monotone_in_target_and_none_without_band() -> None:
    half = 12.0
    probabilities: list[float] = []
    for target in (100.0, 130.0, 150.0, 170.0, 200.0):
        tracker = DemandTracker(DemandConfig(target_kw=target))
        feed(tracker, S, [140.0] * 5)
        kw = [140.0 + i for i in range(60)]
        snap = tracker.evaluate(at(S + 5), forecast(S + 4, kw, (-half, half)), NO_INPUTS)
        assert snap.p_exceed_interval is not None and snap.p_exceed_next_hour is not None
        assert snap.p_exceed_next_hour >= snap.p_exceed_interval
        probabilities.append(snap.p_exceed_interval)
    assert all(a > b for a, b in itertools.pairwise(probabilities))
    tracker = DemandTracker(DemandConfig(target_kw=150.0))
    feed(tracker, S, [140.0] * 5)
    snap = tracker.evaluate(at(S + 5), forecast(S + 4, 150.0), NO_INPUTS)
    assert snap.p_exceed_interval is None and snap.p_exceed_next_hour is None
    assert snap.next_hour_peak_kw == pytest.approx(150.0)


# -- sliding window ----------------------------------------------------------------------------


def test_sliding_window_mode() -> None:
    config = DemandConfig(window=WindowMode.SLIDING, interval_minutes=15, target_kw=150.0)
    tracker = DemandTracker(config)
    closed = feed(tracker, S, [100.0] * 10 + [200.0] * 10)
    assert len(closed) == 20  # one window per observed minute
    assert (closed[0].start_minute, closed[0].observed_minutes) == (S - 14, 1)
    last = closed[-1]
    assert last.start_minute == S + 5
    assert last.complete
    assert last.average_kw == pytest.approx((5 * 100.0 + 10 * 200.0) / 15)
    assert tracker.period_peak_kw == pytest.approx(2500.0 / 15)
    snap = tracker.evaluate(at(S + 20), None, NO_INPUTS)
    iv = snap.interval
    assert (iv.start_minute, iv.elapsed_minutes, iv.remaining_minutes) == (S + 6, 14, 1)
    assert iv.projected_kw == pytest.approx((4 * 100.0 + 10 * 200.0 + 200.0) / 15)
    assert snap.effective_target_kw == pytest.approx(2500.0 / 15)
    assert iv.allowance_kw == pytest.approx(2500.0 - 2400.0)  # 1 minute left


def test_sliding_next_hour_peak_is_the_worst_trailing_window() -> None:
    config = DemandConfig(window=WindowMode.SLIDING, interval_minutes=5, target_kw=150.0)
    tracker = DemandTracker(config)
    feed(tracker, S, [100.0] * 5)
    kw = [100.0] * 30 + [160.0] * 3 + [100.0] * 27
    snap = tracker.evaluate(at(S + 5), forecast(S + 4, kw), NO_INPUTS)
    # The worst 5-minute window holds the three 160 kW minutes and two at 100 kW.
    assert snap.next_hour_peak_kw == pytest.approx((3 * 160.0 + 2 * 100.0) / 5)
    assert snap.next_hour_peak_start_minute == S + 33  # the first such window, S+33..S+37


def test_a_snapshot_names_its_interval_and_each_decision_quality() -> None:
    tracker = DemandTracker(permit_config(chiller_rated_kw=100.0))
    feed(tracker, S, [100.0] * 5)
    snap = tracker.evaluate(at(S + 5), forecast(S + 4, 150.0, (-5.0, 5.0)), all_inputs(S + 5))
    assert snap.interval.start == datetime(2024, 6, 3, 10, 0, tzinfo=UTC)
    assert snap.decisions.quality["kw_to_shed"].value == "good"


def test_elapsed_minutes_fill_gaps_at_the_measured_mean_else_the_held_reading() -> None:
    nan = math.nan
    assert elapsed_minutes_kw([10.0, nan, 14.0], held_kw=99.0) == [10.0, 12.0, 14.0]
    assert elapsed_minutes_kw([nan, nan], held_kw=7.5) == [7.5, 7.5]
    assert elapsed_minutes_kw([nan, nan], held_kw=None) is None
    assert elapsed_minutes_kw([nan], held_kw=nan) is None
    assert elapsed_minutes_kw([], held_kw=3.0) == []


def test_an_input_is_in_force_while_a_number_written_within_the_age_limit() -> None:
    at = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert value_if_fresh(5.0, at, at + timedelta(seconds=300), 300.0) == 5.0
    assert value_if_fresh(5.0, at, at + timedelta(seconds=301), 300.0) is None
    assert value_if_fresh(math.nan, at, at, 300.0) is None


def test_a_period_that_has_only_exported_ratchets_to_zero_not_below() -> None:
    # A PV site started during export hours: the only closed interval averaged -20 kW. Billed
    # demand is never below 0, so the ratchet is 0, and a load that still exports is not shed.
    tracker = DemandTracker(DemandConfig(ratchet_to_period_peak=True))
    feed(tracker, S, [-20.0] * 15 + [-10.0] * 5)
    snap = tracker.evaluate(at(S + 20), forecast(S + 19, -10.0), NO_INPUTS)
    assert tracker.period_peak_kw == pytest.approx(-20.0)
    assert snap.effective_target_kw == 0.0
    assert snap.decisions.kw_to_shed == 0.0
    assert not snap.decisions.battery_discharge_request

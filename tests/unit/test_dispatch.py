"""The dispatch planner and controller on cases small enough to check by hand, and a short
closed-loop replay."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from zoneinfo import ZoneInfo

import highspy
import numpy as np
import pytest

from core.config import Settings
from core.dispatch.assets import Battery, EvChargers, Tariff
from core.dispatch.controller import (
    DispatchController,
    DispatchInputs,
    DispatchSettings,
    plan_horizon_steps,
    with_seasonal_stress,
)
from core.dispatch.optimum import optimum_peak
from core.dispatch.planner import (
    PlanInfeasible,
    PlanRequest,
    PlanResult,
    PlanSolver,
    new_highs,
    solve_plan,
)
from core.dispatch.replay import (
    NoBattery,
    PerfectDayAhead,
    PlannerController,
    Threshold,
    month_optimum,
    simulate_month,
)
from core.forecast.base import DayAheadForecast, MinuteHistory
from core.forecast.baseline import SeasonalMeanForecaster

BATTERY = Battery(capacity_kwh=20.0, charge_kw=10.0, discharge_kw=10.0, efficiency=0.92)
TARIFF = Tariff()
UTC = ZoneInfo("UTC")


def _request(load: list[float], floor: float, **overrides: object) -> PlanRequest:
    values = np.array(load, dtype=np.float64)
    fields: dict[str, object] = {
        "load_kw": values,
        "max_discharge_kw": np.minimum(values, BATTERY.discharge_kw),
        "energy_price": np.full(len(values), 0.10),
        "step_minutes": 15,
        "elapsed_minutes": 0,
        "elapsed_grid_kwmin": 0.0,
        "start_kwh": 10.0,
        "floor_kw": floor,
        "terminal_value_per_kwh": 0.2,
    }
    fields.update(overrides)
    return PlanRequest(**fields)  # type: ignore[arg-type]


def test_flat_load_at_the_paid_peak_plans_nothing() -> None:
    plan = solve_plan(_request([10.0] * 96, floor=10.0), BATTERY, TARIFF)
    assert plan.planned_peak_kw == pytest.approx(10.0)
    assert np.all(plan.battery_kw <= 1e-6)  # never discharges
    assert np.all(plan.grid_kw <= 10.0 + 1e-6)


def test_one_spike_above_the_paid_peak_is_discharged_exactly_over_it() -> None:
    load = [10.0] * 96
    load[5] = 16.0
    plan = solve_plan(_request(load, floor=12.0), BATTERY, TARIFF)
    assert plan.planned_peak_kw == pytest.approx(12.0)
    assert plan.battery_kw[5] == pytest.approx(-4.0, abs=1e-6)
    assert plan.grid_kw[5] == pytest.approx(12.0, abs=1e-6)
    assert np.all(plan.battery_kw[:5] >= -1e-6)  # nothing discharged before it is needed


def test_a_peak_already_paid_is_not_chased() -> None:
    load = [15.0] * 96
    load[10] = 18.0
    plan = solve_plan(_request(load, floor=20.0), BATTERY, TARIFF)
    assert plan.planned_peak_kw == pytest.approx(20.0)
    assert np.all(plan.battery_kw >= -1e-6)


def test_the_partial_interval_is_respected() -> None:
    # Ten minutes at 18 kW already measured; the last five at 12 kW can take 10 kW of discharge
    # at most: (180 + 5 * (12 - 10)) / 15 = 12.67 kW is the best this interval can end at.
    request = _request(
        [12.0] + [10.0] * 95, floor=10.0, elapsed_minutes=10, elapsed_grid_kwmin=180.0
    )
    plan = solve_plan(request, BATTERY, TARIFF)
    assert plan.battery_kw[0] == pytest.approx(-10.0)
    assert plan.planned_peak_kw == pytest.approx(190.0 / 15.0)
    assert plan.grid_kw[0] == pytest.approx(190.0 / 15.0)


def test_charging_in_the_partial_interval_counts_only_its_remaining_minutes() -> None:
    # Ten minutes at 12 kW measured, a 10 kW peak paid, energy cheap now and dear later: the
    # plan charges what the last five minutes can take without lifting the interval over 10 kW:
    # (120 + 5 * (5 + c)) / 15 <= 10, so c = 1 kW.
    prices = np.full(96, 0.30)
    prices[0] = 0.05
    request = _request(
        [5.0] * 96,
        floor=10.0,
        elapsed_minutes=10,
        elapsed_grid_kwmin=120.0,
        start_kwh=0.0,
        energy_price=prices,
        terminal_value_per_kwh=0.5,
    )
    plan = solve_plan(request, BATTERY, TARIFF)
    assert plan.planned_peak_kw == pytest.approx(10.0)
    assert plan.battery_kw[0] == pytest.approx(1.0, abs=1e-6)
    assert plan.grid_kw[0] == pytest.approx(10.0, abs=1e-6)


def test_soc_dynamics_follow_the_efficiency() -> None:
    load = [10.0] * 8
    load[2] = 14.0
    plan = solve_plan(_request(load, floor=10.0, start_kwh=10.0), BATTERY, TARIFF)
    # 4 kW for 15 minutes delivered at 92 % one way takes 1 / 0.92 kWh from storage.
    assert plan.soc_kwh[2] == pytest.approx(plan.soc_kwh[1] - 1.0 / 0.92, abs=1e-6)


def _reference_plan(request: PlanRequest) -> tuple[float, float]:
    """(planned peak, objective) of the plan LP built row by row in a fresh HiGHS model, as the
    planner did before it kept its model: an oracle independent of PlanSolver's in-place edits."""
    n = len(request.load_kw)
    dt = np.full(n, request.step_minutes / 60.0)
    dt[0] = (request.step_minutes - request.elapsed_minutes) / 60.0
    eff, inf = BATTERY.efficiency, highspy.kHighsInf
    c0, d0, e0, p = 0, n, 2 * n, 3 * n
    cost = np.zeros(3 * n + 1)
    cost[p] = TARIFF.demand_charge_per_kw
    cost[c0:d0] = (request.energy_price + TARIFF.throughput_cost_per_kwh) * dt
    cost[d0:e0] = (-request.energy_price + TARIFF.throughput_cost_per_kwh) * dt
    cost[e0:p] = -request.hold_value_per_kwh_step
    cost[p - 1] -= request.terminal_value_per_kwh
    start = min(max(request.start_kwh, 0.0), BATTERY.capacity_kwh)
    lower = np.zeros(3 * n + 1)
    upper = np.full(3 * n + 1, inf)
    upper[c0:d0] = BATTERY.charge_kw
    upper[d0:e0] = np.minimum(BATTERY.discharge_kw, request.max_discharge_kw)
    lower[e0:p] = min(BATTERY.min_kwh, start)
    upper[e0:p] = max(BATTERY.max_kwh, start)
    lower[p] = request.floor_kw
    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    h.addVars(3 * n + 1, lower, upper)
    h.changeColsCost(3 * n + 1, np.arange(3 * n + 1, dtype=np.int32), cost)
    share = dt[0] * 60.0 / request.step_minutes
    for k in range(n):
        load = float(request.load_kw[k])
        cols, coefs = [e0 + k, c0 + k, d0 + k], [1.0, -eff * dt[k], dt[k] / eff]
        if k:
            h.addRow(0.0, 0.0, 4, np.array([*cols, e0 + k - 1]), np.array([*coefs, -1.0]))
        else:
            h.addRow(start, start, 3, np.array(cols), np.array(coefs))
        if k:
            h.addRow(-inf, -load, 3, np.array([c0 + k, d0 + k, p]), np.array([1.0, -1.0, -1.0]))
        else:
            past = request.elapsed_grid_kwmin / request.step_minutes
            rhs = -(past + share * load)
            h.addRow(-inf, rhs, 3, np.array([c0, d0, p]), np.array([share, -share, -1.0]))
        h.addRow(-max(load, 0.0), inf, 2, np.array([c0 + k, d0 + k]), np.array([1.0, -1.0]))
    h.run()
    assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    x = h.getSolution().col_value
    return float(x[p]), float(h.getInfo().objective_function_value)


def _plan_cost(plan: PlanResult, request: PlanRequest) -> float:
    """The plan LP's objective, from its solution."""
    dt_h = np.full(len(plan.battery_kw), request.step_minutes / 60.0)
    dt_h[0] = (request.step_minutes - request.elapsed_minutes) / 60.0
    energy = float(np.sum(request.energy_price * plan.battery_kw * dt_h))
    throughput = TARIFF.throughput_cost_per_kwh * float(np.sum(np.abs(plan.battery_kw) * dt_h))
    hold = request.hold_value_per_kwh_step * float(np.sum(plan.soc_kwh))
    terminal = request.terminal_value_per_kwh * float(plan.soc_kwh[-1])
    peak = TARIFF.demand_charge_per_kw * plan.planned_peak_kw
    return peak + energy + throughput - hold - terminal


def test_a_kept_model_solves_each_request_as_a_fresh_one_would() -> None:
    # The controller keeps one HiGHS model and changes it in place each minute; every request in
    # a sequence (the interval in progress advancing, the load and floor moving, another length,
    # another step, an infeasible one in between) gets the plan a model built for it alone gets.
    solver = PlanSolver(BATTERY, TARIFF)
    rng = np.random.default_rng(7)
    requests = []
    for minute in range(40):
        load = 12.0 + 6.0 * np.sin(np.arange(96) / 8.0 + minute / 5.0) + rng.normal(0.0, 1.0, 96)
        requests.append(
            _request(
                list(load),
                floor=14.0 + minute % 3,
                elapsed_minutes=minute % 15,
                elapsed_grid_kwmin=float(minute % 15) * 15.0,
                start_kwh=4.0 + minute % 12,
                max_discharge_kw=np.minimum(np.maximum(load, 0.0) * 0.9, 10.0),
            )
        )
    requests.insert(10, _request([10.0] * 8, floor=10.0))  # another length: rebuilt
    requests.insert(20, _request([10.0] * 48, floor=10.0, step_minutes=30))  # another step
    for index, request in enumerate(requests):
        kept = solver.solve(request)
        fresh = solve_plan(request, BATTERY, TARIFF)
        peak, objective = _reference_plan(request)
        # The LP has ties (when to charge on a flat price), so the schedules may differ; the
        # peak and the cost may not.
        assert kept.planned_peak_kw == pytest.approx(peak, abs=1e-6), index
        assert fresh.planned_peak_kw == pytest.approx(peak, abs=1e-6), index
        assert _plan_cost(kept, request) == pytest.approx(objective, abs=1e-6), index
        assert _plan_cost(fresh, request) == pytest.approx(objective, abs=1e-6), index
    # A negative discharge bound (upper below lower) cannot be solved; the next request still is.
    bad = _request([10.0] * 96, floor=10.0, max_discharge_kw=np.full(96, -1.0))
    with pytest.raises(PlanInfeasible):
        solver.solve(bad)
    again = solver.solve(requests[0])
    assert again.planned_peak_kw == pytest.approx(
        solve_plan(requests[0], BATTERY, TARIFF).planned_peak_kw, abs=1e-6
    )


def test_a_request_that_is_not_finite_is_refused_and_the_next_one_solved() -> None:
    solver = PlanSolver(BATTERY, TARIFF)
    good = _request([10.0 + (k % 5) for k in range(96)], floor=12.0)
    solver.solve(_request([20.0] * 96, floor=15.0))
    load = np.array([10.0] * 96)
    load[3] = math.nan
    for bad in (
        _request(list(load), floor=12.0),
        _request([10.0] * 96, floor=math.nan),
        _request([10.0] * 96, floor=12.0, elapsed_grid_kwmin=math.inf),
    ):
        # HiGHS would refuse the value and keep the previous request's: no stale plan.
        with pytest.raises(PlanInfeasible, match="not a finite number"):
            solver.solve(bad)
    assert solver.solve(good).planned_peak_kw == pytest.approx(_reference_plan(good)[0], abs=1e-6)


def test_a_plan_not_solved_in_time_is_given_up() -> None:
    request = _request([10.0 + (k % 7) for k in range(96)], floor=12.0)
    with pytest.raises(PlanInfeasible, match="not solved within 0 s"):
        PlanSolver(BATTERY, TARIFF, time_limit_s=0.0).solve(request)


def test_the_time_limit_is_per_solve_on_a_model_kept_over_many_plans() -> None:
    # HiGHS counts a kept model's run time over all its solves: each solve's limit is the run time
    # so far plus the allowance, so a model that has run many plans still gets the whole
    # allowance for the next one (read off the kept model, not off the wall clock).
    models: list[highspy.Highs] = []

    def keep() -> highspy.Highs:
        models.append(new_highs())
        return models[-1]

    solver = PlanSolver(BATTERY, TARIFF, time_limit_s=10.0, new_model=keep)
    for minute in range(50):
        solver.solve(_request([10.0 + ((k + minute) % 7) for k in range(96)], floor=12.0))
    (model,) = models
    ran_before_last_s = model.getRunTime()
    solver.solve(_request([10.0 + (k % 7) for k in range(96)], floor=12.0))
    assert ran_before_last_s > 0.0
    assert model.getOptions().time_limit == pytest.approx(ran_before_last_s + 10.0)


def test_a_plan_that_missed_its_time_limit_keeps_its_model_and_finishes_next_time() -> None:
    # A dropped model would be solved cold next time, the slowest solve there is: a plan that
    # missed the limit once would miss it every minute after.
    request = _request([10.0 + (k % 7) for k in range(96)], floor=12.0)
    solver = PlanSolver(BATTERY, TARIFF, time_limit_s=0.0)
    with pytest.raises(PlanInfeasible, match="not solved within 0 s"):
        solver.solve(request)
    solver.time_limit_s = 10.0  # the next minute has its time
    plan = solver.solve(request)
    assert plan.planned_peak_kw == pytest.approx(_reference_plan(request)[0], abs=1e-6)


@pytest.mark.parametrize(
    ("interval", "sliding", "steps"),
    [
        (5, False, 286),
        (10, False, 143),
        (15, False, 96),
        (20, False, 71),
        (30, False, 48),
        (60, False, 24),
        (15, True, 95),
        (5, True, 285),
    ],
)
def test_the_plan_horizon_is_what_the_forecast_covers_from_any_interval_start(
    interval: int, sliding: bool, steps: int
) -> None:
    assert plan_horizon_steps(96, 15, interval, sliding) == steps
    # Every interval start a fresh 24 h forecast can meet (it starts at its quarter hour in
    # progress) covers at least that many whole intervals, and one of them no more.
    alignment = 1 if sliding else interval
    offsets = {(k * alignment) % 15 for k in range(15)}
    assert min((1440 - offset) // interval for offset in offsets) == steps


def test_a_five_minute_tariff_plans_the_same_length_every_interval() -> None:
    # The kept HiGHS model is rebuilt (and solved cold) whenever the plan's length changes; on
    # 15-minute forecast steps a 5-minute interval starts 0, 5 or 10 minutes into one.
    controller = DispatchController(BATTERY, TARIFF, UTC)
    start = 1_000_800
    lengths = set()
    for offset in range(60):
        minute = start + offset
        decision = controller.decide(
            _inputs(
                minute=minute,
                step_minutes=5,
                interval_grid_kw=[12.0] * (offset % 5),
                load_now_kw=12.0,
                forecast_start_minute=minute - offset % 15,
                forecast_p50_kw=[10.0 + (k % 5) for k in range(96)],
                forecast_p90_kw=[12.0 + (k % 5) for k in range(96)],
            )
        )
        assert decision.plan is not None
        lengths.add(len(decision.plan.battery_kw))
    assert lengths == {286}


def _inputs(**overrides: object) -> DispatchInputs:
    fields: dict[str, object] = {
        "minute": 1_000_005,
        "step_minutes": 15,
        "interval_grid_kw": [10.0] * 5,
        "load_now_kw": 10.0,
        "forecast_start_minute": 1_000_005 - 5,
        "forecast_p50_kw": [10.0] * 96,
        "forecast_p90_kw": [10.0] * 96,
        "paid_peak_kw": 12.0,
        "target_kw": None,
        "soc_pct": 60.0,
    }
    fields.update(overrides)
    return DispatchInputs(**fields)  # type: ignore[arg-type]


def test_live_layer_discharges_when_the_measured_load_runs_over_the_cap() -> None:
    controller = DispatchController(BATTERY, TARIFF, UTC, settings=DispatchSettings(bank_share=0))
    calm = controller.decide(_inputs())
    assert calm.setpoint_kw >= 0 and calm.cap_kw == pytest.approx(12.0)
    assert calm.reliable
    # The load jumps to 20 kW five minutes into the interval: to end at 12 kW the rest of the
    # interval may average (15 * 12 - 50) / 10 = 13 kW, so 7 kW must come from the battery.
    spike = controller.decide(_inputs(minute=1_000_005, load_now_kw=20.0))
    assert spike.setpoint_kw == pytest.approx(-7.0)


def test_the_plan_is_followed_only_once_the_meter_asks_for_a_discharge() -> None:
    # The forecast expects 20 kW for the rest of this interval; the meter says 10 (under the
    # 12 kW paid peak). Discharging on the forecast would spend energy the meter contradicts.
    forecast = [20.0] + [10.0] * 95
    settings = DispatchSettings(bank_share=0)
    controller = DispatchController(BATTERY, TARIFF, UTC, settings=settings)
    quiet = controller.decide(_inputs(forecast_p50_kw=forecast, forecast_p90_kw=forecast))
    assert quiet.plan is not None and quiet.plan.battery_kw[0] < -5.0
    assert quiet.setpoint_kw == 0.0
    # The load arrives: the meter alone asks (15 * 12 - 50) / 10 = 13 kW of grid, 7 kW from the
    # battery; the plan's rate for the interval is at least that and is followed.
    busy = controller.decide(
        _inputs(load_now_kw=20.0, forecast_p50_kw=forecast, forecast_p90_kw=forecast)
    )
    assert busy.plan is not None
    assert busy.setpoint_kw == pytest.approx(min(-7.0, float(busy.plan.battery_kw[0])))
    assert busy.setpoint_kw <= -7.0


def test_live_layer_banks_the_recent_rise_and_releases_it_by_the_end_of_the_interval() -> None:
    controller = DispatchController(BATTERY, TARIFF, UTC)
    flat = controller.decide(_inputs())
    assert flat.setpoint_kw >= 0  # a flat load banks nothing
    # The next minute, a 5 kW rise: 5 kW is kept in hand for each of the 8 minutes after this one,
    # so the rest of the interval may average (15 * 12 - 8 * 5 - 60) / 9 = 8.89 kW: 6.11 kW from
    # the battery. (Several snapshots in one minute count as one minute.)
    six = {"minute": 1_000_006, "interval_grid_kw": [10.0] * 6}
    rise = controller.decide(_inputs(load_now_kw=15.0, **six))
    assert rise.setpoint_kw == pytest.approx(-(15.0 - 80.0 / 9.0))
    again = controller.decide(_inputs(load_now_kw=15.0, **six))
    assert again.setpoint_kw == pytest.approx(rise.setpoint_kw)
    # In the last minute nothing is kept back: (15 * 12 - 14 * 11) / 1 = 26 kW is allowed, so the
    # battery charges back what was banked (headroom under the 12 kW paid, less the margin).
    last = controller.decide(
        _inputs(minute=1_000_014, interval_grid_kw=[11.0] * 14, load_now_kw=15.0)
    )
    assert last.setpoint_kw > 0
    # The reserve never exceeds the share of the discharge limit, however large the rise.
    big = DispatchController(BATTERY, TARIFF, UTC)
    big.decide(_inputs(load_now_kw=0.0))
    jump = big.decide(_inputs(load_now_kw=13.0, **six))
    reserve = 0.7 * BATTERY.discharge_kw * 8
    assert jump.setpoint_kw == pytest.approx(-(13.0 - (15 * 12 - reserve - 60) / 9))


def _run_intervals(controller: DispatchController, loads: list[float]) -> PlanResult:
    """Feed one load per 15-minute interval (a flat 10 kW forecast); return the plan made at the
    first minute of the interval after the last one."""
    start = 1_000_000
    forecast = {"forecast_start_minute": start, "forecast_p50_kw": [10.0] * 200}
    forecast["forecast_p90_kw"] = forecast["forecast_p50_kw"]
    for index, load in enumerate(loads):
        for elapsed in range(15):
            controller.decide(
                _inputs(
                    minute=start + 15 * index + elapsed,
                    interval_grid_kw=[load if math.isfinite(load) else 10.0] * elapsed,
                    load_now_kw=load,
                    **forecast,
                )
            )
    last = controller.decide(
        _inputs(minute=start + 15 * len(loads), interval_grid_kw=[], load_now_kw=10.0, **forecast)
    )
    assert last.plan is not None
    return last.plan


def test_a_day_running_above_its_forecast_for_an_hour_lifts_the_rest_of_the_plan() -> None:
    # An hour (four closed intervals) 3 kW above the 10 kW P50: the plan's path is the P50 plus
    # 3 kW fading by 2 % a step, over the whole horizon.
    plan = _run_intervals(DispatchController(BATTERY, TARIFF, UTC), [13.0] * 4)
    path = _plan_path(plan)
    steps = np.arange(1, len(plan.grid_kw))
    assert path == pytest.approx(10.0 + 3.0 * 0.98**steps)
    # One interval back at the forecast breaks the run: a spike is not a hot day.
    spike = _run_intervals(DispatchController(BATTERY, TARIFF, UTC), [13.0, 13.0, 10.0, 13.0])
    assert _plan_path(spike) == pytest.approx(10.0)
    # So does an interval without a meter reading.
    gap = _run_intervals(DispatchController(BATTERY, TARIFF, UTC), [13.0] * 4 + [math.nan])
    assert _plan_path(gap) == pytest.approx(10.0)
    # Off by setting: the same hour leaves the far steps at the forecast.
    off = DispatchController(BATTERY, TARIFF, UTC, settings=DispatchSettings(level_minutes=0))
    plan = _run_intervals(off, [13.0] * 4)
    assert (plan.grid_kw[1:] - plan.battery_kw[1:])[16:] == pytest.approx(10.0)


def test_a_sliding_window_defends_the_window_each_minute_closes() -> None:
    # A 15-minute sliding window: the 14 minutes before averaged 20 kW and 20 kW is paid, so the
    # coming minute may draw 20 kW; at 25 kW the battery discharges the 5 kW over.
    controller = DispatchController(BATTERY, TARIFF, UTC)
    start = 1_000_003  # not on a quarter hour: a sliding window has no clock
    forecast = {"forecast_start_minute": start - 3, "forecast_p50_kw": [10.0] * 200}
    forecast["forecast_p90_kw"] = forecast["forecast_p50_kw"]
    decision = controller.decide(
        _inputs(
            minute=start,
            interval_grid_kw=[20.0] * 14,
            load_now_kw=25.0,
            paid_peak_kw=20.0,
            sliding=True,
            **forecast,
        )
    )
    assert decision.setpoint_kw == pytest.approx(-5.0)
    assert decision.plan_start_minute == start - 14
    # The forecast's error is followed per 15-minute block, not per one-minute shift: an hour
    # and more at 13 kW over the 10 kW forecast lifts the far plan as with fixed intervals.
    for offset in range(1, 80):
        decision = controller.decide(
            _inputs(
                minute=start + offset,
                interval_grid_kw=[13.0] * 14,
                load_now_kw=13.0,
                paid_peak_kw=20.0,
                sliding=True,
                **forecast,
            )
        )
    assert decision.plan is not None
    assert _plan_path(decision.plan)[20:60] == pytest.approx(
        10.0 + 3.0 * 0.98 ** np.arange(21, 61), abs=0.2
    )


def _plan_path(plan: PlanResult) -> np.ndarray:
    """The load the plan assumed in each step after the first."""
    return plan.grid_kw[1:] - plan.battery_kw[1:]


@pytest.mark.parametrize("interval", [5, 10, 30, 60])
def test_a_tariff_interval_other_than_15_minutes_plans_on_its_own_intervals(interval: int) -> None:
    # The day-ahead comes in 15-minute steps: 10 kW, and 20 kW in its steps 4 and 5 (60-90 min).
    start = 1_000_800  # a UTC minute on the hour
    p50 = [10.0] * 96
    p50[4:6] = [20.0, 20.0]
    controller = DispatchController(BATTERY, TARIFF, UTC)
    decision = controller.decide(
        _inputs(
            minute=start,
            step_minutes=interval,
            interval_grid_kw=[],
            forecast_start_minute=start,
            forecast_p50_kw=p50,
            forecast_p90_kw=p50,
        )
    )
    assert decision.plan is not None and decision.plan_start_minute == start
    plan = decision.plan
    # Still 24 h in the tariff's steps, less the minutes an interval can start into a forecast
    # step (5- and 10-minute intervals: 10 minutes), so every plan has the same length.
    steps = {5: 286, 10: 143, 30: 48, 60: 24}[interval]
    assert len(plan.grid_kw) == steps
    expected = np.full(steps, 10.0)
    # The 20 kW half hour sits 60-90 minutes ahead whatever the step; a 60-minute interval
    # averages it with the 10 kW half hour beside it.
    expected[60 // interval : max(90 // interval, 60 // interval + 1)] = (
        20.0 if interval <= 30 else 15.0
    )
    assert _plan_path(plan) == pytest.approx(expected[1:])


def _day_ahead(name: str, start: int, p50: list[float], p90: list[float]) -> DayAheadForecast:
    return DayAheadForecast(
        forecaster=name,
        made_at=datetime(2022, 8, 1, tzinfo=UTC),
        origin_minute=start,
        start_minute=start,
        step_minutes=15,
        p50_kw=tuple(p50),
        p90_kw=tuple(p90),
    )


def test_the_plan_stresses_a_narrow_band_with_the_weeks_range() -> None:
    served = _day_ahead("model", 1_000_005, [10.0, 10.0, 10.0], [11.0, 11.0, 11.0])
    # The seasonal forecast starts one step earlier: its steps 1..3 line up with 0..2.
    seasonal = _day_ahead("mean-2-weeks", 1_000_005 - 15, [9.0] * 3, [9.0, 14.0, 10.0])
    stressed = with_seasonal_stress(served, seasonal)
    assert stressed.p90_kw == (14.0, 11.0, 11.0)  # the last step has no seasonal value
    assert stressed.p50_kw == served.p50_kw and stressed.forecaster == "model"
    assert with_seasonal_stress(served, None) is served
    assert with_seasonal_stress(seasonal, seasonal) is seasonal


def test_ev_limit_is_the_headroom_under_the_paid_peak() -> None:
    controller = DispatchController(BATTERY, TARIFF, UTC, ev=EvChargers(max_kw=11.0, min_kw=1.4))
    decision = controller.decide(_inputs(load_now_kw=8.0, paid_peak_kw=12.0))
    assert decision.ev_limit_kw is not None
    # 12 kW paid, 8 kW of building load, less whatever the battery charges now.
    assert decision.ev_limit_kw == pytest.approx(max(1.4, 4.0 - max(decision.setpoint_kw, 0.0)))
    busy = controller.decide(_inputs(load_now_kw=20.0, paid_peak_kw=12.0))
    assert busy.ev_limit_kw == pytest.approx(1.4)  # never below the chargers' minimum


def test_stale_soc_assumes_the_reserve_flags_and_never_discharges() -> None:
    battery = Battery(20.0, 10.0, 10.0, 0.92, reserve_pct=20.0)
    controller = DispatchController(battery, TARIFF, UTC)
    decision = controller.decide(_inputs(soc_pct=None, load_now_kw=25.0))
    assert not decision.reliable and "stale" in str(decision.fallback)
    assert decision.soc_assumed_pct == 20.0
    assert decision.setpoint_kw >= 0.0


def test_a_plan_not_solved_in_time_falls_back_to_the_safe_rule_and_says_why() -> None:
    settings = DispatchSettings(plan_time_limit_s=0.0)
    controller = DispatchController(BATTERY, TARIFF, UTC, settings=settings)
    decision = controller.decide(_inputs(load_now_kw=30.0, paid_peak_kw=20.0))
    assert decision.plan is None and not decision.reliable
    assert "not solved within 0 s" in str(decision.fallback)
    # The safe rule defends the peak already paid: five minutes at 10 kW measured, ten to come
    # at 30 kW, so (50 + 10 * (30 - 5)) / 15 = 20 kW.
    assert decision.cap_kw == pytest.approx(20.0)
    assert decision.setpoint_kw == pytest.approx(-5.0)
    without_forecast = DispatchController(BATTERY, TARIFF, UTC).decide(
        _inputs(forecast_p50_kw=None, forecast_start_minute=None)
    )
    assert without_forecast.fallback == "no plan: no day-ahead forecast"


def test_a_missing_meter_reading_holds_the_battery_and_says_so() -> None:
    controller = DispatchController(BATTERY, TARIFF, UTC, ev=EvChargers(max_kw=11.0, min_kw=1.4))
    decision = controller.decide(_inputs(load_now_kw=math.nan))
    assert decision.setpoint_kw == 0.0 and decision.ev_limit_kw == pytest.approx(1.4)
    assert not decision.reliable and "meter" in str(decision.fallback)
    # The next minute with a reading is planned and acted on again.
    assert controller.decide(_inputs(load_now_kw=20.0)).setpoint_kw < 0


def test_no_forecast_falls_back_to_defending_the_floor() -> None:
    controller = DispatchController(BATTERY, TARIFF, UTC)
    decision = controller.decide(
        _inputs(forecast_p50_kw=None, forecast_p90_kw=None, load_now_kw=20.0)
    )
    assert decision.plan is None and not decision.reliable
    assert decision.cap_kw == pytest.approx(12.0)
    assert decision.setpoint_kw < 0  # the live layer still holds the peak paid


def test_impossible_battery_settings_stop_start_up() -> None:
    for bad in (
        {"battery_capacity_kwh": 0.0},
        {"battery_efficiency": 1.5},
        {"battery_reserve_pct": 90.0, "battery_max_pct": 80.0},
        {"tou_prices": "25:0.1"},
    ):
        with pytest.raises(ValueError):
            Settings(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="efficiency"):
        Battery(20.0, 10.0, 10.0, efficiency=0.0)


def _synthetic_days(days: int, seed: int = 4) -> np.ndarray:
    """Minute load: 5 kW nights, 15 kW days, a 25 kW spike of 30 minutes every afternoon."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * 1440)
    minute_of_day = t % 1440
    load = np.where((minute_of_day >= 8 * 60) & (minute_of_day < 18 * 60), 15.0, 5.0)
    for day in range(days):
        lo = day * 1440 + 14 * 60 + int(rng.integers(0, 15))
        load[lo : lo + 30] = 25.0
    return load + rng.normal(0, 0.3, len(t))


def _seasonal_planner(battery: Battery, start: int) -> PlannerController:
    """The service's controller on the seasonal baseline, re-planning every 15 minutes."""
    baseline = SeasonalMeanForecaster(weeks=2)
    return PlannerController(
        "baseline",
        DispatchController(
            battery, TARIFF, UTC, settings=DispatchSettings(replan_every_minutes=15)
        ),
        lambda history, at: baseline.day_ahead(history, UTC, at),
        baseline.day_ahead_history_minutes,
        start,
        UTC,
    )


def test_closed_loop_replay_never_bills_more_than_no_battery_and_respects_limits() -> None:
    # Eight days of history, then two days replayed (the forecast has a week-ago day to go on).
    load = _synthetic_days(10)
    start = 28_000_000  # a UTC minute (2023-03-28 10:40: the replay starts mid-interval)
    first = 8 * 1440
    span = (first, len(load))
    none = simulate_month(NoBattery(), load, start, *span, None, 50.0, 15, "synthetic")
    planner = _seasonal_planner(BATTERY, start)
    planned = simulate_month(planner, load, start, *span, BATTERY, 50.0, 15, "synthetic")
    threshold = simulate_month(
        Threshold(20.0, BATTERY), load, start, *span, BATTERY, 50.0, 15, "synthetic"
    )
    best = month_optimum(load, start, *span, BATTERY, 50.0, 15, "synthetic")
    assert planned.violations == 0 and threshold.violations == 0
    assert best.billed_kw <= planned.billed_kw + 1e-6
    # The afternoon spike is 10 kW over the day's 15 kW: the plan holds most of it.
    assert planned.billed_kw < none.billed_kw - 5.0
    assert planned.solve_ms and max(planned.solve_ms) < 1000


def test_a_site_exporting_pv_is_planned_not_forced_to_charge() -> None:
    # A full battery and a forecast that exports at midday (PV over the load): the plan must
    # still solve (no forced charging into a full battery) and must not discharge into export.
    load = [10.0] * 96
    load[40:56] = [-6.0] * 16
    request = _request(
        load, floor=10.0, start_kwh=BATTERY.max_kwh, max_discharge_kw=np.clip(load, 0.0, 10.0)
    )
    plan = solve_plan(request, BATTERY, TARIFF)
    assert np.all(plan.battery_kw[40:56] >= -1e-6)
    assert plan.planned_peak_kw == pytest.approx(10.0)


def test_the_optimum_and_the_replay_take_a_pv_site_that_exports(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The optimum with negative intervals solves, and a closed-loop replay of a PV site (the
    # synthetic days less a midday PV bell that takes the net load below zero) plans every time,
    # never bills more than no battery and keeps every limit.
    result = optimum_peak(
        np.array([10.0, -5.0, 20.0]),
        np.array([10.0, 0.0, 10.0]),
        BATTERY,
        start_kwh=BATTERY.max_kwh,
        end_at_least_kwh=0.0,
    )
    assert result.billed_kw == pytest.approx(10.0)
    assert result.battery_kw[1] >= -1e-6
    load = _synthetic_days(10)
    minute_of_day = np.arange(len(load)) % 1440
    hours = minute_of_day / 60.0
    load = load - np.where((hours > 7) & (hours < 19), 22.0 * np.sin(np.pi * (hours - 7) / 12), 0)
    assert load.min() < -5.0
    start = 28_000_000
    span = (8 * 1440, len(load))
    planner = _seasonal_planner(BATTERY, start)
    with caplog.at_level(logging.WARNING, logger="core.dispatch.controller"):
        planned = simulate_month(planner, load, start, *span, BATTERY, 50.0, 15, "pv")
    assert not [r for r in caplog.records if "not solved" in r.getMessage()]
    none = simulate_month(NoBattery(), load, start, *span, None, 50.0, 15, "pv")
    best = month_optimum(load, start, *span, BATTERY, 50.0, 15, "pv")
    assert planned.violations == 0
    assert best.billed_kw <= planned.billed_kw + 1e-6 <= none.billed_kw + 1e-6


def test_a_building_and_battery_scaled_together_dispatch_the_same_way() -> None:
    # Nothing in the controller is in absolute kW: forty times the load with forty times the
    # battery bills forty times the kW and moves forty times the energy.
    rng = np.random.default_rng(7)
    base = _synthetic_days(10) + rng.choice([0.0, 6.0, 12.0], size=10 * 1440)  # cycling
    start = 28_000_000
    span = (8 * 1440, len(base))
    results = []
    for scale in (1.0, 40.0):
        battery = Battery(20.0 * scale, 10.0 * scale, 10.0 * scale, efficiency=0.92)
        planner = _seasonal_planner(battery, start)
        load = base * scale
        results.append(simulate_month(planner, load, start, *span, battery, 50.0, 15, "scaled"))
    small, large = results
    assert large.billed_kw == pytest.approx(40.0 * small.billed_kw, rel=1e-6)
    assert large.throughput_kwh == pytest.approx(40.0 * small.throughput_kwh, rel=1e-6)


def test_a_hold_value_makes_the_plan_charge_as_early_as_it_can() -> None:
    # An empty battery, flat prices, a 30 kW interval at step 8: charging in any of steps 0-7
    # costs the same, so only the hold value says when. With it the plan charges at full power
    # from step 0 (10 kW for 15 min stores 2.3 kWh) and discharges only in the spike.
    load = [5.0] * 8 + [30.0] + [5.0] * 7
    plan = solve_plan(
        _request(load, 0.0, start_kwh=0.0, hold_value_per_kwh_step=1e-4), BATTERY, TARIFF
    )
    assert plan.battery_kw[0] == pytest.approx(BATTERY.charge_kw)
    assert plan.soc_kwh[0] == pytest.approx(10.0 * 0.25 * 0.92)
    assert plan.planned_peak_kw == pytest.approx(20.0)
    assert all(kw >= -1e-9 for k, kw in enumerate(plan.battery_kw) if k != 8)


def test_the_perfect_day_ahead_is_the_true_load_from_the_minute_it_is_made() -> None:
    start = 27_999_990  # 2023-03-28 10:30 UTC
    load = np.arange(3 * 1440, dtype=np.float64)
    history = MinuteHistory(start, load[:20])
    forecast = PerfectDayAhead(load, start)(history, datetime.fromtimestamp((start + 20) * 60, UTC))
    assert forecast is not None and forecast.steps == 96
    assert forecast.start_minute == start + 15
    # The step in progress: minutes 20..29 only; the next one: minutes 30..44.
    assert forecast.p50_kw[0] == pytest.approx(np.mean(load[20:30]))
    assert forecast.p50_kw[1] == pytest.approx(np.mean(load[30:45]))
    assert forecast.p90_kw == forecast.p50_kw


def test_the_plan_followed_on_the_true_load_comes_near_the_optimum() -> None:
    # The perfect-forecast replay row: the plan made every minute on the true load and followed
    # without the live layer. On the synthetic days it reaches the month's optimum.
    load = _synthetic_days(4)
    start = 28_000_000
    span = (1440, len(load))
    planner = PlannerController(
        "perfect-forecast",
        DispatchController(
            BATTERY,
            TARIFF,
            UTC,
            settings=DispatchSettings(
                replan_every_minutes=15, follow_plan_only=True, hold_value_per_kwh_step=1e-4
            ),
        ),
        PerfectDayAhead(load, start),
        1,
        start,
        UTC,
        refresh_every_minute=True,
    )
    followed = simulate_month(planner, load, start, *span, BATTERY, 50.0, 15, "synthetic")
    best = month_optimum(load, start, *span, BATTERY, 50.0, 15, "synthetic")
    none = simulate_month(NoBattery(), load, start, *span, None, 50.0, 15, "synthetic")
    assert followed.violations == 0
    assert best.billed_kw - 1e-6 <= followed.billed_kw <= best.billed_kw + 0.3
    assert none.billed_kw - followed.billed_kw > 8.0


def test_optimum_matches_a_hand_computed_case() -> None:
    # Two intervals at 10 kW and one at 20 kW; 20 kWh at 100 % efficiency can take the peak
    # interval down until all three are equal: 40 / 3 kW, costing 6.67 kW for 15 min = 1.67 kWh.
    battery = Battery(20.0, 10.0, 10.0, efficiency=1.0)
    result = optimum_peak(
        np.array([10.0, 10.0, 20.0]),
        np.array([10.0, 10.0, 10.0]),
        battery,
        start_kwh=10.0,
        end_at_least_kwh=0.0,
    )
    assert result.billed_kw == pytest.approx(10.0)


def test_the_service_has_a_seasonal_day_ahead_to_stress_the_plan_with() -> None:
    from core.accuracy import LiveErrorTracker
    from core.compute import SnapshotComputer
    from core.series import MinuteSeries
    from core.signals import LoadClassifier

    series = MinuteSeries(3 * 7 * 1440)
    end = 28_000_000 + 3 * 7 * 1440 - 1
    minutes = np.arange(end - 3 * 7 * 1440 + 1, end + 1, dtype=np.int64)
    series.set_many(minutes, _synthetic_days(21))
    computer = SnapshotComputer(
        series, LoadClassifier(90, 10, 900, 60), LiveErrorTracker(), UTC, 1440
    )
    seasonal = computer.seasonal_day_ahead(end, datetime(2023, 1, 1, tzinfo=UTC))
    assert seasonal is not None and seasonal.p90_kw is not None
    assert max(seasonal.p90_kw) > 20.0  # the afternoon spike of earlier weeks


def _service_decision(
    end: int,
    tz: ZoneInfo,
    interval: int,
    sliding: bool = False,
    gaps: tuple[int, ...] = (),
    load: np.ndarray | None = None,
) -> tuple[Any, DispatchInputs, Any]:
    """The service's dispatch decision for the minute after ``end`` over three weeks of the
    synthetic days or ``load`` (``gaps``: minutes with no reading), with the inputs the
    controller got."""
    from core.accuracy import LiveErrorTracker
    from core.compute import SnapshotComputer
    from core.demand import OptionalInputs
    from core.demand import Reading as DemandReading
    from core.series import MinuteSeries
    from core.signals import LoadClassifier

    series = MinuteSeries(3 * 7 * 1440)
    minutes = np.arange(end - 3 * 7 * 1440 + 1, end + 1, dtype=np.int64)
    series.set_many(minutes, _synthetic_days(21) if load is None else load)
    for minute in gaps:
        series.set(minute, math.nan)
    controller = DispatchController(BATTERY, TARIFF, tz)
    computer = SnapshotComputer(
        series,
        LoadClassifier(90, 10, 900, 60),
        LiveErrorTracker(),
        tz,
        1440,
        dispatch=controller,
        interval_minutes=interval,
        sliding_window=sliding,
    )
    now = datetime(2023, 1, 1, tzinfo=UTC)
    day_ahead = computer.seasonal_day_ahead(end, now)
    demand = cast(Any, SimpleNamespace(period_peak_kw=12.0, target_kw=None, rest_building_kw=None))
    inputs = OptionalInputs(battery_soc_pct=DemandReading(60.0, now))
    seen: list[DispatchInputs] = []
    decide = controller.decide
    controller.decide = lambda given: (seen.append(given), decide(given))[1]  # type: ignore[method-assign]
    decision = computer.plan_dispatch(end, now, demand, day_ahead, inputs, None)
    assert decision is not None and decision.plan is not None
    return decision, seen[0], series


def test_the_service_plans_on_the_billed_interval_across_a_meter_gap() -> None:
    # India (UTC+5:30) bills 60-minute intervals on the local hour: at 50 minutes past a UTC hour
    # the billed interval started 20 minutes ago, not 50.
    end = 28_000_000 + 3 * 7 * 1440 + 10 - 1  # the origin; the setpoint is for the next minute
    minute = end + 1
    assert minute % 60 == 50
    # Two minutes of this interval never came.
    decision, given, series = _service_decision(
        end, ZoneInfo("Asia/Kolkata"), 60, gaps=(end - 3, end - 2)
    )
    assert decision.plan_start_minute == minute - 20
    # The gap counts at the mean of the measured minutes: 20 minutes elapsed, not 18.
    values = [series.get(m) for m in range(minute - 20, minute)]
    measured = [v for v in values if not math.isnan(v)]
    fill = sum(measured) / len(measured)
    assert given.interval_grid_kw == pytest.approx([fill if math.isnan(v) else v for v in values])
    assert not given.sliding


def test_the_service_plans_for_a_site_that_exports_pv() -> None:
    # Three weeks of a net meter that exports around noon: the day ahead forecasts export, and
    # the plan solves on it (no fallback to the safe rule) without discharging into it.
    load = _synthetic_days(21)
    hours = (np.arange(len(load)) % 1440) / 60.0
    load = load - np.where((hours > 7) & (hours < 19), 22.0 * np.sin(np.pi * (hours - 7) / 12), 0)
    end = 28_000_000 + 3 * 7 * 1440 - 1
    decision, given, _ = _service_decision(end, UTC, 15, load=load)
    assert given.forecast_p50_kw is not None and min(given.forecast_p50_kw) < -3.0
    assert decision.fallback is None
    exporting = np.asarray(decision.plan_load_p90_kw) < 0
    assert exporting.any() and np.all(decision.plan.battery_kw[exporting] >= -1e-6)


def test_the_service_plans_a_sliding_window_on_the_minutes_before() -> None:
    end = 28_000_000 + 3 * 7 * 1440 + 7 - 1
    decision, given, series = _service_decision(end, UTC, 15, sliding=True)
    assert decision.plan_start_minute == end - 13
    # The window the coming minute closes: the 14 minutes before it, wherever the clock is.
    assert given.sliding
    assert given.interval_grid_kw == pytest.approx(
        [series.get(m) for m in range(end - 13, end + 1)]
    )


def test_the_solver_prints_nothing_on_stdout() -> None:
    # HiGHS writes a copyright banner when a process builds its first instance; the service's
    # stdout carries only its own lines.
    code = "from core.dispatch.planner import new_highs\nnew_highs()\nprint('done')\n"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
        check=True,
    )
    assert result.stdout == "done\n"


def test_the_answer_to_the_projected_rest_is_counted_but_the_setpoint_follows_the_meter() -> None:
    """The demand projection puts the interval's rest above the latest minute (a forecast
    rise): the setpoint still answers the meter, and the answer the warning counts
    (``rest_kw``) is the live layer's rule on the projected load, within the SOC."""

    def decide(rest_load_kw: float | None, soc_pct: float = 50.0) -> Any:
        controller = DispatchController(BATTERY, TARIFF, ZoneInfo("UTC"))
        return controller.decide(
            DispatchInputs(
                minute=1_000_005,
                step_minutes=15,
                interval_grid_kw=[20.0] * 5,
                load_now_kw=20.0,
                forecast_start_minute=None,
                forecast_p50_kw=None,
                forecast_p90_kw=None,
                paid_peak_kw=21.5,
                target_kw=None,
                soc_pct=soc_pct,
                rest_load_kw=rest_load_kw,
            )
        )

    held = decide(None)
    projected = decide(30.0)
    # Under the peak already paid the meter lets it charge: (15 x 21.5 - 100) / 10 - 20 - 0.5.
    assert held.setpoint_kw == pytest.approx(1.75)
    assert held.rest_kw == pytest.approx(held.setpoint_kw)
    assert projected.setpoint_kw == pytest.approx(held.setpoint_kw)
    # At the projected 30 kW it would discharge 30 - (15 x 21.5 - 100) / 10 = 7.75 kW.
    assert projected.rest_kw == pytest.approx(-7.75)
    # An almost empty battery answers only what its energy holds over the 10 minutes left.
    low = decide(30.0, soc_pct=2.0)
    available_kw = (BATTERY.kwh(2.0) - BATTERY.min_kwh) * BATTERY.efficiency * 60.0 / 10.0
    assert low.rest_kw == pytest.approx(-min(7.75, available_kw))


@pytest.mark.parametrize("plan_forecast", [None, "trained", "baseline"])
def test_the_plan_uses_the_day_ahead_the_self_tuning_chose(plan_forecast: str | None) -> None:
    from dataclasses import replace

    from core.accuracy import LiveErrorTracker
    from core.compute import SnapshotComputer
    from core.demand import OptionalInputs
    from core.demand import Reading as DemandReading
    from core.series import MinuteSeries
    from core.signals import LoadClassifier

    tz = ZoneInfo("UTC")
    end = 28_000_000 + 3 * 7 * 1440 - 1
    series = MinuteSeries(3 * 7 * 1440)
    minutes = np.arange(end - 3 * 7 * 1440 + 1, end + 1, dtype=np.int64)
    series.set_many(minutes, _synthetic_days(21))
    controller = DispatchController(BATTERY, TARIFF, tz)
    controller.use_settings(DispatchSettings(), None, plan_forecast)
    computer = SnapshotComputer(
        series, LoadClassifier(90, 10, 900, 60), LiveErrorTracker(), tz, 1440, dispatch=controller
    )
    now = datetime(2023, 1, 1, tzinfo=UTC)
    seasonal = computer.seasonal_day_ahead(end, now)
    assert seasonal is not None
    # A served model's day-ahead: twice the seasonal's.
    model = replace(
        seasonal,
        forecaster="model-v1",
        p50_kw=tuple(2 * v for v in seasonal.p50_kw),
        p10_kw=None,
        p90_kw=tuple(2 * v for v in seasonal.p50_kw),
    )
    seen: list[DispatchInputs] = []
    decide = controller.decide
    controller.decide = lambda given: (seen.append(given), decide(given))[1]  # type: ignore[method-assign]
    demand = cast(Any, SimpleNamespace(period_peak_kw=12.0, target_kw=None, rest_building_kw=None))
    inputs = OptionalInputs(battery_soc_pct=DemandReading(60.0, now))
    computer.plan_dispatch(end, now, demand, model, inputs, None)
    planned = seen[0].forecast_p50_kw
    expected = seasonal.p50_kw if plan_forecast == "baseline" else model.p50_kw
    assert planned == pytest.approx(expected)

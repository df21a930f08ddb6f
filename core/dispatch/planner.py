"""The receding-horizon plan: a linear program over the next 24 h in demand-interval steps.

Solved with HiGHS (``highspy``). Decision variables per step: battery charge and discharge power
(interval averages) and the stored energy at the end of the step; one variable for the planned
billing peak. The objective prices the rise of the billing-period peak above the floor (the
effective target or the peak already paid, whichever is higher), the energy the site imports, a
small throughput cost, and credits the energy left at the horizon so the plan does not empty the
battery at its end. Step 0 is the interval in progress: its elapsed minutes are already measured,
so only the remaining minutes can be changed.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import highspy
import numpy as np
import numpy.typing as npt

from core.dispatch.assets import Battery, Tariff

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """Everything one plan needs, in interval steps starting with the interval in progress."""

    load_kw: FloatArray  # forecast building load, average kW of each step
    max_discharge_kw: FloatArray  # per step: min(load, discharge limit) so the site never exports
    energy_price: FloatArray  # per step, per kWh
    step_minutes: int
    elapsed_minutes: int  # of step 0
    elapsed_grid_kwmin: float  # sum of the grid kW over step 0's elapsed minutes
    start_kwh: float
    floor_kw: float  # max(effective target, billing-period peak so far)
    terminal_value_per_kwh: float
    # A small value on each kWh stored at the end of every step. With flat energy prices the plan
    # is indifferent to when it charges, and the solver's pick may leave charging to the steps
    # just before a peak; this breaks the tie towards charging early and discharging late.
    hold_value_per_kwh_step: float = 0.0


@dataclass(frozen=True, slots=True)
class PlanResult:
    """The solved plan: per-step battery power and energy, grid, and the planned peak."""

    battery_kw: FloatArray  # + charge / - discharge, average over each step's remaining minutes
    soc_kwh: FloatArray  # at the end of each step
    grid_kw: FloatArray  # interval-average grid import of each step (step 0 includes the past)
    planned_peak_kw: float
    solve_ms: float


def _construct_first_highs_quietly() -> None:
    """HiGHS prints a copyright banner to stdout when the process builds its first instance,
    before any option can turn output off. Build that one here, at import (start-up, before the
    service runs threads), with stdout pointed at /dev/null, so the service's stdout carries only
    its own lines."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no stdout to protect (closed, or not a file descriptor)
        highspy.Highs()  # type: ignore[no-untyped-call]
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()  # type: ignore[no-untyped-call]
    finally:
        os.dup2(saved, 1)
        os.close(saved)


_construct_first_highs_quietly()


def new_highs() -> highspy.Highs:
    """A silent HiGHS instance."""
    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    return h


class SparseRows:
    """Constraint rows collected one at a time, added to HiGHS in one call (CSR form)."""

    def __init__(self) -> None:
        self._lower: list[float] = []
        self._upper: list[float] = []
        self._starts: list[int] = []
        self._indices: list[int] = []
        self._values: list[float] = []

    def add(self, cols: list[int], coefs: list[float], lo: float, hi: float) -> None:
        """One row: lo <= sum(coefs * x[cols]) <= hi."""
        self._starts.append(len(self._indices))
        self._indices.extend(cols)
        self._values.extend(coefs)
        self._lower.append(lo)
        self._upper.append(hi)

    def add_to(self, h: highspy.Highs) -> None:
        """Add every row to the model."""
        h.addRows(
            len(self._lower),
            np.array(self._lower),
            np.array(self._upper),
            len(self._indices),
            np.array(self._starts, dtype=np.int32),
            np.array(self._indices, dtype=np.int32),
            np.array(self._values),
        )


class PlanInfeasible(RuntimeError):
    """HiGHS found no optimal plan."""


def solve_plan(request: PlanRequest, battery: Battery, tariff: Tariff) -> PlanResult:
    """Solve the plan LP; raise PlanInfeasible when HiGHS does not return an optimum."""
    started = time.perf_counter()
    n = len(request.load_kw)
    step_h = request.step_minutes / 60.0
    remaining0 = request.step_minutes - request.elapsed_minutes
    dt_h = np.full(n, step_h)
    dt_h[0] = remaining0 / 60.0
    eff = battery.efficiency
    c0, d0, e0, p = 0, n, 2 * n, 3 * n
    count = 3 * n + 1

    # Cost: demand charge on the peak, energy on every kWh imported, throughput, terminal value.
    # grid_k * dt_k = (load_k + c_k - d_k) * dt_k; only the c and d parts depend on the plan.
    cost = np.zeros(count)
    cost[p] = tariff.demand_charge_per_kw
    cost[c0 : c0 + n] = (request.energy_price + tariff.throughput_cost_per_kwh) * dt_h
    cost[d0 : d0 + n] = (-request.energy_price + tariff.throughput_cost_per_kwh) * dt_h
    cost[e0 : e0 + n] = -request.hold_value_per_kwh_step
    cost[e0 + n - 1] -= request.terminal_value_per_kwh

    lower = np.zeros(count)
    upper = np.empty(count)
    upper[c0 : c0 + n] = battery.charge_kw
    upper[d0 : d0 + n] = np.minimum(battery.discharge_kw, request.max_discharge_kw)
    start_kwh = min(max(request.start_kwh, 0.0), battery.capacity_kwh)
    # A start outside the SOC window (a stale or odd reading) must not make the plan infeasible.
    lower[e0 : e0 + n] = min(battery.min_kwh, start_kwh)
    upper[e0 : e0 + n] = max(battery.max_kwh, start_kwh)
    lower[p] = request.floor_kw
    upper[p] = highspy.kHighsInf

    inf = highspy.kHighsInf
    rows = SparseRows()
    row = rows.add
    for k in range(n):
        cols = [e0 + k, c0 + k, d0 + k]
        coefs = [1.0, -eff * dt_h[k], dt_h[k] / eff]
        if k == 0:
            row(cols, coefs, start_kwh, start_kwh)
        else:
            row([*cols, e0 + k - 1], [*coefs, -1.0], 0.0, 0.0)
        load = float(request.load_kw[k])
        if k == 0:
            # (elapsed + remaining * (load + c - d)) / step <= P
            share = remaining0 / request.step_minutes
            past = request.elapsed_grid_kwmin / request.step_minutes
            row([c0, d0, p], [share, -share, -1.0], -inf, -(past + share * load))
        else:
            row([c0 + k, d0 + k, p], [1.0, -1.0, -1.0], -inf, -load)
        # The battery never makes the site export; a site exporting on its own (PV over the
        # load) is not forced to charge.
        row([c0 + k, d0 + k], [1.0, -1.0], -max(load, 0.0), inf)

    h = new_highs()
    h.addVars(count, lower, upper)
    h.changeColsCost(count, np.arange(count, dtype=np.int32), cost)
    rows.add_to(h)
    h.run()
    status = h.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        raise PlanInfeasible(h.modelStatusToString(status))
    x = np.array(h.getSolution().col_value)
    battery_kw = x[c0 : c0 + n] - x[d0 : d0 + n]
    grid = request.load_kw + battery_kw
    grid[0] = (
        request.elapsed_grid_kwmin + remaining0 * (request.load_kw[0] + battery_kw[0])
    ) / request.step_minutes
    return PlanResult(
        battery_kw=battery_kw,
        soc_kwh=x[e0 : e0 + n],
        grid_kw=grid,
        planned_peak_kw=float(x[p]),
        solve_ms=(time.perf_counter() - started) * 1000.0,
    )

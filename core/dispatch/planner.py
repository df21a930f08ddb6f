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
from collections.abc import Callable
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
    """HiGHS found no optimal plan (infeasible, or not solved within the time limit)."""


# The longest one plan may take. A plan solves in about 1 ms here (the dispatch bench's p99) and
# runs on the event loop's thread every minute; one that HiGHS has not finished by then is given
# up, and the controller's safe rule applies for that minute and says so.
PLAN_TIME_LIMIT_S = 0.25


def solve_plan(request: PlanRequest, battery: Battery, tariff: Tariff) -> PlanResult:
    """Solve the plan LP once; raise PlanInfeasible when HiGHS does not return an optimum."""
    return PlanSolver(battery, tariff).solve(request)


def _check_finite(request: PlanRequest) -> None:
    """Raise PlanInfeasible when a value of the request is NaN or infinite (HiGHS would refuse it
    and, on a kept model, keep the previous request's value)."""
    arrays = {
        "load_kw": request.load_kw,
        "max_discharge_kw": request.max_discharge_kw,
        "energy_price": request.energy_price,
    }
    scalars = {
        "elapsed_grid_kwmin": request.elapsed_grid_kwmin,
        "start_kwh": request.start_kwh,
        "floor_kw": request.floor_kw,
        "terminal_value_per_kwh": request.terminal_value_per_kwh,
        "hold_value_per_kwh_step": request.hold_value_per_kwh_step,
    }
    bad = [name for name, values in arrays.items() if not np.all(np.isfinite(values))]
    bad += [name for name, value in scalars.items() if not np.isfinite(value)]
    if bad:
        raise PlanInfeasible("not a finite number: " + ", ".join(bad))


class PlanSolver:
    """The plan LP kept in one HiGHS model between solves.

    The controller re-plans every minute with the same shape (96 steps): only the loads, prices,
    bounds and the interval in progress's share change. Building the model once and changing
    those in place lets HiGHS start from the last optimal basis, instead of a model built row by
    row in Python and solved from scratch each minute. A request of another length rebuilds it.
    """

    def __init__(
        self,
        battery: Battery,
        tariff: Tariff,
        time_limit_s: float = PLAN_TIME_LIMIT_S,
        new_model: Callable[[], highspy.Highs] = new_highs,
    ) -> None:
        self._battery = battery
        self._tariff = tariff
        self._time_limit_s = max(0.0, time_limit_s)
        self._new_model = new_model  # a test keeps the model to read the limit each solve sets
        self._highs: highspy.Highs | None = None
        self._shape: tuple[int, int] = (0, 0)

    @property
    def time_limit_s(self) -> float:
        """The longest one solve may take."""
        return self._time_limit_s

    @time_limit_s.setter
    def time_limit_s(self, value: float) -> None:
        self._time_limit_s = max(0.0, value)

    def _build(self, n: int, step_minutes: int) -> highspy.Highs:
        """The model's structure for ``n`` steps of ``step_minutes``; the values that change
        from request to request are set by ``solve``."""
        eff = self._battery.efficiency
        step_h = step_minutes / 60.0
        c0, d0, e0, p = 0, n, 2 * n, 3 * n
        count = 3 * n + 1
        inf = highspy.kHighsInf
        h = self._new_model()
        h.addVars(count, np.zeros(count), np.full(count, inf))
        rows = SparseRows()
        # Rows 0..n-1: energy balance e_k - e_{k-1} - eff*dt*c_k + dt/eff*d_k = (start or 0).
        for k in range(n):
            cols = [e0 + k, c0 + k, d0 + k]
            coefs = [1.0, -eff * step_h, step_h / eff]  # step 0's set per request
            if k:
                cols.append(e0 + k - 1)
                coefs.append(-1.0)
            rows.add(cols, coefs, 0.0, 0.0)
        # Rows n..2n-1: the step's average grid under the peak: share*(c - d) - P <= -(...).
        for k in range(n):
            rows.add([c0 + k, d0 + k, p], [1.0, -1.0, -1.0], -inf, 0.0)
        # Rows 2n..3n-1: the battery never makes the site export: c - d >= -max(load, 0).
        for k in range(n):
            rows.add([c0 + k, d0 + k], [1.0, -1.0], 0.0, inf)
        rows.add_to(h)
        return h

    def solve(self, request: PlanRequest) -> PlanResult:
        """Solve ``request``; raise PlanInfeasible when HiGHS does not return an optimum."""
        started = time.perf_counter()
        battery, tariff = self._battery, self._tariff
        _check_finite(request)
        n = len(request.load_kw)
        shape = (n, request.step_minutes)
        if self._highs is None or self._shape != shape:
            self._highs, self._shape = self._build(*shape), shape
        h = self._highs
        step_h = request.step_minutes / 60.0
        remaining0 = request.step_minutes - request.elapsed_minutes
        dt_h = np.full(n, step_h)
        dt_h[0] = remaining0 / 60.0
        eff = battery.efficiency
        c0, d0, e0, p = 0, n, 2 * n, 3 * n
        count = 3 * n + 1
        inf = highspy.kHighsInf
        load = np.asarray(request.load_kw, dtype=np.float64)

        # Cost: demand charge on the peak, energy on every kWh imported, throughput, terminal
        # value. grid_k * dt_k = (load_k + c_k - d_k) * dt_k; only c and d depend on the plan.
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
        # A start outside the SOC window (a stale or odd reading) must not make the plan
        # infeasible.
        lower[e0 : e0 + n] = min(battery.min_kwh, start_kwh)
        upper[e0 : e0 + n] = max(battery.max_kwh, start_kwh)
        lower[p] = request.floor_kw
        upper[p] = inf

        # Step 0 is the interval in progress: its energy row counts only the remaining minutes,
        # and its average grid is (elapsed + remaining * (load + c - d)) / step <= P.
        share = remaining0 / request.step_minutes
        past = request.elapsed_grid_kwmin / request.step_minutes
        h.changeCoeff(0, c0, -eff * dt_h[0])
        h.changeCoeff(0, d0, dt_h[0] / eff)
        h.changeCoeff(n, c0, share)
        h.changeCoeff(n, d0, -share)
        row_lower = np.empty(3 * n)
        row_upper = np.empty(3 * n)
        row_lower[:n] = 0.0
        row_upper[:n] = 0.0
        row_lower[0] = row_upper[0] = start_kwh
        row_lower[n : 2 * n] = -inf
        row_upper[n : 2 * n] = -load
        row_upper[n] = -(past + share * load[0])
        # The battery never makes the site export; a site exporting on its own (PV over the
        # load) is not forced to charge.
        row_lower[2 * n :] = -np.maximum(load, 0.0)
        row_upper[2 * n :] = inf

        all_cols = np.arange(count, dtype=np.int32)
        rows_index = np.arange(3 * n, dtype=np.int32)
        statuses = (
            h.changeColsCost(count, all_cols, cost),
            h.changeColsBounds(count, all_cols, lower, upper),
            # In highspy's extension module; its type stub leaves it out.
            h.changeRowsBounds(3 * n, rows_index, row_lower, row_upper),  # type: ignore[attr-defined]
        )
        if any(status == highspy.HighsStatus.kError for status in statuses):
            # HiGHS keeps the old values when it refuses new ones: solving now would answer the
            # previous request.
            self._highs = None
            raise PlanInfeasible("HiGHS refused the plan's bounds or costs")
        # HiGHS's time limit counts the model's run time over all its solves: this solve's
        # limit is the time run so far plus the allowance.
        h.setOptionValue("time_limit", h.getRunTime() + self._time_limit_s)
        h.run()
        status = h.getModelStatus()
        if status == highspy.HighsModelStatus.kTimeLimit:
            # The model is kept: the next request starts from where this solve stopped. A model
            # dropped here would be solved cold next time, the slowest solve there is, and a
            # plan that once missed the limit would miss it again every minute.
            raise PlanInfeasible(f"not solved within {self._time_limit_s:g} s")
        if status != highspy.HighsModelStatus.kOptimal:
            # Start the next request from a model without this one's basis.
            self._highs = None
            raise PlanInfeasible(h.modelStatusToString(status))
        x = np.array(h.getSolution().col_value)
        battery_kw = x[c0 : c0 + n] - x[d0 : d0 + n]
        # Solver round-off (1e-13 kW on a 400 kW battery) is no power: the live layer reads the
        # sign of step 0 (a plan that discharges now forbids charging), and a sign from noise
        # made a building forty times larger with forty times the battery dispatch differently.
        noise = 1e-9 * max(self._battery.charge_kw, self._battery.discharge_kw)
        battery_kw[np.abs(battery_kw) < noise] = 0.0
        grid = load + battery_kw
        grid[0] = (request.elapsed_grid_kwmin + remaining0 * (load[0] + battery_kw[0])) / (
            request.step_minutes
        )
        return PlanResult(
            battery_kw=battery_kw,
            soc_kwh=x[e0 : e0 + n],
            grid_kw=grid,
            planned_peak_kw=float(x[p]),
            solve_ms=(time.perf_counter() - started) * 1000.0,
        )

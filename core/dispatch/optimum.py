"""The perfect-foresight optimum: one linear program over a billing period with the true load.

The load is known minute by minute; the battery is planned per demand interval (the billed
quantity is the interval's average grid import, and within one interval only the interval's
energy matters). Discharge in an interval is bounded by the load so the battery never makes the
site export (a site with PV may export on its own: that is not forced into the battery).
"""

from __future__ import annotations

from dataclasses import dataclass

import highspy
import numpy as np
import numpy.typing as npt

from core.dispatch.assets import Battery
from core.dispatch.planner import SparseRows, new_highs

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class OptimumResult:
    """The best billed demand with perfect foresight, and the battery schedule that reaches it."""

    billed_kw: float
    battery_kw: FloatArray  # per interval, + charge / - discharge (average kW)
    soc_kwh: FloatArray  # at the end of each interval
    throughput_kwh: float


def optimum_peak(
    interval_load_kw: FloatArray,
    interval_max_discharge_kw: FloatArray,
    battery: Battery,
    start_kwh: float,
    interval_minutes: int = 15,
    end_at_least_kwh: float | None = None,
) -> OptimumResult:
    """Minimise the highest interval average of grid import over the period.

    ``interval_max_discharge_kw`` bounds each interval's average discharge (no export: the mean
    of min(load, discharge limit) over its minutes). The battery ends at or above
    ``end_at_least_kwh`` (default: where it started).
    """
    n = len(interval_load_kw)
    dt_h = interval_minutes / 60.0
    eff = battery.efficiency
    end_kwh = start_kwh if end_at_least_kwh is None else end_at_least_kwh
    # Variables: c_k (charge kW), d_k (discharge kW), e_k (kWh at the end of k), P (peak kW).
    c0, d0, e0, p_index = 0, n, 2 * n, 3 * n
    count = 3 * n + 1
    cost = np.zeros(count)
    cost[p_index] = 1.0
    # A tiny throughput cost picks the schedule that cycles least among equal peaks.
    cost[c0 : c0 + n] = 1e-6
    cost[d0 : d0 + n] = 1e-6
    lower = np.zeros(count)
    upper = np.empty(count)
    upper[c0 : c0 + n] = battery.charge_kw
    upper[d0 : d0 + n] = np.minimum(battery.discharge_kw, interval_max_discharge_kw)
    lower[e0 : e0 + n] = battery.min_kwh
    upper[e0 : e0 + n] = battery.max_kwh
    lower[e0 + n - 1] = max(battery.min_kwh, min(end_kwh, battery.max_kwh))
    upper[p_index] = highspy.kHighsInf
    h = new_highs()
    h.addVars(count, lower, upper)
    h.changeColsCost(count, np.arange(count, dtype=np.int32), cost)
    rows = SparseRows()
    row = rows.add
    inf = highspy.kHighsInf
    for k in range(n):
        # Energy balance: e_k - e_{k-1} - eff*dt*c_k + dt/eff*d_k = 0 (e_{-1} = start).
        cols = [e0 + k, c0 + k, d0 + k]
        coefs = [1.0, -eff * dt_h, dt_h / eff]
        rhs = 0.0
        if k == 0:
            rhs = start_kwh
        else:
            cols.append(e0 + k - 1)
            coefs.append(-1.0)
        row(cols, coefs, rhs, rhs)
        # Peak: load + c - d <= P. No export by the battery: load + c - d >= min(load, 0), so a
        # site already exporting (PV over the load) is not forced to charge, only not discharged.
        load = float(interval_load_kw[k])
        row([c0 + k, d0 + k, p_index], [1.0, -1.0, -1.0], -inf, -load)
        row([c0 + k, d0 + k], [1.0, -1.0], -max(load, 0.0), inf)
    rows.add_to(h)
    h.run()
    status = h.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"the optimum LP did not solve: {h.modelStatusToString(status)}")
    x = np.array(h.getSolution().col_value)
    charge, discharge = x[c0 : c0 + n], x[d0 : d0 + n]
    return OptimumResult(
        billed_kw=float(x[p_index]),
        battery_kw=charge - discharge,
        soc_kwh=x[e0 : e0 + n],
        throughput_kwh=float((charge.sum() + discharge.sum()) * dt_h),
    )

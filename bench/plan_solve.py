"""Plan solve time of the service's planner alone: `python -m bench.plan_solve`.

Replays days of a meter file minute by minute through the service's dispatch controller (the
dispatch bench's closed loop, ``core.dispatch.replay``, on the seasonal baseline's day-ahead made
at each interval's start, as the service makes it), re-planning every minute as the service does,
in this one process and nothing else: the states (SOC, the interval so far, the peak paid) are
those of the replay. Prints p50 / p90 / p99 / max of

- ``HiGHS run``: ``Highs.run`` alone (the solver, timed around the call),
- ``plan solve``: ``PlanSolver.solve`` (setting the costs and bounds, the run, reading the plan:
  the ``solve_ms`` the service reports),
- ``re-plan (decide)``: the controller's whole minute (``DispatchController.decide``: the
  forecast put on the plan's intervals, the request, the solve, the live layer),
- ``day-ahead forecast``: the seasonal baseline's forecast (made once per interval, not per
  minute),

with the load average before and after (the machine is shared: the figures are only quiet if the
load average is), and the same stages in this process's CPU time (what preemption by other
processes does not inflate). The first solve builds the HiGHS model: it is reported apart.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from bench.dispatch import bench_battery
from core.dispatch.assets import Tariff
from core.dispatch.controller import DispatchController, DispatchDecision, DispatchInputs
from core.dispatch.replay import PlannerController, simulate_month
from core.forecast.base import DayAheadForecast, MinuteHistory
from core.forecast.baseline import SeasonalMeanForecaster
from core.forecast.meter_csv import load_meter_csv

SHARED_MINUTE_FILE = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "data"
    / "egauge_minute_kw_2022-07_08.csv"
)
START_SOC_PCT = 50.0
TARGET_P99_MS = 10.0


@dataclass(frozen=True, slots=True)
class Distribution:
    """Percentiles of one timed stage (ms)."""

    stage: str
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, stage: str, samples_ms: Sequence[float]) -> Distribution:
        """The distribution of ``samples_ms``."""
        values = np.asarray(samples_ms, dtype=np.float64)
        if len(values) == 0:
            return cls(stage, 0, *(float("nan"),) * 4)
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return cls(stage, len(values), float(p50), float(p90), float(p99), float(values.max()))


class TimedController(DispatchController):
    """The service's controller with its whole minute (``decide``) timed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.decide_ms: list[float] = []
        self.decide_cpu_ms: list[float] = []

    def decide(self, inputs: DispatchInputs) -> DispatchDecision:
        """``DispatchController.decide``, timed."""
        started, cpu = time.perf_counter(), time.process_time()
        decision = super().decide(inputs)
        self.decide_cpu_ms.append((time.process_time() - cpu) * 1000.0)
        self.decide_ms.append((time.perf_counter() - started) * 1000.0)
        return decision


def timed_highs_runs() -> tuple[list[float], list[float], Callable[[], None]]:
    """Time every ``highspy.Highs.run`` in this process (wall and process CPU ms); returns the
    samples and an undo."""
    import highspy

    samples: list[float] = []
    cpu_samples: list[float] = []
    original = highspy.Highs.run

    def run(self: Any) -> Any:
        started, cpu = time.perf_counter(), time.process_time()
        try:
            return original(self)
        finally:
            cpu_samples.append((time.process_time() - cpu) * 1000.0)
            samples.append((time.perf_counter() - started) * 1000.0)

    highspy.Highs.run = run  # type: ignore[method-assign]

    def undo() -> None:
        highspy.Highs.run = original  # type: ignore[method-assign]

    return samples, cpu_samples, undo


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.plan_solve", description=__doc__)
    parser.add_argument("--data", type=Path, default=SHARED_MINUTE_FILE, help="meter CSV")
    parser.add_argument("--tz", default="America/Chicago", help="site time zone (IANA)")
    parser.add_argument(
        "--from",
        dest="date_from",
        default="2022-08-01",
        help="first replayed day (YYYY-MM-DD; the baseline needs two weeks of history before)",
    )
    parser.add_argument("--days", type=float, default=7.0, help="days replayed (one re-plan each)")
    parser.add_argument("--battery-kw", type=float, default=10.0)
    parser.add_argument("--battery-kwh", type=float, default=20.0)
    parser.add_argument("--efficiency", type=float, default=0.92)
    parser.add_argument("--interval-minutes", type=int, default=15, choices=(5, 10, 15, 30, 60))
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Replay the days; the distributions of each stage and the load averages."""
    tz = ZoneInfo(args.tz)
    series = load_meter_csv(args.data, tz)
    start, load = series.start_minute, series.values_kw
    first_day = datetime.strptime(args.date_from, "%Y-%m-%d").replace(tzinfo=tz)
    first = int(first_day.timestamp() // 60) - start
    end = min(len(load), first + int(args.days * 1440))
    if first < 0 or end - first < 60:
        raise SystemExit(f"--from {args.date_from} / --days {args.days}: outside the file")
    battery = bench_battery(args)
    baseline = SeasonalMeanForecaster(weeks=2)
    forecast_ms: list[float] = []

    def day_ahead(history: MinuteHistory, at: datetime) -> DayAheadForecast | None:
        started = time.perf_counter()
        forecast = baseline.day_ahead(history, tz, at)
        forecast_ms.append((time.perf_counter() - started) * 1000.0)
        return forecast

    controller = TimedController(battery, Tariff(), tz)
    replay = PlannerController(
        "baseline", controller, day_ahead, baseline.day_ahead_history_minutes, start, tz
    )
    load_before = os.getloadavg()
    highs_ms, highs_cpu_ms, undo = timed_highs_runs()
    gc.collect()
    started = time.perf_counter()
    cpu_started = time.process_time()
    try:
        month = first_day.strftime("%Y-%m")
        result = simulate_month(
            replay, load, start, first, end, battery, START_SOC_PCT, args.interval_minutes, month
        )
    finally:
        undo()
    wall_s = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started
    load_after = os.getloadavg()
    solve_ms = list(controller.solve_ms)
    stages = [
        Distribution.of("HiGHS run", highs_ms[1:]),
        Distribution.of("plan solve", solve_ms[1:]),
        Distribution.of("re-plan (decide)", controller.decide_ms[1:]),
        Distribution.of("day-ahead forecast", forecast_ms),
        Distribution.of("HiGHS run, CPU", highs_cpu_ms[1:]),
        Distribution.of("re-plan, CPU", controller.decide_cpu_ms[1:]),
    ]
    return {
        "minutes": end - first,
        "plans": len(solve_ms),
        "first_solve_ms": solve_ms[0] if solve_ms else None,
        "first_highs_run_ms": highs_ms[0] if highs_ms else None,
        "stages": stages,
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "load_before": load_before,
        "load_after": load_after,
        "billed_kw": result.billed_kw,
        "violations": result.violations,
    }


def table(report: dict[str, Any], args: argparse.Namespace) -> str:
    """The printed table."""
    lb, la = report["load_before"], report["load_after"]
    lines = [
        f"plan solve: {args.data.name}, {report['minutes']} minutes from {args.date_from}, "
        f"battery {args.battery_kw:g} kW / {args.battery_kwh:g} kWh, "
        f"{args.interval_minutes}-minute intervals, re-plan every minute, one process "
        f"({report['wall_s']:.1f} s wall, {report['cpu_s']:.1f} s CPU)",
        f"load average before {lb[0]:.2f} {lb[1]:.2f} {lb[2]:.2f}, "
        f"after {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} (1 / 5 / 15 min) on {os.cpu_count()} CPUs",
        "",
        f"{'stage':<20} {'count':>6} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}",
    ]
    for s in report["stages"]:
        lines.append(
            f"{s.stage:<20} {s.count:>6} {s.p50_ms:>7.2f} {s.p90_ms:>7.2f} {s.p99_ms:>7.2f} "
            f"{s.max_ms:>7.2f}"
        )
    lines.append("")
    lines.append(
        f"first solve (builds the HiGHS model): {report['first_solve_ms']:.2f} ms "
        f"(HiGHS run {report['first_highs_run_ms']:.2f} ms); billed {report['billed_kw']:.2f} kW, "
        f"{report['violations']} limits broken"
    )
    solve = next(s for s in report["stages"] if s.stage == "plan solve")
    verdict = "met" if solve.p99_ms <= TARGET_P99_MS else "missed"
    lines.append(
        f"target: plan solve p99 <= {TARGET_P99_MS:g} ms: {solve.p99_ms:.2f} ms, {verdict}"
    )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the table, write the JSON."""
    args = _arguments(argv)
    report = measure(args)
    sys.stdout.write(table(report, args))
    if args.json is not None:
        payload = dict(report)
        payload["stages"] = [_as_dict(s) for s in report["stages"]]
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def _as_dict(stage: Distribution) -> dict[str, Any]:
    return {
        "stage": stage.stage,
        "count": stage.count,
        "p50_ms": round(stage.p50_ms, 3),
        "p90_ms": round(stage.p90_ms, 3),
        "p99_ms": round(stage.p99_ms, 3),
        "max_ms": round(stage.max_ms, 3),
    }


if __name__ == "__main__":
    sys.exit(main())

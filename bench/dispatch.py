"""`open-dsm bench dispatch`: closed-loop battery replay against the perfect-foresight optimum.

Minute by minute, each controller decides the battery setpoint from what it has seen so far; the
meter it sees next is the building's load plus the battery power it commanded (the simulated
battery follows within its power limits, SOC window and the load: it never exports). SOC starts
each billing month at 50 %. Billed demand is the highest clock-aligned 15-minute average of grid
import in the local calendar month (``--interval-minutes`` for a tariff with another interval).

Controllers: ``no-battery``; ``threshold-<kW>`` (discharge above it, recharge below it minus
2 kW); ``baseline`` (the service's dispatch controller on the seasonal baseline's day-ahead);
``trained`` (the same controller on a model trained, in a child process, only on data before the
replayed month, when one can be trained and is accepted); with ``--perfect-forecast``,
``perfect-forecast`` (the same plan made every minute on the true load's 15-minute means over
the next 24 h and followed as it is, without the live layer: what the plan is worth apart from the
forecaster; not causal); ``optimum`` (one linear program over the month with the true load,
starting at 50 % and ending at or above it).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from core.calendar import CalendarError, SiteCalendar
from core.calendar_ics import load_calendar_file
from core.dispatch.assets import Battery, Tariff
from core.dispatch.controller import DispatchController, DispatchSettings
from core.dispatch.replay import (
    IntervalRecord,
    MinuteController,
    MonthResult,
    NoBattery,
    PerfectDayAhead,
    PlannerController,
    Threshold,
    TrainedDayAhead,
    month_bounds,
    month_optimum,
    simulate_month,
)
from core.dispatch.tuning import (
    DEFAULT_CANDIDATE,
    MIN_HISTORY_DAYS,
    Candidate,
    CandidateController,
    SelfTuned,
    candidates,
)
from core.forecast.baseline import SeasonalMeanForecaster
from core.forecast.meter_csv import FloatArray, load_meter_csv
from core.timegrid import minute_start

logger = logging.getLogger(__name__)

START_SOC_PCT = 50.0
STEP_MINUTES = 15
# $ per kWh stored per step for the perfect-forecast plan (a tie-break, see PlanRequest).
PERFECT_HOLD_VALUE = 1e-4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `open-dsm bench dispatch`."""
    parser.add_argument("--data", required=True, type=Path, help="meter CSV (timestamp, kW)")
    parser.add_argument("--tz", default="America/Chicago", help="site time zone (IANA)")
    parser.add_argument("--battery-kw", type=float, default=10.0, help="battery power limit")
    parser.add_argument("--battery-kwh", type=float, default=20.0, help="usable capacity")
    parser.add_argument("--efficiency", type=float, default=0.92, help="one-way efficiency")
    parser.add_argument(
        "--thresholds", default="20,25", help="fixed thresholds to compare (kW, comma-separated)"
    )
    parser.add_argument("--from", dest="date_from", default=None, help="first day (YYYY-MM-DD)")
    parser.add_argument("--to", dest="date_to", default=None, help="last day, exclusive")
    parser.add_argument(
        "--replan-minutes",
        type=int,
        default=1,
        help="re-plan every N minutes (1, the default, is what the service does; the live layer "
        "acts every minute either way)",
    )
    parser.add_argument(
        "--interval-minutes",
        type=int,
        default=STEP_MINUTES,
        choices=(5, 10, 15, 20, 30, 60),
        help="the tariff's demand interval, clock-aligned (the service's setting of that name)",
    )
    parser.add_argument(
        "--no-trained", action="store_true", help="skip the trained controller (no training)"
    )
    parser.add_argument(
        "--perfect-forecast",
        action="store_true",
        help="also replay the plan on the true future load (an upper bound for the planner; "
        "1-3 minutes more per month)",
    )
    parser.add_argument(
        "--calendar",
        type=Path,
        default=None,
        help="site calendar (the REST body's JSON or an .ics of holidays): the planners' "
        "forecasts and the trained model read listed days as their day type",
    )
    parser.add_argument(
        "--self-tuned",
        action="store_true",
        help="also replay the self-tuning's candidates and the self-tuned row (each local "
        "midnight, core.dispatch.tuning.choose over the candidates' replays of the last 28 "
        "days: the defaults unless a candidate billed less by more than the switch margin, "
        "in no week more, and held the hardest day no lower; applied the next day; about "
        "five times the baseline's replay time)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")


@dataclass(frozen=True, slots=True)
class Row:
    """One controller in one month, as printed and written."""

    controller: str
    month: str
    billed_kw: float | None
    share_of_optimum: float | None
    throughput_kwh: float | None
    solve_ms_p50: float | None
    solve_ms_p99: float | None
    violations: int
    note: str

    def to_json(self) -> dict[str, Any]:
        """The JSON object the issue specifies (plus note and violations)."""
        return {
            "controller": self.controller,
            "month": self.month,
            "billed_kw": _round(self.billed_kw),
            "share_of_optimum": _round(self.share_of_optimum, 4),
            "throughput_kwh": _round(self.throughput_kwh),
            "solve_ms_p99": _round(self.solve_ms_p99),
            "violations": self.violations,
            "note": self.note,
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _day_minute(text: str | None, tz: ZoneInfo) -> int | None:
    if text is None:
        return None
    day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=tz)
    return int(day.timestamp() // 60)


def _train_before(
    load_kw: FloatArray,
    start_minute: int,
    end_index: int,
    tz: str,
    calendar: SiteCalendar | None = None,
) -> str | None:
    """Train the project's model on the minutes before ``end_index`` in a child process.

    Returns the artifact directory of an accepted model, None when training failed or the model
    did not beat the baselines (the reason is logged).
    """
    from core.storage.migrate import upgrade_to_head
    from core.storage.repository import Storage, create_db_engine
    from core.trainer import run_training

    workdir = Path(tempfile.mkdtemp(prefix="open-dsm-bench-dispatch-"))
    url = f"sqlite:///{workdir / 'train.sqlite3'}"
    engine = create_db_engine(url)
    upgrade_to_head(engine)
    Storage(engine).insert_missing_minutes(start_minute, load_kw[:end_index], "import")
    if calendar is not None:
        Storage(engine).save_calendar(calendar)  # training reads it as the service's does
    engine.dispose()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        outcome = pool.submit(
            run_training, url, str(workdir / "models"), tz, "bench", time_budget_s=50.0
        ).result()
    logger.info("training before the month: %s", outcome.message)
    if outcome.status != "accepted" or outcome.artifact_path is None:
        return None
    return outcome.artifact_path


def _planner(
    name: str,
    battery: Battery,
    tz: ZoneInfo,
    start_minute: int,
    day_ahead: Any,
    history_minutes: int,
    replan_minutes: int,
    perfect: bool = False,
    calendar: SiteCalendar | None = None,
) -> PlannerController:
    settings = DispatchSettings(
        replan_every_minutes=replan_minutes,
        follow_plan_only=perfect,
        hold_value_per_kwh_step=PERFECT_HOLD_VALUE if perfect else 0.0,
    )
    controller = DispatchController(battery, Tariff(), tz, settings=settings)
    return PlannerController(
        name,
        controller,
        day_ahead,
        history_minutes,
        start_minute,
        tz,
        refresh_every_minute=perfect,
        calendar=calendar,
    )


def bench_battery(args: argparse.Namespace) -> Battery:
    """The battery of ``--battery-kw`` / ``--battery-kwh`` / ``--efficiency``, its whole range
    usable (the benches replay the energy, not the service's reserve)."""
    return Battery(
        capacity_kwh=args.battery_kwh,
        charge_kw=args.battery_kw,
        discharge_kw=args.battery_kw,
        efficiency=args.efficiency,
        reserve_pct=0.0,
        max_pct=100.0,
    )


def run(args: argparse.Namespace) -> int:
    """Replay every month of the file through every controller; print a table, write JSON."""
    tz = ZoneInfo(args.tz)
    battery = bench_battery(args)
    series = load_meter_csv(args.data, tz)
    load = series.values_kw
    start = series.start_minute
    calendar = None
    if args.calendar is not None:
        try:
            calendar = load_calendar_file(
                args.calendar,
                minute_start(start).date() - timedelta(days=1),
                minute_start(start + len(load)).date() + timedelta(days=1),
            )
        except CalendarError as exc:
            sys.stderr.write(f"--calendar: {exc}\n")
            return 2
    lo = _day_minute(args.date_from, tz)
    hi = _day_minute(args.date_to, tz)
    months = [
        (month, max(first, (lo - start) if lo else first), min(end, (hi - start) if hi else end))
        for month, first, end in month_bounds(start, len(load), tz)
    ]
    months = [(m, f, e) for m, f, e in months if e - f >= 24 * 60]
    thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
    baseline = SeasonalMeanForecaster(weeks=2)
    rows: list[Row] = []
    started = time.monotonic()
    # The self-tuning's candidates' interval records, all months so far (self-tuned reads only
    # those before each midnight).
    tuning_records: dict[str, list[IntervalRecord]] = {}
    no_battery_records: list[IntervalRecord] = []
    for month, first, end in months:
        logger.info("month %s: %d minutes", month, end - first)
        interval = args.interval_minutes
        optimum = month_optimum(load, start, first, end, battery, START_SOC_PCT, interval, month)
        results: list[tuple[MonthResult, str]] = []
        replay = _MonthReplay(load, start, first, end, month, battery, results, interval)

        no_battery = simulate_month(
            NoBattery(),
            load,
            start,
            first,
            end,
            None,
            START_SOC_PCT,
            interval,
            month,
            no_battery_records,
        )
        results.append((no_battery, ""))
        for threshold in thresholds:
            replay(Threshold(threshold, battery))
        replay(
            _planner(
                "baseline",
                battery,
                tz,
                start,
                lambda h, at: baseline.day_ahead(h, tz, at),
                baseline.day_ahead_history_minutes,
                args.replan_minutes,
                calendar=calendar,
            ),
            records=tuning_records.setdefault(DEFAULT_CANDIDATE, []),
        )
        if args.self_tuned:
            _replay_self_tuned(
                load,
                start,
                months[0][1],
                battery,
                tz,
                baseline,
                replay,
                args,
                tuning_records,
                no_battery_records,
            )
        if not args.no_trained:
            trained_note = _replay_trained(
                load, start, first, battery, tz, args, baseline, replay, month, calendar
            )
            if trained_note is not None:
                results.append((MonthResult("trained", month, float("nan"), 0.0, 0), trained_note))
        if args.perfect_forecast:
            replay(
                _planner(
                    "perfect-forecast",
                    battery,
                    tz,
                    start,
                    PerfectDayAhead(load, start),
                    1,
                    args.replan_minutes,
                    perfect=True,
                ),
                "the plan on the true load, no live layer (not causal)",
            )
        results.append((optimum, "perfect foresight"))
        cut = no_battery.billed_kw - optimum.billed_kw
        for result, note in results:
            missing = result.billed_kw != result.billed_kw  # NaN: not run
            share = None if missing or cut <= 0 else (no_battery.billed_kw - result.billed_kw) / cut
            solve = result.solve_ms
            rows.append(
                Row(
                    controller=result.controller,
                    month=month,
                    billed_kw=None if missing else result.billed_kw,
                    share_of_optimum=share,
                    throughput_kwh=None if missing else result.throughput_kwh,
                    solve_ms_p50=float(np.percentile(solve, 50)) if solve else None,
                    solve_ms_p99=float(np.percentile(solve, 99)) if solve else None,
                    violations=result.violations,
                    note=note,
                )
            )
    _print(rows, args, time.monotonic() - started)
    if args.json is not None:
        args.json.write_text(json.dumps([row.to_json() for row in rows], indent=2) + "\n")
    return 0


@dataclass(slots=True)
class _MonthReplay:
    """Replays one controller over one month and records the result."""

    load: FloatArray
    start: int
    first: int
    end: int
    month: str
    battery: Battery
    results: list[tuple[MonthResult, str]]
    interval_minutes: int = STEP_MINUTES

    def __call__(
        self,
        controller: MinuteController,
        note: str = "",
        records: list[IntervalRecord] | None = None,
        shown: bool = True,
    ) -> MonthResult:
        t0 = time.monotonic()
        result = simulate_month(
            controller,
            self.load,
            self.start,
            self.first,
            self.end,
            self.battery,
            START_SOC_PCT,
            self.interval_minutes,
            self.month,
            records,
        )
        logger.info(
            "  %-14s billed %.2f kW (%.0f s)",
            result.controller,
            result.billed_kw,
            time.monotonic() - t0,
        )
        if shown:
            self.results.append((result, note))
        return result


def candidate_factory(
    baseline: SeasonalMeanForecaster,
    battery: Battery,
    tz: ZoneInfo,
    start: int,
    load: FloatArray,
    step_minutes: int,
) -> Callable[[Candidate], CandidateController]:
    """Builds a candidate's controller planning on the seasonal baseline's day-ahead."""

    def build(candidate: Candidate) -> CandidateController:
        return CandidateController(
            candidate,
            battery,
            tz,
            start,
            lambda h, at: baseline.day_ahead(h, tz, at),
            baseline.day_ahead_history_minutes,
            load,
            step_minutes,
        )

    return build


def _replay_self_tuned(
    load: FloatArray,
    start: int,
    first_index: int,
    battery: Battery,
    tz: ZoneInfo,
    baseline: SeasonalMeanForecaster,
    replay: _MonthReplay,
    args: argparse.Namespace,
    records: dict[str, list[IntervalRecord]],
    no_battery: list[IntervalRecord],
) -> None:
    """The candidates' replays of this month (recorded, not shown), then ``self-tuned``: each
    local midnight the choice on the records before it, as the service's nightly replay."""
    pool = [
        replace(c, settings=replace(c.settings, replan_every_minutes=args.replan_minutes))
        for c in candidates()
    ]

    build = candidate_factory(baseline, battery, tz, start, load, args.interval_minutes)
    for candidate in pool:
        if candidate.name != DEFAULT_CANDIDATE:  # the baseline row is that candidate
            replay(build(candidate), records=records.setdefault(candidate.name, []), shown=False)
    tuned = SelfTuned(build, pool, records, no_battery, start + first_index, tz)
    replay(tuned, note="")
    picks = [choice.chosen for _, choice in tuned.choices]
    counts = {name: picks.count(name) for name in dict.fromkeys(picks)}
    defaults = [choice for _, choice in tuned.choices if choice.note.startswith("defaults")]
    note = "nights: " + ", ".join(f"{name} {count}" for name, count in counts.items())
    if defaults:
        note += f"; {len(defaults)} on the defaults (less than {MIN_HISTORY_DAYS} days of history)"
    result, _ = replay.results[-1]
    replay.results[-1] = (result, note)


def _replay_trained(
    load: FloatArray,
    start: int,
    first: int,
    battery: Battery,
    tz: ZoneInfo,
    args: argparse.Namespace,
    baseline: SeasonalMeanForecaster,
    replay: _MonthReplay,
    month: str,
    calendar: SiteCalendar | None = None,
) -> str | None:
    """Replay the trained controller; a note (and no replay) when no model can be had."""
    from core.forecast.lite import LiteForecaster

    if first < 28 * 1440:
        return "not run: less than 28 days of data before the month to train on"
    artifact = _train_before(load, start, first, args.tz, calendar)
    if artifact is None:
        return "not run: no model trained on the data before the month beat the baselines"
    model = LiteForecaster.load(artifact)
    day_ahead = TrainedDayAhead(model, baseline, tz)
    note = "trained on data before " + month
    replay(
        _planner(
            "trained",
            battery,
            tz,
            start,
            day_ahead,
            day_ahead.history_minutes,
            args.replan_minutes,
            calendar=calendar,
        ),
        note,
    )
    return None


def _print(rows: list[Row], args: argparse.Namespace, elapsed_s: float) -> None:
    out = sys.stdout.write
    out(
        f"\nbench dispatch: {args.data.name}, battery {args.battery_kw:g} kW / "
        f"{args.battery_kwh:g} kWh, {args.efficiency:.0%} one way, SOC 50 % at each month start, "
        f"{args.interval_minutes}-minute demand intervals, re-plan every {args.replan_minutes} min "
        f"({elapsed_s:.0f} s)\n\n"
    )
    header = (
        f"{'month':8} {'controller':16} {'billed kW':>9} {'share':>6} {'kWh thru':>8} "
        f"{'solve p50':>9} {'p99 ms':>7} {'viol':>4}  note"
    )
    out(header + "\n")
    out("-" * len(header) + "\n")
    for row in rows:

        def cell(value: float | None, fmt: str) -> str:
            return "n/a" if value is None else format(value, fmt)

        share = "n/a" if row.share_of_optimum is None else f"{row.share_of_optimum:.0%}"
        out(
            f"{row.month:8} {row.controller:16} {cell(row.billed_kw, '.2f'):>9} {share:>6} "
            f"{cell(row.throughput_kwh, '.0f'):>8} {cell(row.solve_ms_p50, '.1f'):>9} "
            f"{cell(row.solve_ms_p99, '.1f'):>7} {row.violations:>4}  {row.note}\n"
        )

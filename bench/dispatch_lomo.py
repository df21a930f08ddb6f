"""Leave-one-month-out table of the dispatch controllers: `python -m bench.dispatch_lomo`.

For every month of the given meter files (by default the shared minute file's two months and the
shared hourly file's eleven whole months), the share of the perfect-foresight optimum's cut that
each controller keeps (``(no battery - billed) / (no battery - optimum)``), with the mean and the
minimum over the months, through the dispatch bench's closed loop (``core.dispatch.replay``,
re-planning every minute as the service does, SOC 50 % at each month start).

Controllers: the self-tuning's candidates (``core.dispatch.tuning.candidates``); ``self-tuned``
(each local midnight, ``core.dispatch.tuning.choose`` over the candidates' replays of the last
28 days before it: the defaults unless a candidate billed less by more than the switch margin,
no more in any week, and held the window's hardest day no lower; applied the next day; the
defaults until 28 days of history); the rules of
the live layer and the plan switched off one at a time (``no-<rule>``, for deciding which rules
earn their place); and ``lomo-fixed``: for each month, the candidate with the best mean share on
the *other* months (what choosing one setting on other data would have kept on this month).

``--variants pv,x40,flat,gaps,tz,5min`` adds, for every set, the same months of synthetic
buildings made from it (``VARIANTS``), each a set of rows of its own (``minute+pv``, ...).

The months run in worker processes (``--workers``); every finished replay is written to
``--json`` at once, and a rerun with the same ``--json`` skips what is there.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from bench.dispatch import bench_battery, candidate_factory
from core.dispatch.assets import Battery
from core.dispatch.controller import DispatchSettings
from core.dispatch.replay import (
    IntervalRecord,
    NoBattery,
    month_bounds,
    month_optimum,
    simulate_month,
)
from core.dispatch.tuning import (
    DEFAULT_CANDIDATE,
    Candidate,
    SelfTuned,
    candidates,
)
from core.forecast.baseline import SeasonalMeanForecaster
from core.forecast.meter_csv import FloatArray, load_meter_csv

logger = logging.getLogger(__name__)

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DEFAULT_SETS = (
    f"minute={SHARED / 'egauge_minute_kw_2022-07_08.csv'}",
    f"hourly={SHARED / 'hourly_kw_2022-03_2023-03.csv'}:2022-04-01:2023-03-01",
)
START_SOC_PCT = 50.0
# (set label, file, month, first index, end index, controller, self-tuned's pool)
Job = tuple[str, str, str, int, int, str, dict[str, Any] | None]


def knob_variants() -> tuple[Candidate, ...]:
    """The live layer's and the plan's rules, each switched off on its own."""
    base = DispatchSettings()
    return (
        Candidate("no-follow-plan", replace(base, follow_plan=False)),
        Candidate("no-sure-share", replace(base, sure_share_of_planned=0.0)),
        Candidate("no-lift", replace(base, level_minutes=0)),
    )


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch_lomo", description=__doc__)
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=None,
        help="LABEL=FILE[:FROM:TO] (days YYYY-MM-DD); repeatable; default: the shared minute "
        "file and the shared hourly file's eleven whole months",
    )
    parser.add_argument("--tz", default="America/Chicago", help="site time zone (IANA)")
    parser.add_argument("--battery-kw", type=float, default=10.0)
    parser.add_argument("--battery-kwh", type=float, default=20.0)
    parser.add_argument("--efficiency", type=float, default=0.92)
    parser.add_argument("--interval-minutes", type=int, default=15, choices=(5, 10, 15, 30, 60))
    parser.add_argument(
        "--no-knobs", action="store_true", help="skip the rules-switched-off variants"
    )
    parser.add_argument(
        "--knobs", default=None, help="only these rules-switched-off variants (comma-separated)"
    )
    parser.add_argument(
        "--only-knobs",
        action="store_true",
        help="only the baseline and the rules-switched-off variants (no pool, no self-tuned)",
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--json", type=Path, default=None, help="results (and resume) file")
    parser.add_argument(
        "--report", action="store_true", help="only print the table of what --json holds"
    )
    parser.add_argument(
        "--variants",
        default=None,
        help="also the synthetic buildings made from every set, each a set of its own "
        f"(comma-separated: {', '.join(VARIANTS)})",
    )
    return parser.parse_args(argv)


def _battery(args: argparse.Namespace) -> Battery:
    return bench_battery(args)


@lru_cache(maxsize=4)
def _series(path: str, tz: str) -> tuple[int, FloatArray]:
    file, variant = _split_variant(path)
    if variant:
        return _variant_series(file, tz, variant)
    series = load_meter_csv(Path(path), ZoneInfo(tz))
    return series.start_minute, series.values_kw


# Synthetic buildings made from a set's file (the dispatch bench's "buildings not seen"), named
# as ``--variants`` takes them; a variant's set reads ``FILE#NAME`` as its path.
VARIANTS = {
    "pv": "the load less a midday PV bell of up to 25 kW, a random cloud factor per day",
    "x40": "the load and the battery 40 times larger",
    "flat": "500 kW of flat base load plus half the load",
    "gaps": "two whole days and 1 % of the minutes missing",
    "tz": "the file's local times read in Europe/Berlin",
    "5min": "5-minute demand intervals",
}
VARIANT_TZ = "Europe/Berlin"
PV_PEAK_KW = 25.0


def _split_variant(path: str) -> tuple[str, str]:
    """(file, variant) of a set's path (``FILE`` or ``FILE#VARIANT``)."""
    file, _, variant = path.partition("#")
    if variant and variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (known: {', '.join(VARIANTS)})")
    return file, variant


def variant_tz(path: str, tz: str) -> str:
    """The time zone a set's file is read in."""
    return VARIANT_TZ if _split_variant(path)[1] == "tz" else tz


def variant_battery(path: str, battery: Battery) -> Battery:
    """The battery of a set (40 times larger for ``x40``)."""
    if _split_variant(path)[1] != "x40":
        return battery
    return replace(
        battery,
        capacity_kwh=40 * battery.capacity_kwh,
        charge_kw=40 * battery.charge_kw,
        discharge_kw=40 * battery.discharge_kw,
    )


def variant_step(path: str, step: int) -> int:
    """The demand interval of a set (5 minutes for ``5min``)."""
    return 5 if _split_variant(path)[1] == "5min" else step


def _local_hours(start: int, n: int, tz: ZoneInfo) -> FloatArray:
    """The local hour of day (fractional) of each minute from ``start`` (UTC epoch minutes)."""
    from datetime import UTC, datetime, timedelta

    minutes = np.arange(n, dtype=np.int64) + start
    # Every zone's offset is constant within a UTC hour: one lookup per hour.
    utc_hours, index = np.unique(minutes // 60, return_inverse=True)
    offsets = np.array(
        [
            (
                datetime.fromtimestamp(int(h) * 3600, UTC).astimezone(tz).utcoffset()
                or timedelta(0)
            ).total_seconds()
            / 60
            for h in utc_hours
        ]
    )
    return np.asarray(((minutes + offsets[index]) % 1440) / 60.0, dtype=np.float64)


def make_variant(start: int, load: FloatArray, tz: ZoneInfo, variant: str) -> FloatArray:
    """The load of a synthetic building made from ``load`` (deterministic: fixed seeds)."""
    rng = np.random.default_rng(29)
    out = np.array(load, dtype=np.float64)
    if variant == "pv":
        hours = _local_hours(start, len(out), tz)
        days = np.arange(len(out)) // 1440
        cloud = rng.uniform(0.2, 1.0, int(days.max()) + 1)
        bell = np.where((hours > 6.0) & (hours < 20.0), np.sin(np.pi * (hours - 6.0) / 14.0), 0.0)
        out = out - PV_PEAK_KW * cloud[days] * bell
    elif variant == "x40":
        out = 40.0 * out
    elif variant == "flat":
        out = 500.0 + 0.5 * out
    elif variant == "gaps":
        whole_days = rng.choice(np.arange(1, max(2, len(out) // 1440 - 1)), 2, replace=False)
        for day in whole_days:
            out[int(day) * 1440 : (int(day) + 1) * 1440] = np.nan
        out[rng.random(len(out)) < 0.01] = np.nan
    # "tz" and "5min" keep the load: the zone and the interval change, not the building.
    return out


@lru_cache(maxsize=8)
def _variant_series(file: str, tz: str, variant: str) -> tuple[int, FloatArray]:
    start, load = _series(file, tz)
    return start, make_variant(start, load, ZoneInfo(tz), variant)


def _months(spec: str, tz: str) -> tuple[str, str, list[tuple[str, int, int]]]:
    """(label, path, [(month, first, end)]) of one ``LABEL=FILE[:FROM:TO]``."""
    label, _, rest = spec.partition("=")
    path, *days = rest.split(":")
    tz = variant_tz(path, tz)
    start, load = _series(path, tz)
    zone = ZoneInfo(tz)
    bounds = month_bounds(start, len(load), zone)
    if days:
        from bench.dispatch import _day_minute

        lo = _day_minute(days[0], zone)
        hi = _day_minute(days[1], zone) if len(days) > 1 else None
        bounds = [
            (m, max(f, (lo - start) if lo else f), min(e, (hi - start) if hi else e))
            for m, f, e in bounds
        ]
    return label, path, [(m, f, e) for m, f, e in bounds if e - f >= 24 * 60]


def _factory(battery: Battery, tz: ZoneInfo, start: int, load: FloatArray, step: int) -> Any:
    return candidate_factory(SeasonalMeanForecaster(weeks=2), battery, tz, start, load, step)


def _record_rows(records: list[IntervalRecord]) -> list[list[float]]:
    return [[r.start_minute, r.grid_kw, r.throughput_kwh] for r in records]


def _records(rows: list[list[float]]) -> list[IntervalRecord]:
    return [IntervalRecord(int(r[0]), float(r[1]), float(r[2])) for r in rows]


def replay_job(
    path: str,
    tz_name: str,
    month: str,
    first: int,
    end: int,
    name: str,
    battery: Battery,
    step: int,
    pool: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One controller over one month (in a worker): its bill, throughput and interval records."""
    tz_name = variant_tz(path, tz_name)
    battery = variant_battery(path, battery)
    step = variant_step(path, step)
    tz = ZoneInfo(tz_name)
    start, load = _series(path, tz_name)
    t0 = time.process_time()
    records: list[IntervalRecord] = []
    solve: list[float] = []
    note = ""
    if name == "optimum":
        result = month_optimum(load, start, first, end, battery, START_SOC_PCT, step, month)
    elif name == "no-battery":
        result = simulate_month(
            NoBattery(), load, start, first, end, None, START_SOC_PCT, step, month, records
        )
    else:
        build = _factory(battery, tz, start, load, step)
        everything = {c.name: c for c in candidates() + knob_variants()}
        controller: Any
        if name == "self-tuned":
            assert pool is not None
            controller = SelfTuned(
                build,
                candidates(),
                {k: _records(v) for k, v in pool["records"].items()},
                _records(pool["no_battery"]),
                pool["history_start"],
                tz,
            )
        else:
            controller = build(everything[name])
        result = simulate_month(
            controller, load, start, first, end, battery, START_SOC_PCT, step, month, records
        )
        solve = list(controller.solve_ms)
        if name == "self-tuned":
            picked = [choice.chosen for _, choice in controller.choices]
            note = " ".join(f"{p}" for p in picked)
    return {
        "month": month,
        "controller": name,
        "billed_kw": result.billed_kw,
        "throughput_kwh": result.throughput_kwh,
        "violations": result.violations,
        "solve_ms_p99": float(np.percentile(solve, 99)) if solve else None,
        "cpu_s": time.process_time() - t0,
        "records": _record_rows(records),
        "note": note,
    }


def variant_specs(specs: Sequence[str], args: argparse.Namespace) -> list[str]:
    """The sets, then (with ``--variants``) every set again as each synthetic building."""
    names = [v.strip() for v in (args.variants or "").split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    out = list(specs)
    for spec in specs:
        label, _, rest = spec.partition("=")
        path, sep, days = rest.partition(":")
        out += [f"{label}+{v}={path}#{v}{sep}{days}" for v in names]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Replay, print the table, write the JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = _arguments(argv)
    battery = _battery(args)
    step = args.interval_minutes
    sets = [_months(spec, args.tz) for spec in variant_specs(args.sets or DEFAULT_SETS, args)]
    done: dict[str, dict[str, Any]] = {}
    if args.json is not None and args.json.exists():
        done = json.loads(args.json.read_text())
    pool_names = [c.name for c in candidates()]
    if args.only_knobs:
        pool_names = [DEFAULT_CANDIDATE]
    knobs = [] if args.no_knobs else [c.name for c in knob_variants()]
    if args.knobs:
        knobs = [k for k in knobs if k in args.knobs.split(",")]
    started = time.monotonic()
    if args.report:
        _print(sets, done, pool_names, knobs, args, 0.0)
        return 0

    def key(label: str, month: str, name: str) -> str:
        return f"{label}|{month}|{name}"

    def save() -> None:
        if args.json is not None:
            args.json.write_text(json.dumps(done))

    def run_phase(jobs: list[Job]) -> None:
        with ProcessPoolExecutor(args.workers) as executor:
            futures: dict[Future[dict[str, Any]], str] = {}
            for label, path, month, first, end, name, pool in jobs:
                k = key(label, month, name)
                if k in done:
                    continue
                futures[
                    executor.submit(
                        replay_job, path, args.tz, month, first, end, name, battery, step, pool
                    )
                ] = k
            for future in list(futures):
                k = futures[future]
                done[k] = future.result()
                logger.info("%s: %.2f kW (%.0f s cpu)", k, done[k]["billed_kw"], done[k]["cpu_s"])
                save()

    first_jobs: list[Job] = [
        (label, path, month, first, end, name, None)
        for label, path, months in sets
        for month, first, end in months
        for name in ["no-battery", "optimum", *pool_names]
    ]
    run_phase(first_jobs)
    second_jobs: list[Job] = []
    for label, path, months in [] if args.only_knobs else sets:
        records = {
            name: [r for month, _, _ in months for r in done[key(label, month, name)]["records"]]
            for name in pool_names
        }
        no_battery = [
            r for month, _, _ in months for r in done[key(label, month, "no-battery")]["records"]
        ]
        start, _ = _series(path, variant_tz(path, args.tz))
        pool: dict[str, Any] = {
            "records": records,
            "no_battery": no_battery,
            "history_start": start + months[0][1],
        }
        for month, first, end in months:
            second_jobs.append((label, path, month, first, end, "self-tuned", pool))
    for label, path, months in sets:
        for month, first, end in months:
            for name in knobs:
                second_jobs.append((label, path, month, first, end, name, None))
    run_phase(second_jobs)
    _print(sets, done, pool_names, knobs, args, time.monotonic() - started)
    return 0


def _share(done: dict[str, dict[str, Any]], label: str, month: str, name: str) -> float | None:
    row = done.get(f"{label}|{month}|{name}")
    base = done.get(f"{label}|{month}|no-battery")
    best = done.get(f"{label}|{month}|optimum")
    if row is None or base is None or best is None:
        return None
    cut = base["billed_kw"] - best["billed_kw"]
    if cut <= 1e-9:
        return None
    return float((base["billed_kw"] - row["billed_kw"]) / cut)


def _print(
    sets: list[tuple[str, str, list[tuple[str, int, int]]]],
    done: dict[str, dict[str, Any]],
    pool_names: list[str],
    knobs: list[str],
    args: argparse.Namespace,
    elapsed_s: float,
) -> None:
    out = sys.stdout.write
    names = [*pool_names, "self-tuned", "lomo-fixed", *knobs]
    months = [(label, month) for label, _, ms in sets for month, _, _ in ms]
    shares: dict[str, list[float | None]] = {n: [] for n in names}
    for label, month in months:
        for name in names:
            if name == "lomo-fixed":
                continue
            shares[name].append(_share(done, label, month, name))
    # lomo-fixed: the candidate with the best mean share on the other months.
    for index in range(len(months)):
        best_name, best_mean = None, -np.inf
        for name in pool_names:
            others = [s for i, s in enumerate(shares[name]) if i != index and s is not None]
            if others and float(np.mean(others)) > best_mean:
                best_name, best_mean = name, float(np.mean(others))
        shares["lomo-fixed"].append(shares[best_name][index] if best_name else None)
    out(
        f"\nbench dispatch leave-one-month-out: battery {args.battery_kw:g} kW / "
        f"{args.battery_kwh:g} kWh, {args.interval_minutes}-minute intervals, share of the "
        f"optimum's cut ({elapsed_s:.0f} s)\n\n"
    )
    width = max(len(n) for n in names) + 1
    lw = max([16] + [len(f"{label}|{month}") + 1 for label, month in months])
    out(f"{'set|month':{lw}}" + "".join(f"{n[:width]:>{width}}" for n in names) + "\n")

    def cell(value: float | None) -> str:
        return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.0%}"

    for index, (label, month) in enumerate(months):
        out(f"{label + '|' + month:{lw}}" + "".join(cell(shares[n][index]) for n in names) + "\n")
    for title, fn in (("mean", np.mean), ("min", np.min)):
        row = ""
        for name in names:
            values = [s for s in shares[name] if s is not None]
            row += cell(float(fn(values)) if values else None)
        out(f"{title:{lw}}" + row + "\n")
    if knobs:
        out("\nrule switched off against baseline (months the rule helps / hurts / ties):\n")
        for name in knobs:
            helps = hurts = ties = 0
            for with_rule, without in zip(shares["baseline"], shares[name], strict=True):
                if with_rule is None or without is None:
                    continue
                if with_rule > without + 0.005:
                    helps += 1
                elif without > with_rule + 0.005:
                    hurts += 1
                else:
                    ties += 1
            out(f"  {name:16} helps {helps:2d}  hurts {hurts:2d}  ties {ties:2d}\n")
    bad = [k for k, v in done.items() if v.get("violations")]
    out(f"\nreplays with a limit broken: {len(bad)}\n")
    above = [
        f"{label}|{month}|{name}"
        for label, month in months
        for name in [*pool_names, "self-tuned"]
        if (s := _share(done, label, month, name)) is not None and s < -1e-9
    ]
    out(f"replays billed above no battery: {', '.join(above) or 'none'}\n")
    for label, month in months:
        tuned = done.get(f"{label}|{month}|self-tuned")
        if tuned is not None:
            picks = tuned["note"].split()
            counts = {p: picks.count(p) for p in dict.fromkeys(picks)}
            out(f"self-tuned {label}|{month}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            out("\n")


if __name__ == "__main__":
    sys.exit(main())

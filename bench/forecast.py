"""`open-dsm bench forecast`: baselines, the seed LSTM and our model on one meter CSV.

Trains on everything before the last ``--test-days`` local days and scores every origin in the
test days that has a value 60 minutes ahead. Day-ahead: an origin every 15 minutes of the test
days, the 96 steps' 15-minute means pooled (CV(RMSE) %). ``--weather FILE`` adds outdoor air
(stored beside the kW as the service does) for our model to use if its validation wants it.
TensorFlow work runs in child processes (spawned, ``bench/forecast_children.py``), so each one's
peak RSS is its own and this process never imports TensorFlow; the scoring and the table are
``bench/forecast_scoring.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from bench.forecast_children import (
    calendar_of,
    child_ours,
    child_seed_lstm,
    child_serving,
    in_child,
    weather_for,
)
from bench.forecast_scoring import (
    Outcomes,
    day_ahead_origins,
    day_ahead_scores,
    format_table,
    outcome_sets,
    parse_skip_days,
    scored_metrics,
    seasonal_day_ahead,
    served_bands,
    table_row,
)
from core.calendar import CalendarError, SiteCalendar
from core.calendar_ics import load_calendar_file
from core.forecast import day_ahead as da
from core.forecast.base import HORIZON_MINUTES, MinuteHistory
from core.forecast.baseline import SeasonalMeanForecaster
from core.forecast.features import (
    FloatArray,
    IntArray,
    local_minutes,
    persistence_windows,
    seasonal_mean_windows,
    target_windows,
)
from core.forecast.meter_csv import load_meter_csv
from core.timegrid import MINUTES_PER_DAY

logger = logging.getLogger(__name__)

ALL_MODELS = ("persistence", "last-week", "mean-2-weeks", "seed-lstm", "ours")
LATENCY_SAMPLES = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `open-dsm bench forecast`."""
    parser.add_argument("--data", required=True, type=Path, help="meter CSV (timestamp, kW)")
    parser.add_argument("--test-days", type=int, default=14, help="last N local days scored")
    parser.add_argument(
        "--models", default=",".join(ALL_MODELS), help=f"comma list of {', '.join(ALL_MODELS)}"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument("--tz", default="America/Chicago", help="site time zone (IANA)")
    parser.add_argument(
        "--weather",
        type=Path,
        default=None,
        help="outdoor-air history CSV (timestamp + temperature, as `open-dsm import --weather`)",
    )
    parser.add_argument("--time-column", default=None, help="timestamp column (auto)")
    parser.add_argument("--kw-column", default=None, help="kW column (auto)")
    parser.add_argument(
        "--seed-lstm-cap-s", type=float, default=120.0, help="training time cap of seed-lstm"
    )
    parser.add_argument(
        "--time-budget-s", type=float, default=50.0, help="training time budget of ours"
    )
    parser.add_argument(
        "--skip-days",
        default="",
        help=(
            "comma list of local dates (YYYY-MM-DD) among the test days whose outcomes the scores "
            "leave out, e.g. a known schedule exception; the days stay in the history every "
            "forecast reads and in the online band adaptation"
        ),
    )
    parser.add_argument(
        "--calendar",
        type=Path,
        default=None,
        help=(
            "site calendar (the REST body's JSON or an .ics of holidays): our model trains and "
            "forecasts with it, and a 'mean-2-weeks+calendar' row is added (the plain baselines "
            "stay the reference)"
        ),
    )


def load_bench_calendar(
    path: Path | None, start_minute: int, end_minute: int
) -> SiteCalendar | None:
    """The calendar of ``--calendar`` (an .ics expanded over the data's dates), None without."""
    if path is None:
        return None
    first = datetime.fromtimestamp(start_minute * 60, UTC).date() - timedelta(days=1)
    last = datetime.fromtimestamp(end_minute * 60, UTC).date() + timedelta(days=2)
    return load_calendar_file(path, first, last)


def _split(
    start_minute: int, values_kw: FloatArray, tz: ZoneInfo, test_days: int
) -> tuple[int, IntArray]:
    """The first UTC minute of the test part (local midnight) and the scored origins."""
    end_minute = start_minute + len(values_kw) - 1
    grid = np.arange(start_minute, end_minute + 1, dtype=np.int64)
    local = local_minutes(grid, tz)
    last_midnight_local = (local[-1] + 1) // MINUTES_PER_DAY * MINUTES_PER_DAY
    split_local = last_midnight_local - test_days * MINUTES_PER_DAY
    if (local[-1] + 1) % MINUTES_PER_DAY:
        # A partial last day counts as one of the test days.
        split_local += MINUTES_PER_DAY
    split = int(grid[np.searchsorted(local, split_local)])
    origins = np.arange(split, end_minute - HORIZON_MINUTES + 1, dtype=np.int64)
    actual = target_windows(start_minute, values_kw, origins, HORIZON_MINUTES)
    last = values_kw[origins - start_minute]
    keep = ~np.isnan(actual[:, -1]) & ~np.isnan(last)
    return split, origins[keep]


def _baseline_latency_ms(
    weeks: int | None, start_minute: int, values_kw: FloatArray, origins: IntArray, tz: ZoneInfo
) -> float:
    forecaster = SeasonalMeanForecaster(weeks=weeks) if weeks else None
    span = forecaster.history_minutes if forecaster else 60
    sample = origins[:: max(1, len(origins) // LATENCY_SAMPLES)][:LATENCY_SAMPLES]
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    for origin in sample.tolist():
        lo = origin - span + 1 - start_minute
        history = MinuteHistory(origin - span + 1, values_kw[lo : origin - start_minute + 1])
        if forecaster is None:
            history.last_valid()
        else:
            forecaster.forecast(history, tz, now)
    return 1000.0 * (time.perf_counter() - t0) / len(sample)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; writes one table to stdout (and JSON rows with --json), and with
    ``--skip-days`` a second table scored without those days (the same forecasts)."""
    models = [m.strip() for m in str(args.models).split(",") if m.strip()]
    unknown = [m for m in models if m not in ALL_MODELS]
    if unknown:
        sys.stderr.write(f"unknown models: {', '.join(unknown)} (choose from {ALL_MODELS})\n")
        return 2
    try:
        skip = parse_skip_days(args.skip_days)
    except ValueError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    tz = ZoneInfo(args.tz)
    series = load_meter_csv(args.data, tz, time_column=args.time_column, kw_column=args.kw_column)
    sys.stdout.write(f"import: {series.report.summary()}\n")
    values, start = series.values_kw, series.start_minute
    try:
        calendar = load_bench_calendar(args.calendar, start, start + len(values) - 1)
    except CalendarError as exc:
        sys.stderr.write(f"--calendar: {exc}\n")
        return 2
    if calendar is not None:
        first = datetime.fromtimestamp(start * 60, UTC).astimezone(tz).date()
        last = datetime.fromtimestamp((start + len(values) - 1) * 60, UTC).astimezone(tz).date()
        listed = calendar.listed_dates(first, last)
        sys.stdout.write(
            "calendar: "
            + (", ".join(f"{d} {t.name}" for d, t in listed) or "no listed day in the data")
            + "\n"
        )
    split, origins = _split(start, values, tz, args.test_days)
    actual = target_windows(start, values, origins, HORIZON_MINUTES)
    sys.stdout.write(
        f"train: minutes before {datetime.fromtimestamp(split * 60, UTC).astimezone(tz)}; "
        f"test: {len(origins)} origins over {args.test_days} days\n"
    )
    common = {
        "data": str(args.data),
        "tz": args.tz,
        "split": split,
        "time_column": args.time_column,
        "kw_column": args.kw_column,
        "weather": str(args.weather) if args.weather else None,
        "log_level": logging.getLogger().getEffectiveLevel(),
        "calendar": None if calendar is None else calendar.to_dict(),
    }
    day_origins = day_ahead_origins(start, values, split)
    day_actual = da.day_ahead_targets(start, values, day_origins)
    sets = outcome_sets(skip, tz, origins, actual, day_origins, day_actual)
    # The test part's values are visible only as history before each origin (as in service).
    tables: list[list[dict[str, Any]]] = [[] for _ in sets]
    for model in models:
        logger.info("bench: %s", model)
        rows: list[dict[str, Any]]
        extra: list[dict[str, Any]] = []
        if model == "persistence":
            pred = persistence_windows(start, values, origins, HORIZON_MINUTES)
            infer = _baseline_latency_ms(None, start, values, origins, tz)
            rows = [table_row(model, scored_metrics(pred, o.actual), infer_ms=infer) for o in sets]
        elif model in ("last-week", "mean-2-weeks"):
            weeks = 1 if model == "last-week" else 2
            pred = seasonal_mean_windows(start, values, origins, tz, weeks, HORIZON_MINUTES)
            infer = _baseline_latency_ms(weeks, start, values, origins, tz)
            rows = []
            if weeks == 2:
                p50, p10, p90 = seasonal_day_ahead(start, values, day_origins, tz)
                # Its band as the service serves it (adapted online), and as it comes.
                s10, s90 = served_bands(start, values, day_origins, p50, p10, p90, day_ahead=True)
            for o in sets:
                day: dict[str, float] = {}
                if weeks == 2:
                    raw = day_ahead_scores(p50, o.day_actual, p10, p90)
                    day = day_ahead_scores(p50, o.day_actual, s10, s90)
                    day["coverage_p10_p90_day_ahead_unadapted"] = raw["coverage_p10_p90_day_ahead"]
                    sys.stdout.write(
                        f"mean-2-weeks ({o.label}): day-ahead P10-P90 coverage "
                        f"{day['coverage_p10_p90_day_ahead']:.1%} as served, adapted online "
                        f"({day['coverage_p10_p90_day_ahead_unadapted']:.1%} unadapted)\n"
                    )
                rows.append(table_row(model, scored_metrics(pred, o.actual), infer_ms=infer, **day))
            if weeks == 2 and calendar is not None:
                # The same baseline told the calendar (as the service's baseline is).
                extra = _calendar_baseline_rows(
                    start, values, origins, tz, day_origins, sets, calendar
                )
        elif model == "seed-lstm":
            res = in_child(
                child_seed_lstm,
                {**common, "cap_s": args.seed_lstm_cap_s, "origins": origins.tolist()},
            )
            rows = [
                table_row(
                    model,
                    scored_metrics(res["pred"], o.actual),
                    train_s=res["train_s"],
                    infer_ms=res["infer_ms"],
                    peak_rss_mb=res["peak_rss_mb"],
                )
                for o in sets
            ]
            sys.stdout.write(f"seed-lstm: trained with a {args.seed_lstm_cap_s:.0f} s cap\n")
        else:  # ours
            rows, extra = _bench_ours(args, common, start, values, origins, tz, day_origins, sets)
        for table, row in zip(tables, rows, strict=True):
            table.append(row)
        for table, row in zip(tables, extra, strict=False):
            table.append(row)
    for o, table in zip(sets, tables, strict=True):
        if len(sets) > 1:
            sys.stdout.write(f"scores, {o.label}:\n")
        sys.stdout.write(format_table(table))
    if args.json is not None:
        out = list(tables[0])
        for o, table in zip(sets[1:], tables[1:], strict=True):
            out += [{**row, "scored": o.label} for row in table]
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def _calendar_baseline_rows(
    start: int,
    values: FloatArray,
    origins: IntArray,
    tz: ZoneInfo,
    day_origins: IntArray,
    sets: list[Outcomes],
    calendar: SiteCalendar,
) -> list[dict[str, Any]]:
    """mean-2-weeks read through the calendar (same-type days), one row per outcome set."""
    pred = seasonal_mean_windows(start, values, origins, tz, 2, HORIZON_MINUTES, calendar)
    p50, p10, p90 = seasonal_day_ahead(start, values, day_origins, tz, calendar)
    s10, s90 = served_bands(start, values, day_origins, p50, p10, p90, day_ahead=True)
    return [
        table_row(
            "mean-2-weeks+calendar",
            scored_metrics(pred, o.actual),
            **day_ahead_scores(p50, o.day_actual, s10, s90),
        )
        for o in sets
    ]


def _bench_ours(
    args: argparse.Namespace,
    common: dict[str, Any],
    start: int,
    values: FloatArray,
    origins: IntArray,
    tz: ZoneInfo,
    day_origins: IntArray,
    sets: list[Outcomes],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train once, forecast every origin once, and score the forecasts on each outcome set;
    with a calendar, also the same model's forecasts without it (a second row per set)."""
    from core.forecast.lite import LiteForecaster

    air = weather_for(common["weather"], tz, start, len(values))
    with tempfile.TemporaryDirectory(prefix="open-dsm-bench-") as tmp:
        artifact = str(Path(tmp) / "model")
        trained = in_child(
            child_ours, {**common, "artifact": artifact, "time_budget_s": args.time_budget_s}
        )
        if "not_run" in trained:
            sys.stdout.write(f"ours: not run: {trained['not_run']}\n")
            return [table_row("ours", None) for _ in sets], []
        sys.stdout.write(
            f"ours: chose {trained['candidate']}; inner holdout "
            f"{json.dumps(trained['holdout'].get('ours', {}))}\n"
        )
        forecaster = LiteForecaster.load(artifact)
        calendar = calendar_of(common)
        kw, p10, p90 = forecaster.predict_origins(start, values, origins, tz, air, calendar)
        s10, s90 = served_bands(start, values, origins, kw, p10, p90, day_ahead=False)
        day_ahead = None
        if forecaster.has_day_ahead:
            d50, d10, d90 = forecaster.predict_day_ahead(
                start, values, day_origins, tz, air, calendar
            )
            e10, e90 = served_bands(start, values, day_origins, d50, d10, d90, day_ahead=True)
            day_ahead = (d50, d10, d90, e10, e90)
            sys.stdout.write(f"ours: day-ahead {json.dumps(trained['day_ahead'])}\n")
        unread = (
            []
            if calendar is None
            else _calendar_unread_rows(
                forecaster, start, values, origins, tz, day_origins, sets, air
            )
        )
        sample = origins[:: max(1, len(origins) // LATENCY_SAMPLES)][:LATENCY_SAMPLES]
        serving = in_child(
            child_serving, {**common, "artifact": artifact, "origins": sample.tolist()}
        )
    rows = []
    for o in sets:
        static = scored_metrics(kw, o.actual, p10_kw=p10, p90_kw=p90)["coverage_p10_p90_60"]
        metrics = scored_metrics(kw, o.actual, p10_kw=s10, p90_kw=s90)
        day: dict[str, float] = {}
        static_day = None
        day_text = ""
        if day_ahead is not None:
            d50, d10, d90, e10, e90 = day_ahead
            static_day = day_ahead_scores(d50, o.day_actual, d10, d90)["coverage_p10_p90_day_ahead"]
            day = day_ahead_scores(d50, o.day_actual, e10, e90)
            day_text = (
                f"; day-ahead {day['coverage_p10_p90_day_ahead']:.1%} ({static_day:.1%} as trained)"
            )
        sys.stdout.write(
            f"ours ({o.label}): P10-P90 coverage at 60 min {metrics['coverage_p10_p90_60']:.1%} "
            f"as served, adapted online ({static:.1%} with the band as trained){day_text}\n"
        )
        sys.stdout.write(
            f"ours ({o.label}): peak RMSE {metrics['peak_rmse']:.2f} kW "
            f"(P90 peak {metrics['peak_p90_rmse']:.2f})\n"
        )
        rows.append(
            table_row(
                "ours",
                metrics,
                train_s=trained["train_s"],
                infer_ms=serving["infer_ms"],
                peak_rss_mb=trained["peak_rss_mb"],
                coverage_p10_p90_60_unadapted=static,
                coverage_p10_p90_day_ahead_unadapted=static_day,
                **day,
            )
        )
    sys.stdout.write(
        f"ours: serving process (lite only) peak RSS {serving['serving_rss_mb']:.0f} MB, "
        f"median {serving['infer_ms']:.2f} ms / p95 {serving['infer_ms_p95']:.2f} ms per "
        f"forecast, tensorflow imported: {serving['tensorflow_imported']}\n"
    )
    return rows, unread


def _calendar_unread_rows(
    forecaster: Any,
    start: int,
    values: FloatArray,
    origins: IntArray,
    tz: ZoneInfo,
    day_origins: IntArray,
    sets: list[Outcomes],
    air: FloatArray | None,
) -> list[dict[str, Any]]:
    """The same trained model forecasting without the calendar (bands served the same way):
    beside its row with the calendar, the calendar's own effect at inference."""
    kw, p10, p90 = forecaster.predict_origins(start, values, origins, tz, air)
    s10, s90 = served_bands(start, values, origins, kw, p10, p90, day_ahead=False)
    day_ahead = None
    if forecaster.has_day_ahead:
        d50, d10, d90 = forecaster.predict_day_ahead(start, values, day_origins, tz, air)
        day_ahead = (d50, *served_bands(start, values, day_origins, d50, d10, d90, True))
    rows = []
    for o in sets:
        day: dict[str, float] = {}
        if day_ahead is not None:
            day = day_ahead_scores(day_ahead[0], o.day_actual, day_ahead[1], day_ahead[2])
        metrics = scored_metrics(kw, o.actual, p10_kw=s10, p90_kw=s90)
        rows.append(table_row("ours, calendar not read", metrics, **day))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (the CLI wires add_arguments/run itself)."""
    parser = argparse.ArgumentParser(prog="bench-forecast")
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

"""`open-dsm bench forecast`: baselines, the seed LSTM and our model on one meter CSV.

Trains on everything before the last ``--test-days`` local days and scores every origin in the
test days that has a value 60 minutes ahead. Day-ahead: an origin every 15 minutes of the test
days, the 96 steps' 15-minute means pooled (CV(RMSE) %). ``--weather FILE`` adds outdoor air
(stored beside the kW as the service does) for our model to use if its validation wants it.
TensorFlow work runs in child processes (spawned), so each one's peak RSS is its own and this
process never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import queue as queue_module
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from core.accuracy import BAND_GAMMA, DAY_AHEAD_BAND_GAMMA, BandAdapter
from core.calendar import CalendarError, SiteCalendar, parse_calendar
from core.calendar_ics import load_calendar_file
from core.forecast import day_ahead as da
from core.forecast.base import HORIZON_MINUTES, MinuteHistory
from core.forecast.baseline import SeasonalMeanForecaster
from core.forecast.evaluation import cvrmse_pct, forecast_metrics
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
COLUMNS = (
    "model",
    "rmse_60",
    "mae_60",
    "rmse_1_60",
    "cvrmse_15min_60",
    "cvrmse_15min_day_ahead",
    "coverage_p10_p90_60",
    "coverage_p10_p90_day_ahead",
    "train_s",
    "infer_ms",
    "peak_rss_mb",
)
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


def _calendar_of(args: dict[str, Any]) -> SiteCalendar | None:
    document = args.get("calendar")
    return None if document is None else parse_calendar(document)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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


def parse_skip_days(text: str) -> set[int]:
    """Local day numbers (days since 1970-01-01) of a comma list of ISO dates."""
    days: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            day = date.fromisoformat(part)
        except ValueError:
            raise ValueError(f"--skip-days: {part!r} is not a date (YYYY-MM-DD)") from None
        days.add((day - date(1970, 1, 1)).days)
    return days


def skip_outcomes(actual: FloatArray, first_minutes: IntArray, tz: ZoneInfo, skip: set[int]) -> int:
    """Blank (NaN) in place each outcome whose first UTC minute (``first_minutes``, the shape of
    ``actual``) falls on a skipped local day; returns how many were blanked."""
    if not skip:
        return 0
    day = np.floor_divide(local_minutes(first_minutes.ravel(), tz), MINUTES_PER_DAY)
    hit = np.isin(day, np.fromiter(skip, dtype=np.int64)).reshape(actual.shape)
    hit &= ~np.isnan(actual)
    actual[hit] = np.nan
    return int(hit.sum())


def _weather(path: str | None, tz: ZoneInfo, start: int, length: int) -> FloatArray | None:
    """Outdoor air aligned with the meter series (NaN where unknown), or None."""
    if not path:
        return None
    from core.forecast.weather import load_weather_csv

    series = load_weather_csv(path, tz)
    out = np.full(length, np.nan)
    lo = max(start, series.start_minute)
    hi = min(start + length, series.start_minute + len(series.values))
    if hi > lo:
        out[lo - start : hi - start] = series.values[
            lo - series.start_minute : hi - series.start_minute
        ]
    return out


def _day_ahead_origins(start: int, values: FloatArray, split: int) -> IntArray:
    """An origin every 15 minutes of the test days (step 0 starts right after it)."""
    end = start + len(values) - 1
    first = split - 1 + (-split) % da.STEP
    origins = np.arange(first, end, da.STEP, dtype=np.int64)
    last = values[origins - start]
    return origins[~np.isnan(last)]


def _day_ahead_scores(
    p50: FloatArray,
    actual: FloatArray,
    p10: FloatArray | None = None,
    p90: FloatArray | None = None,
) -> dict[str, float]:
    """Pooled CV(RMSE) % of the steps that have an outcome, and the band's coverage."""
    ok = ~np.isnan(actual)
    out = {"cvrmse_15min_day_ahead": cvrmse_pct(p50[ok], actual[ok])}
    if p10 is not None and p90 is not None:
        inside = (actual[ok] >= p10[ok]) & (actual[ok] <= p90[ok])
        out["coverage_p10_p90_day_ahead"] = float(np.mean(inside))
    return out


def _seasonal_day_ahead(
    start: int,
    values: FloatArray,
    origins: IntArray,
    tz: ZoneInfo,
    calendar: SiteCalendar | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """mean-2-weeks' day-ahead through its own forecaster, origin by origin."""
    forecaster = SeasonalMeanForecaster(weeks=2)
    span = forecaster.day_ahead_history_minutes
    now = datetime.now(UTC)
    rows = []
    for origin in origins.tolist():
        lo = max(0, origin - span + 1 - start)
        history = MinuteHistory(start + lo, values[lo : origin - start + 1], calendar=calendar)
        fc = forecaster.day_ahead(history, tz, now)
        assert fc is not None and fc.p10_kw is not None and fc.p90_kw is not None
        rows.append((fc.p50_kw, fc.p10_kw, fc.p90_kw))
    arr = np.asarray(rows, dtype=np.float64)
    return arr[:, 0], arr[:, 1], arr[:, 2]


def _row(model: str, metrics: dict[str, float] | None, **extra: float | None) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row["model"] = model
    if metrics is not None:
        for key in ("rmse_60", "mae_60", "rmse_1_60", "cvrmse_15min_60"):
            row[key] = round(metrics[key], 3)
        if "coverage_p10_p90_60" in metrics:
            row["coverage_p10_p90_60"] = round(metrics["coverage_p10_p90_60"], 4)
    for key, value in extra.items():
        row[key] = None if value is None else round(float(value), 3)
    return row


def _scored_metrics(pred: FloatArray, actual: FloatArray, **bands: FloatArray) -> dict[str, float]:
    # Score only minutes that exist (a gap inside a target window is skipped, not imputed).
    ok = ~np.isnan(actual).any(axis=1)
    kw = {k: v[ok] for k, v in bands.items()}
    return forecast_metrics(pred[ok], actual[ok], **kw)


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


# ---------------------------------------------------------------------------------------------
# child processes (spawned: a fresh interpreter, so peak RSS is the child's own)


def served_bands(
    start: int,
    values: FloatArray,
    origins: IntArray,
    point: FloatArray,
    p10: FloatArray,
    p90: FloatArray,
    day_ahead: bool,
) -> tuple[FloatArray, FloatArray]:
    """The bands as the service serves them: adapted online (``core.accuracy.BandAdapter``,
    as ``core.compute`` runs it), origin by origin in time order, each from the outcomes
    known at that origin only.

    60-minute: the band is scored at its 60th minute, origins every minute. Day-ahead: every
    step of the forecast made at each 15-minute origin, scored on each block's mean."""
    step = da.STEP if day_ahead else 1
    adapter = BandAdapter(
        step_minutes=step, gamma=DAY_AHEAD_BAND_GAMMA if day_ahead else BAND_GAMMA
    )
    low, high = np.empty_like(p10), np.empty_like(p90)
    row_of = {int(origin): row for row, origin in enumerate(origins.tolist())}
    for minute in range(int(origins[0]), int(origins[-1]) + 1):
        adapter.observed(minute, float(values[minute - start]))  # known at this origin
        row = row_of.get(minute)
        if row is None:
            continue
        lo, hi = adapter.widen(point[row], p10[row], p90[row])
        low[row], high[row] = lo, hi
        if day_ahead:
            adapter.issued(minute, minute + 1, lo, hi)
        else:
            adapter.issued(minute, minute + HORIZON_MINUTES, lo[-1:], hi[-1:])
    return low, high


def _child_ours(args: dict[str, Any], queue: Any) -> None:
    from core.forecast import neural
    from core.forecast.lite import write_artifact

    logging.basicConfig(level=args["log_level"], format="%(asctime)s %(name)s %(message)s")
    tz = ZoneInfo(args["tz"])
    series = load_meter_csv(
        args["data"], tz, time_column=args["time_column"], kw_column=args["kw_column"]
    )
    train_values = series.values_kw[: args["split"] - series.start_minute]
    air = _weather(args["weather"], tz, series.start_minute, len(train_values))
    t0 = time.monotonic()
    try:
        result = neural.train(
            series.start_minute,
            train_values,
            tz,
            outdoor_air=air,
            time_budget_s=args["time_budget_s"],
            calendar=_calendar_of(args),
        )
    except neural.InsufficientHistoryError as exc:
        queue.put({"not_run": str(exc)})
        return
    train_s = time.monotonic() - t0
    write_artifact(args["artifact"], result.tflite_model, result.meta, result.day_ahead_model)
    queue.put(
        {
            "train_s": train_s,
            "peak_rss_mb": _peak_rss_mb(),
            "holdout": result.holdout_metrics,
            "validation": result.validation,
            "candidate": result.meta.candidate,
            "day_ahead": None if result.meta.day_ahead is None else result.meta.day_ahead.to_dict(),
        }
    )


def _child_serving(args: dict[str, Any], queue: Any) -> None:
    # Imports only the serving module: this is what the service process pays for a forecast.
    from core.forecast.lite import LiteForecaster

    tz = ZoneInfo(args["tz"])
    forecaster = LiteForecaster.load(args["artifact"])
    series = load_meter_csv(
        args["data"], tz, time_column=args["time_column"], kw_column=args["kw_column"]
    )
    values, start = series.values_kw, series.start_minute
    origins = np.asarray(args["origins"], dtype=np.int64)
    span = forecaster.history_minutes
    now = datetime.now(UTC)
    times: list[float] = []
    calendar = _calendar_of(args)
    for origin in origins.tolist():
        history = MinuteHistory(
            origin - span + 1,
            values[origin - span + 1 - start : origin - start + 1],
            calendar=calendar,
        )
        t0 = time.perf_counter()
        forecaster.forecast(history, tz, now)
        times.append(time.perf_counter() - t0)
    queue.put(
        {
            "infer_ms": 1000.0 * float(np.median(times)),
            "infer_ms_p95": 1000.0 * float(np.percentile(times, 95)),
            "serving_rss_mb": _peak_rss_mb(),
            "tensorflow_imported": any(
                m == "tensorflow" or m.startswith(("tensorflow.", "keras")) for m in sys.modules
            ),
        }
    )


def _child_seed_lstm(args: dict[str, Any], queue: Any) -> None:
    """The seed's LSTM: 120-minute window, 2 x LSTM(50), Dense(60), min-max scaled."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    tz = ZoneInfo(args["tz"])
    series = load_meter_csv(
        args["data"], tz, time_column=args["time_column"], kw_column=args["kw_column"]
    )
    values, start, split = series.values_kw, series.start_minute, args["split"]
    window = 120
    train_v = values[: split - start]
    lo, hi = float(np.nanmin(train_v)), float(np.nanmax(train_v))
    scaled = ((values - lo) / max(hi - lo, 1e-6)).astype(np.float32)
    idx = np.arange(window - 1, len(train_v) - HORIZON_MINUTES)
    x_idx = idx[:, None] + np.arange(-window + 1, 1)[None, :]
    y_idx = idx[:, None] + np.arange(1, HORIZON_MINUTES + 1)[None, :]
    x, y = scaled[x_idx][..., None], scaled[y_idx]
    ok = ~np.isnan(x).any(axis=(1, 2)) & ~np.isnan(y).any(axis=1)
    x, y = x[ok], y[ok]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((window, 1)),
            keras.layers.LSTM(50, return_sequences=True),
            keras.layers.LSTM(50),
            keras.layers.Dense(HORIZON_MINUTES),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    cap_s = float(args["cap_s"])

    class _Cap(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.t0 = time.monotonic()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if time.monotonic() - self.t0 > cap_s:
                self.model.stop_training = True

    t0 = time.monotonic()
    model.fit(x, y, batch_size=64, epochs=6, verbose=0, shuffle=True, callbacks=[_Cap()])
    train_s = time.monotonic() - t0
    origins = np.asarray(args["origins"], dtype=np.int64) - start
    xt = scaled[origins[:, None] + np.arange(-window + 1, 1)[None, :]][..., None]
    xt = np.nan_to_num(xt, nan=0.0)
    pred = model.predict(xt, batch_size=1024, verbose=0) * (hi - lo) + lo
    single: list[float] = []
    for i in range(20):
        t1 = time.perf_counter()
        model(xt[i : i + 1], training=False)
        single.append(time.perf_counter() - t1)
    queue.put(
        {
            "train_s": train_s,
            "peak_rss_mb": _peak_rss_mb(),
            "pred": np.asarray(pred, dtype=np.float64),
            "infer_ms": 1000.0 * float(np.median(single)),
        }
    )


def in_child(target: Any, args: dict[str, Any]) -> dict[str, Any]:
    """Run ``target(args, queue)`` in a spawned child and return what it put on the queue."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(args, queue))
    proc.start()
    result: dict[str, Any] | None = None
    try:
        # Poll, so a child that dies without a result (a crash, the OOM killer) is an error
        # here rather than a wait for ever.
        while result is None:
            try:
                result = queue.get(timeout=1.0)
            except queue_module.Empty:
                if proc.is_alive():
                    continue
                try:
                    result = queue.get(timeout=1.0)  # put just before it exited
                except queue_module.Empty:
                    break
    finally:
        proc.join()
    if result is None or proc.exitcode not in (0, None):
        raise RuntimeError(f"{target.__name__} exited with {proc.exitcode} and no result")
    return result


# ---------------------------------------------------------------------------------------------


def _format_table(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        return "-" if value is None else str(value)

    widths = [max(len(c), *(len(cell(r[c])) for r in rows)) for c in COLUMNS]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    for r in rows:
        lines.append("  ".join(cell(r[c]).ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Outcomes:
    """What a table is scored on: the 60-minute windows and the day-ahead steps (NaN: left out)."""

    label: str
    actual: FloatArray
    day_actual: FloatArray


def _outcome_sets(
    skip: set[int],
    tz: ZoneInfo,
    origins: IntArray,
    actual: FloatArray,
    day_origins: IntArray,
    day_actual: FloatArray,
) -> list[Outcomes]:
    """All test days, and with ``--skip-days`` (local day numbers) the same outcomes without
    those days."""
    sets = [Outcomes("all test days", actual, day_actual)]
    if not skip:
        return sets
    window = origins[:, None] + 1 + np.arange(HORIZON_MINUTES, dtype=np.int64)[None, :]
    steps = da.step_start(day_origins)[:, None] + da.STEP * np.arange(da.STEPS)[None, :]
    kept, kept_day = actual.copy(), day_actual.copy()
    blanked = skip_outcomes(kept, window, tz, skip)
    blanked_day = skip_outcomes(kept_day, steps, tz, skip)
    test_days = set(np.floor_divide(local_minutes(origins + 1, tz), MINUTES_PER_DAY).tolist())
    names = {d: str(date(1970, 1, 1) + timedelta(days=d)) for d in skip}
    outside = sorted(skip - test_days)
    if outside:
        text = ", ".join(names[d] for d in outside)
        sys.stdout.write(f"--skip-days: not a test day, nothing left out: {text}\n")
    inside = sorted(skip & test_days)
    if not inside:
        return sets
    sys.stdout.write(
        f"scores leave out {len(inside)} day(s): {blanked} minute outcomes of the 60-minute "
        f"windows, {blanked_day} day-ahead steps\n"
    )
    label = "without " + ", ".join(names[d] for d in inside)
    sets.append(Outcomes(label, kept, kept_day))
    return sets


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
    day_origins = _day_ahead_origins(start, values, split)
    day_actual = da.day_ahead_targets(start, values, day_origins)
    sets = _outcome_sets(skip, tz, origins, actual, day_origins, day_actual)
    # The test part's values are visible only as history before each origin (as in service).
    tables: list[list[dict[str, Any]]] = [[] for _ in sets]
    for model in models:
        logger.info("bench: %s", model)
        rows: list[dict[str, Any]]
        extra: list[dict[str, Any]] = []
        if model == "persistence":
            pred = persistence_windows(start, values, origins, HORIZON_MINUTES)
            infer = _baseline_latency_ms(None, start, values, origins, tz)
            rows = [_row(model, _scored_metrics(pred, o.actual), infer_ms=infer) for o in sets]
        elif model in ("last-week", "mean-2-weeks"):
            weeks = 1 if model == "last-week" else 2
            pred = seasonal_mean_windows(start, values, origins, tz, weeks, HORIZON_MINUTES)
            infer = _baseline_latency_ms(weeks, start, values, origins, tz)
            rows = []
            if weeks == 2:
                p50, p10, p90 = _seasonal_day_ahead(start, values, day_origins, tz)
                # Its band as the service serves it (adapted online), and as it comes.
                s10, s90 = served_bands(start, values, day_origins, p50, p10, p90, day_ahead=True)
            for o in sets:
                day: dict[str, float] = {}
                if weeks == 2:
                    raw = _day_ahead_scores(p50, o.day_actual, p10, p90)
                    day = _day_ahead_scores(p50, o.day_actual, s10, s90)
                    day["coverage_p10_p90_day_ahead_unadapted"] = raw["coverage_p10_p90_day_ahead"]
                    sys.stdout.write(
                        f"mean-2-weeks ({o.label}): day-ahead P10-P90 coverage "
                        f"{day['coverage_p10_p90_day_ahead']:.1%} as served, adapted online "
                        f"({day['coverage_p10_p90_day_ahead_unadapted']:.1%} unadapted)\n"
                    )
                rows.append(_row(model, _scored_metrics(pred, o.actual), infer_ms=infer, **day))
            if weeks == 2 and calendar is not None:
                # The same baseline told the calendar (as the service's baseline is).
                extra = _calendar_baseline_rows(
                    start, values, origins, tz, day_origins, sets, calendar
                )
        elif model == "seed-lstm":
            res = in_child(
                _child_seed_lstm,
                {**common, "cap_s": args.seed_lstm_cap_s, "origins": origins.tolist()},
            )
            rows = [
                _row(
                    model,
                    _scored_metrics(res["pred"], o.actual),
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
        sys.stdout.write(_format_table(table))
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
    p50, p10, p90 = _seasonal_day_ahead(start, values, day_origins, tz, calendar)
    s10, s90 = served_bands(start, values, day_origins, p50, p10, p90, day_ahead=True)
    return [
        _row(
            "mean-2-weeks+calendar",
            _scored_metrics(pred, o.actual),
            **_day_ahead_scores(p50, o.day_actual, s10, s90),
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

    air = _weather(common["weather"], tz, start, len(values))
    with tempfile.TemporaryDirectory(prefix="open-dsm-bench-") as tmp:
        artifact = str(Path(tmp) / "model")
        trained = in_child(
            _child_ours, {**common, "artifact": artifact, "time_budget_s": args.time_budget_s}
        )
        if "not_run" in trained:
            sys.stdout.write(f"ours: not run: {trained['not_run']}\n")
            return [_row("ours", None) for _ in sets], []
        sys.stdout.write(
            f"ours: chose {trained['candidate']}; inner holdout "
            f"{json.dumps(trained['holdout'].get('ours', {}))}\n"
        )
        forecaster = LiteForecaster.load(artifact)
        calendar = _calendar_of(common)
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
            _child_serving, {**common, "artifact": artifact, "origins": sample.tolist()}
        )
    rows = []
    for o in sets:
        static = _scored_metrics(kw, o.actual, p10_kw=p10, p90_kw=p90)["coverage_p10_p90_60"]
        metrics = _scored_metrics(kw, o.actual, p10_kw=s10, p90_kw=s90)
        day: dict[str, float] = {}
        static_day = None
        day_text = ""
        if day_ahead is not None:
            d50, d10, d90, e10, e90 = day_ahead
            static_day = _day_ahead_scores(d50, o.day_actual, d10, d90)[
                "coverage_p10_p90_day_ahead"
            ]
            day = _day_ahead_scores(d50, o.day_actual, e10, e90)
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
            _row(
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
            day = _day_ahead_scores(day_ahead[0], o.day_actual, day_ahead[1], day_ahead[2])
        metrics = _scored_metrics(kw, o.actual, p10_kw=s10, p90_kw=s90)
        rows.append(_row("ours, calendar not read", metrics, **day))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (the CLI wires add_arguments/run itself)."""
    parser = argparse.ArgumentParser(prog="bench-forecast")
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

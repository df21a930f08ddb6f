"""`open-dsm bench forecast`'s child processes (spawned: a fresh interpreter, so peak RSS is the
child's own, and the benchmark process never imports TensorFlow)."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue as queue_module
import resource
import sys
import time
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from core.calendar import SiteCalendar, parse_calendar
from core.forecast.base import HORIZON_MINUTES, MinuteHistory
from core.forecast.features import (
    FloatArray,
)
from core.forecast.meter_csv import load_meter_csv


def calendar_of(args: dict[str, Any]) -> SiteCalendar | None:
    """The site calendar a child was handed (its JSON document), or None."""
    document = args.get("calendar")
    return None if document is None else parse_calendar(document)


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def weather_for(path: str | None, tz: ZoneInfo, start: int, length: int) -> FloatArray | None:
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


def child_ours(args: dict[str, Any], queue: Any) -> None:
    """Train our model on the history before the split and write its artifact."""
    from core.forecast import neural
    from core.forecast.lite import write_artifact

    logging.basicConfig(level=args["log_level"], format="%(asctime)s %(name)s %(message)s")
    tz = ZoneInfo(args["tz"])
    series = load_meter_csv(
        args["data"], tz, time_column=args["time_column"], kw_column=args["kw_column"]
    )
    train_values = series.values_kw[: args["split"] - series.start_minute]
    air = weather_for(args["weather"], tz, series.start_minute, len(train_values))
    t0 = time.monotonic()
    try:
        result = neural.train(
            series.start_minute,
            train_values,
            tz,
            outdoor_air=air,
            time_budget_s=args["time_budget_s"],
            calendar=calendar_of(args),
        )
    except neural.InsufficientHistoryError as exc:
        queue.put({"not_run": str(exc)})
        return
    train_s = time.monotonic() - t0
    write_artifact(args["artifact"], result.tflite_model, result.meta, result.day_ahead_model)
    queue.put(
        {
            "train_s": train_s,
            "peak_rss_mb": peak_rss_mb(),
            "holdout": result.holdout_metrics,
            "validation": result.validation,
            "candidate": result.meta.candidate,
            "day_ahead": None if result.meta.day_ahead is None else result.meta.day_ahead.to_dict(),
        }
    )


def child_serving(args: dict[str, Any], queue: Any) -> None:
    """Time our model's forecasts as the service makes them (no TensorFlow loaded)."""
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
    calendar = calendar_of(args)
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
            "serving_rss_mb": peak_rss_mb(),
            "tensorflow_imported": any(
                m == "tensorflow" or m.startswith(("tensorflow.", "keras")) for m in sys.modules
            ),
        }
    )


def child_seed_lstm(args: dict[str, Any], queue: Any) -> None:
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
            "peak_rss_mb": peak_rss_mb(),
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

"""One training run, executed in its own process (TensorFlow is imported only down this path).

The serving process calls :func:`run_training` through a process pool (or ``open-dsm train`` calls
it directly). The run reads minutes from the database itself, trains and evaluates on a held-out
recent part beside the baselines, writes the artifact atomically only if it beats them, and records
the run either way: run by the service (``record=False``) it hands the run record's fields back in
its outcome and the service's one database writer writes them; run alone it writes them itself.
A crash or kill leaves the previous model and a run marked 'running', which the
next start-up marks 'failed'.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from core.storage.repository import MinuteColumns, Storage, create_db_engine
from core.timegrid import MINUTES_PER_DAY, MINUTES_PER_WEEK, minute_start

log = logging.getLogger(__name__)

# Enough for the longest rolling window the trainer may choose plus its lags and holdout.
TRAINING_HISTORY_WEEKS = 16
ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True, slots=True)
class TrainingOutcome:
    """What a run ended as (picklable: it crosses the process boundary)."""

    run_id: int
    status: str  # accepted / rejected / failed
    message: str
    artifact_path: str | None = None
    rmse_kw: float | None = None
    training_minutes: float | None = None
    # The model run's fields to record (``Storage.update_model_run``), for the caller to write.
    fields: dict[str, Any] | None = None


def dense_history(
    minutes: npt.NDArray[np.int64], values: npt.NDArray[np.float64]
) -> tuple[int, npt.NDArray[np.float64]]:
    """Sparse stored minutes -> (start minute, contiguous array with NaN gaps)."""
    start = int(minutes[0])
    dense = np.full(int(minutes[-1]) - start + 1, np.nan)
    dense[minutes - start] = values
    return start, dense


def choose_window(storage: Storage, min_valid_days: float) -> tuple[int, int, list[str]] | None:
    """The history to train on: (first minute, last minute, notes on what was skipped).

    Normally the ``TRAINING_HISTORY_WEEKS`` ending at the newest stored minute. When that holds
    too little (a year-old import followed by a few live minutes after a gap), the window ends at
    the newest earlier stretch that has enough, and the notes say how many newer minutes were
    left out. Only per-week counts and one window are read: the cost does not grow with history.
    """
    bounds = storage.minute_bounds()
    if bounds is None:
        return None
    oldest, newest = bounds
    span = TRAINING_HISTORY_WEEKS * MINUTES_PER_WEEK
    need = int(min_valid_days * MINUTES_PER_DAY)
    end = newest
    while end >= oldest:
        if storage.count_minutes_between(end - span + 1, end) >= need:
            break
        # Step back to the newest minute before the quiet stretch at the start of this window.
        lo = end - span + 1
        earlier = storage.latest_minute_before(lo)
        if earlier is None:
            end = newest  # nothing older: train on what there is (the trainer says how little)
            break
        end = earlier
    notes: list[str] = []
    if end != newest:
        skipped = storage.count_minutes_between(end + 1, newest)
        after = storage.list_minutes(end + 1, None, 1)
        gap_days = (after[0].minute - end) / MINUTES_PER_DAY if after else 0.0
        notes.append(
            f"skipped {skipped} newer stored minutes after a {gap_days:.0f}-day gap (too few to "
            f"train on); trained on the history up to {minute_start(end):%Y-%m-%d %H:%M} UTC"
        )
    return max(oldest, end - span + 1), end, notes


def base_load_series(storage: Storage, start_minute: int, end_minute: int) -> MinuteColumns:
    """Stored minutes in [start, end] as base load: the meter less the battery and EV kW the
    service dispatched in that minute (where it recorded one), as the served forecasters see it."""
    minutes, values = storage.load_series(start_minute, end_minute)
    own_minutes, own = storage.load_dispatched(start_minute, end_minute)
    if len(own_minutes) and len(minutes):
        values = values.copy()
        at = np.minimum(np.searchsorted(minutes, own_minutes), len(minutes) - 1)
        same = minutes[at] == own_minutes  # a minute the service stored between the two reads
        values[at[same]] -= own[same]
    return minutes, values


def dense_outdoor_air(storage: Storage, start: int, length: int) -> npt.NDArray[np.float64] | None:
    """Stored outdoor air aligned with a dense kW window (NaN where unknown); None if none."""
    minutes, temps = storage.load_outdoor_air(start, start + length - 1)
    if len(minutes) == 0:
        return None
    dense = np.full(length, np.nan)
    dense[minutes - start] = temps
    return dense


def run_training(
    database_url: str,
    models_dir: str,
    timezone: str,
    trigger: str,
    *,
    run_id: int | None = None,
    time_budget_s: float = 50.0,
    progress: ProgressFn | None = None,
    configure_logging: bool = False,
    record: bool = True,
) -> TrainingOutcome:
    """Train, evaluate and maybe publish a model; record the run (or, with ``record`` False,
    return its fields in the outcome for the caller's writer)."""
    if configure_logging:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[train]: %(message)s"
        )
    started = datetime.now(UTC)
    t0 = time.monotonic()
    engine = create_db_engine(database_url)
    storage = Storage(engine)
    if run_id is None:
        run_id = storage.add_model_run(started_at=started, status="running", trigger=trigger)
    log.info("training run %d started (%s)", run_id, trigger)
    try:
        outcome = _train(
            storage, run_id, Path(models_dir), ZoneInfo(timezone), time_budget_s, progress, t0
        )
    except Exception as exc:  # every failure is recorded; the served model stays
        minutes = (time.monotonic() - t0) / 60
        message = _failure_message(exc)
        log.error("training run %d failed: %s", run_id, message)
        fields: dict[str, Any] = {
            "status": "failed",
            "finished_at": datetime.now(UTC),
            "training_minutes": minutes,
            "error_text": message if _expected(exc) else traceback.format_exc(limit=20),
        }
        outcome = TrainingOutcome(
            run_id, "failed", message, training_minutes=minutes, fields=fields
        )
    try:
        if record and outcome.fields is not None:
            storage.update_model_run(run_id, **outcome.fields)
    finally:
        engine.dispose()
    return outcome


def _expected(exc: Exception) -> bool:
    from core.forecast.neural import InsufficientHistoryError

    return isinstance(exc, InsufficientHistoryError)


def _failure_message(exc: Exception) -> str:
    return str(exc) or exc.__class__.__name__


def _train(
    storage: Storage,
    run_id: int,
    models_dir: Path,
    tz: ZoneInfo,
    time_budget_s: float,
    progress: ProgressFn | None,
    t0: float,
) -> TrainingOutcome:
    from core.forecast import neural
    from core.forecast.lite import write_artifact

    window = choose_window(storage, neural.MIN_HISTORY_DAYS * neural.MIN_VALID_FRACTION)
    if window is None:
        raise neural.InsufficientHistoryError(
            f"no readings stored yet: training needs at least {neural.MIN_HISTORY_DAYS} days"
        )
    lo, end, notes = window
    minutes, values = base_load_series(storage, lo, end)
    start, dense = dense_history(minutes, values)
    air = dense_outdoor_air(storage, start, len(dense))
    # Past listed days are read as their day type, as the served forecasts will read them.
    calendar = storage.load_calendar()
    for note in notes:
        log.warning("training: %s", note)
    log.info(
        "training on %d stored minutes from %s to %s (outdoor air for %.0f %%)",
        len(minutes),
        minute_start(start),
        minute_start(end),
        100.0 * float(np.mean(~np.isnan(air))) if air is not None else 0.0,
    )
    result = neural.train(
        start,
        dense,
        tz,
        outdoor_air=air,
        progress=progress,
        time_budget_s=time_budget_s,
        notes=tuple(notes),
        calendar=None if calendar.empty else calendar,
    )
    metrics = result.holdout_metrics
    ours = metrics["ours"]
    baselines = {name: m for name, m in metrics.items() if name != "ours"}
    best_name, best = min(baselines.items(), key=lambda item: item[1]["rmse_60"])
    accepted = ours["rmse_60"] < best["rmse_60"]
    minutes_taken = (time.monotonic() - t0) / 60
    version = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-run{run_id}"
    artifact: Path | None = None
    if accepted:
        artifact = write_artifact(
            models_dir / version, result.tflite_model, result.meta, result.day_ahead_model
        )
        message = (
            f"accepted: held-out RMSE {ours['rmse_60']:.3f} kW beats {best_name} "
            f"{best['rmse_60']:.3f} kW"
        )
    else:
        message = (
            f"rejected: held-out RMSE {ours['rmse_60']:.3f} kW does not beat {best_name} "
            f"{best['rmse_60']:.3f} kW; the served model is unchanged"
        )
    if notes:
        message = f"{message} ({'; '.join(notes)})"
    holdout_start = result.meta.holdout_start_minute
    fields: dict[str, Any] = dict(
        status="accepted" if accepted else "rejected",
        finished_at=datetime.now(UTC),
        model_version=version,
        model_family=result.meta.model,
        artifact_path=str(artifact) if artifact else None,
        rows_used=int(np.count_nonzero(~np.isnan(dense))),
        train_start=minute_start(start),
        train_end=minute_start(start + len(dense) - 1),
        holdout_start=minute_start(holdout_start),
        rmse_kw=_finite(ours.get("rmse_60")),
        mae_kw=_finite(ours.get("mae_60")),
        cvrmse_pct=_finite(ours.get("cvrmse_15min_60")),
        baseline_metrics=_jsonable({"ours": ours, **baselines}),
        training_minutes=minutes_taken,
    )
    log.info("training run %d %s", run_id, message)
    return TrainingOutcome(
        run_id,
        "accepted" if accepted else "rejected",
        message,
        artifact_path=str(artifact) if artifact else None,
        rmse_kw=_finite(ours.get("rmse_60")),
        training_minutes=minutes_taken,
        fields=fields,
    )


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _jsonable(metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    return {name: {k: _finite(v) for k, v in m.items()} for name, m in metrics.items()}

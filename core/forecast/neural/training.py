"""Training of the neural forecaster, step by step (``train``)."""

from __future__ import annotations

import gc
import logging
import os
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np

from core.calendar import SiteCalendar
from core.forecast import day_ahead as da
from core.forecast.base import HORIZON_MINUTES
from core.forecast.features import FloatArray, Scaling, WeekdayGroups
from core.forecast.neural.day_ahead_training import DayAheadResult, train_day_ahead
from core.forecast.neural.export import TrainResult, export_tflite, served_meta
from core.forecast.neural.model import Candidate, default_candidates, with_features
from core.forecast.neural.process import ProgressFn, limit_malloc_arenas, reporter
from core.forecast.neural.samples import (
    MAX_TRAIN_WEEKS,
    Split,
    air_usable,
    check_history,
    window_start,
)
from core.forecast.neural.search import (
    CandidateSearch,
    ChosenModel,
    choose_and_score,
    choose_base_groups,
)

logger = logging.getLogger(__name__)


def train(
    start_minute: int,
    values_kw: FloatArray,
    tz: ZoneInfo,
    *,
    outdoor_air: FloatArray | None = None,
    progress: ProgressFn | None = None,
    time_budget_s: float = 50.0,
    max_epochs: int = 12,
    candidates: list[Candidate] | None = None,
    seed: int = 0,
    day_ahead: bool = True,
    notes: tuple[str, ...] = (),
    calendar: SiteCalendar | None = None,
) -> TrainResult:
    """Choose, evaluate (honest holdout) and export the forecasters as TFLite + metadata.

    Needs MIN_HISTORY_DAYS (28) days of minutes with >= 70 % valid; raises
    InsufficientHistoryError otherwise. ``outdoor_air`` (aligned with ``values_kw``, NaN where
    unknown) is offered to the models when it covers enough of the history; validation decides.
    ``time_budget_s`` bounds the whole call (roughly: the searches stop early and the final fits
    are shortened when it runs out). ``calendar``: past listed days are read as their day type
    (weekday inputs, groups and the weekly lags), as forecasts will read them.

    The steps, one function each below: split the history (fit | V | H) and scale on the fit
    part, choose the residual base, search the candidates on V, shrink and calibrate the chosen
    one and score it on H, train the day-ahead model, export both.
    """
    t0 = time.monotonic()
    values_kw = np.asarray(values_kw, dtype=np.float64)
    if outdoor_air is not None:
        outdoor_air = np.asarray(outdoor_air, dtype=np.float64)
        if len(outdoor_air) != len(values_kw):
            raise ValueError("outdoor_air must be aligned with values_kw")
    check_history(values_kw)
    report = reporter(progress)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    limit_malloc_arenas()
    report(0.0, "importing TensorFlow")
    # Here, so the module import stays cheap; the search's time is counted after it.
    import keras  # noqa: F401

    run = _Run(start_minute, values_kw, tz, outdoor_air, calendar, t0, time_budget_s, seed)
    split, scaling, air_ok = _split_and_scale(run)
    found, candidates = _residual_base(run, split, candidates or default_candidates())
    search = _search_candidates(run, split, scaling, candidates, air_ok, max_epochs, report)
    # The exported model is the one chosen on V, scored on H and calibrated on V and H: a refit
    # or fine-tune on everything would leave its band and its holdout figures unchecked.
    chosen = choose_and_score(search, start_minute, values_kw, tz, split, scaling, seed, report)
    search.release()
    gc.collect()
    day_ahead_result = _day_ahead_model(
        run, split, scaling, chosen, found, max_epochs, day_ahead, report
    )
    if day_ahead_result is not None:
        search.results.extend(day_ahead_result.validation)
    report(0.95, "exporting TFLite")
    tflite = export_tflite(chosen.model)
    train_s = time.monotonic() - t0
    meta = served_meta(
        chosen, run.values_kw, tz, split, scaling, day_ahead_result, search.results, train_s, notes
    )
    report(1.0, f"done in {train_s:.1f} s")
    return TrainResult(
        tflite_model=tflite,
        meta=meta,
        holdout_metrics=chosen.holdout,
        validation=search.results,
        train_s=train_s,
        day_ahead_model=None if day_ahead_result is None else day_ahead_result.tflite,
        keras_model=chosen.model,
        keras_day_ahead=None if day_ahead_result is None else day_ahead_result.keras_model,
    )


@dataclass(frozen=True, slots=True)
class _Run:
    """What every step of one training run reads: the history and the time budget."""

    start_minute: int
    values_kw: FloatArray
    tz: ZoneInfo
    outdoor_air: FloatArray | None
    calendar: SiteCalendar | None
    t0: float  # time.monotonic() when the run began
    time_budget_s: float
    seed: int


def _split_and_scale(run: _Run) -> tuple[Split, Scaling, bool]:
    """The split (fit | V | H), the scaling fitted on the fit part, whether air is offered."""
    end_minute = run.start_minute + len(run.values_kw) - 1
    split = Split.of(run.start_minute, end_minute, HORIZON_MINUTES)
    air_ok = air_usable(run.start_minute, run.outdoor_air, split.val_start)
    # Scaling from the part the candidates are trained on (no look at V or H).
    fit_slice = slice(0, split.val_start - run.start_minute)
    outdoor_air = run.outdoor_air
    scaling = Scaling.fit(
        run.values_kw[fit_slice], outdoor_air[fit_slice] if outdoor_air is not None else None
    )
    return split, scaling, air_ok


def _residual_base(
    run: _Run, split: Split, candidates: list[Candidate]
) -> tuple[WeekdayGroups, list[Candidate]]:
    """The weekday groups found before V, and the candidates on the 60-minute base chosen.

    The residual base: same weekday, or every day of the weekday's group (found once, on the
    days before V, for both models' bases), chosen by the base's own error before any network.
    """
    found = da.weekday_groups(
        run.start_minute, run.values_kw, run.tz, split.val_start - 1, run.calendar
    )
    groups = choose_base_groups(
        run.start_minute,
        run.values_kw,
        run.tz,
        candidates[0].features,
        split.first_origin,
        split.val_start,
        split.holdout_start,
        found,
        run.calendar,
    )
    if groups is not None:
        candidates = [with_features(c, weekday_groups=groups) for c in candidates]
    return found, candidates


def _search_candidates(
    run: _Run,
    split: Split,
    scaling: Scaling,
    candidates: list[Candidate],
    air_ok: bool,
    max_epochs: int,
    report: ProgressFn,
) -> CandidateSearch:
    """Train each candidate on the fit part and score it on V, within the search's time."""
    search = CandidateSearch(
        run.start_minute,
        run.values_kw,
        run.tz,
        run.outdoor_air,
        split,
        scaling,
        max_epochs,
        run.seed,
        deadline_all=run.t0 + run.time_budget_s,
        calendar=run.calendar,
    )
    t0, budget_s = run.t0, run.time_budget_s
    # Counted from when TensorFlow is loaded (its import time varies with the machine's load).
    search_deadline = min(time.monotonic() + 0.28 * budget_s, t0 + 0.4 * budget_s)
    search.run(candidates, air_ok, search_deadline, t0 + 0.6 * budget_s, report)
    return search


def _day_ahead_model(
    run: _Run,
    split: Split,
    scaling: Scaling,
    chosen: ChosenModel,
    found: WeekdayGroups,
    max_epochs: int,
    wanted: bool,
    report: ProgressFn,
) -> DayAheadResult | None:
    """The day-ahead model, if wanted and time is left (else the baseline serves the day)."""
    if not wanted:
        return None
    if time.monotonic() > run.t0 + 0.75 * run.time_budget_s:
        logger.warning("no time left for the day-ahead model: the baseline serves the day ahead")
        return None
    report(0.7, "day-ahead model")
    fit_lo = window_start(split.val_start - da.STEPS * da.STEP, split.first_origin, MAX_TRAIN_WEEKS)
    return train_day_ahead(
        run.start_minute,
        run.values_kw,
        run.tz,
        run.outdoor_air,
        chosen.candidate.features.outdoor_air,
        (fit_lo, split.val_start, split.holdout_start),
        scaling,
        max_epochs,
        run.seed,
        run.t0 + 0.87 * run.time_budget_s,
        found,
        run.calendar,
    )

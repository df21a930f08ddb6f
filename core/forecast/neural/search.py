"""The 60-minute model: its residual base, the candidate search on V, the chosen one scored on H."""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from core.calendar import SiteCalendar
from core.forecast.base import HORIZON_MINUTES
from core.forecast.evaluation import forecast_metrics
from core.forecast.features import (
    NO_GROUPS,
    FeatureConfig,
    FloatArray,
    IntArray,
    Scaling,
    WeekdayGroups,
    feature_blocks,
    persistence_windows,
    seasonal_mean_windows,
    target_windows,
    training_origins,
)
from core.forecast.meta import BandCalibration
from core.forecast.neural.fitting import (
    apply_band,
    choose_step_shrink,
    conformal_band,
    fit_epochs,
    predict_kw,
)
from core.forecast.neural.model import QUANTILES, Candidate, apply_shrink, make_model
from core.forecast.neural.process import ProgressFn, trim_malloc
from core.forecast.neural.samples import (
    BASE_CHOICE_WEEKS,
    CHUNK,
    MAX_FIT_SAMPLES,
    TRAIN_STRIDE,
    InsufficientHistoryError,
    SampleSet,
    Split,
    build_samples,
    window_start,
)
from core.timegrid import MINUTES_PER_DAY, MINUTES_PER_WEEK

logger = logging.getLogger(__name__)

# The widest coverage the served P10-P90 band may aim at to make up for drift after training.
MAX_BAND_COVERAGE = 0.86


def choose_base_groups(
    start_minute: int,
    values_kw: FloatArray,
    tz: ZoneInfo,
    config: FeatureConfig,
    first_origin: int,
    val_start: int,
    holdout_start: int,
    found: WeekdayGroups,
    calendar: SiteCalendar | None = None,
) -> WeekdayGroups | None:
    """The weekday groups ``found`` for the 60-minute model's residual base, or None (same
    weekday).

    The two bases fit nothing, so they are compared on every 7th origin of the last
    BASE_CHOICE_WEEKS weeks before H (fit part and V), by the RMSE over the whole hour.
    """
    if found == NO_GROUPS:
        return None
    horizon = config.horizon_minutes
    lo = max(first_origin, val_start - BASE_CHOICE_WEEKS * MINUTES_PER_WEEK)
    last = holdout_start - horizon - 1  # targets end before H
    origins = training_origins(start_minute, values_kw, lo, last, horizon)[::7]
    if len(origins) == 0:
        return None
    actual = target_windows(start_minute, values_kw, origins, horizon)
    scores: dict[str, float] = {}
    for name, cfg in (("weeks", config), ("groups", replace(config, weekday_groups=found))):
        base = np.empty_like(actual)
        for lo_i in range(0, len(origins), CHUNK):
            chunk = origins[lo_i : lo_i + CHUNK]
            base[lo_i : lo_i + len(chunk)] = feature_blocks(
                start_minute, values_kw, chunk, tz, cfg, calendar=calendar
            ).baseline_kw
        ok = ~np.isnan(actual)
        scores[name] = float(np.sqrt(np.mean((base[ok] - actual[ok]) ** 2)))
    chosen = found if scores["groups"] < scores["weeks"] else None
    logger.info(
        "60-minute base: weekday groups %s (found %s; RMSE over %d origins: %s)",
        chosen,
        found,
        len(origins),
        {k: round(v, 3) for k, v in scores.items()},
    )
    return chosen


class CandidateSearch:
    """Trains candidates on the fit part and scores them on V, keeping the best one's weights.

    V and H samples are kept per feature configuration (small); a candidate's fit part is built
    for it and dropped after it, so at most one fit part is in memory.
    """

    def __init__(
        self,
        start_minute: int,
        values_kw: FloatArray,
        tz: ZoneInfo,
        outdoor_air: FloatArray | None,
        split: Split,
        scaling: Scaling,
        max_epochs: int,
        seed: int,
        deadline_all: float,
        calendar: SiteCalendar | None = None,
    ) -> None:
        self._start_minute = start_minute
        self._values_kw = values_kw
        self._tz = tz
        self._outdoor_air = outdoor_air
        self._split = split
        self._scaling = scaling
        self._max_epochs = max_epochs
        self._seed = seed
        self._deadline_all = deadline_all
        self._calendar = calendar
        self._horizon = HORIZON_MINUTES
        self._fit_end = split.val_start - self._horizon  # fit-part targets end before V starts
        self._data: dict[FeatureConfig, tuple[SampleSet, SampleSet]] = {}
        self.fit_counts: dict[FeatureConfig, int] = {}
        self.results: list[dict[str, Any]] = []
        # (V score, candidate, weights, best epoch) of the best candidate so far.
        self.best: tuple[float, Candidate, Any, int] | None = None

    def run(
        self,
        candidates: list[Candidate],
        air_ok: bool,
        search_deadline: float,
        air_deadline_cap: float,
        report: ProgressFn,
    ) -> None:
        """Each candidate in turn until ``search_deadline``; the first one again with outdoor
        air (where ``air_ok``), and the later ones with it only if it validated better."""
        use_air = False
        for i, cand in enumerate(candidates):
            if self.best is not None and time.monotonic() > search_deadline:
                logger.info("skipping candidate %s: search time used up", cand.name)
                continue
            if use_air:
                cand = replace(
                    cand,
                    name=f"{cand.name}+air",
                    features=replace(cand.features, outdoor_air=True),
                )
            report(0.05 + 0.4 * i / len(candidates), f"candidate {cand.name}")
            began = time.monotonic()
            ran = self.evaluate(cand, search_deadline)
            if i == 0 and air_ok and self.best is not None:
                # As much time as the first took, so both see about as many epochs.
                air_deadline = min(
                    time.monotonic() + 1.5 * (time.monotonic() - began), air_deadline_cap
                )
                # The first configuration again with outdoor air, given as many epochs; the
                # later candidates use outdoor air only if it validated better here.
                first = self.best[1]
                with_air = replace(
                    first,
                    name=f"{first.name}+air",
                    features=replace(first.features, outdoor_air=True),
                )
                report(0.05 + 0.4 * (i + 0.5) / len(candidates), f"candidate {with_air.name}")
                # The same number of epochs as the first got: a fair comparison.
                self.evaluate(with_air, air_deadline, max(1, ran))
                use_air = self.best[1].features.outdoor_air

    def evaluate(self, cand: Candidate, deadline: float, epochs: int | None = None) -> int:
        """Train and score one candidate on V; returns how many epochs it ran (0: none)."""
        import keras

        split, horizon, scaling = self._split, self._horizon, self._scaling
        start_minute, values_kw = self._start_minute, self._values_kw
        cfg = cand.features
        all_origins = training_origins(
            start_minute,
            values_kw,
            split.first_origin,
            split.last_origin,
            horizon,
            recent_minutes=cfg.recent_minutes,
        )
        if cfg not in self._data:
            in_v = (all_origins >= split.val_start) & (all_origins < split.holdout_start)
            v_o, h_o = all_origins[in_v], all_origins[all_origins >= split.holdout_start]
            self._data[cfg] = (self._samples(v_o, cfg), self._samples(h_o, cfg))
        val, _ = self._data[cfg]
        lo = window_start(self._fit_end, split.first_origin, cand.train_weeks)
        fit_o = all_origins[(all_origins >= lo) & (all_origins < self._fit_end)]
        # A fixed ceiling on samples: a long window is thinned more, not held whole.
        fit_o = fit_o[:: max(TRAIN_STRIDE, -(-len(fit_o) // MAX_FIT_SAMPLES))]
        self.fit_counts[cfg] = len(fit_o)
        fit = self._samples(fit_o, cfg)
        if len(fit.origins) < MINUTES_PER_DAY // TRAIN_STRIDE or len(val.origins) == 0:
            logger.info("candidate %s: too few samples", cand.name)
            return 0
        model = make_model(fit.x.shape[1], cand, horizon, self._seed)
        epoch, score, curve = fit_epochs(
            model,
            fit,
            self._max_epochs if epochs is None else epochs,
            val,
            scaling,
            horizon,
            min(deadline, self._deadline_all),
        )
        kw, _, _ = predict_kw(model, val, scaling, horizon)
        metrics = forecast_metrics(kw, val.actual_kw)
        self.results.append(
            {
                "candidate": cand.name,
                "best_epoch": epoch,
                "score": score,
                "curve": [round(x, 4) for x in curve],
                **metrics,
                "train_samples": len(fit.origins),
            }
        )
        logger.info(
            "candidate %s: epoch %d score %.3f rmse_60 %.3f rmse_1_60 %.3f cv15 %.1f%%",
            cand.name,
            epoch,
            score,
            metrics["rmse_60"],
            metrics["rmse_1_60"],
            metrics["cvrmse_15min_60"],
        )
        best = self.best
        if best is None or score < best[0]:
            if best is not None and best[1].features != cfg:
                self._data.pop(best[1].features, None)
            self.best = (score, cand, model.get_weights(), epoch)
        elif best is not None and cfg != best[1].features:
            self._data.pop(cfg, None)
        # Only the weights are kept: dropping the graphs keeps the process small.
        del fit, model
        keras.backend.clear_session()
        gc.collect()
        trim_malloc()
        return len(curve)

    def val_and_holdout(self, cfg: FeatureConfig) -> tuple[SampleSet, SampleSet]:
        """The V and H samples of a configuration that was evaluated."""
        return self._data[cfg]

    def release(self) -> None:
        """Drop the samples and the best weights (the chosen model has been built)."""
        self._data.clear()
        self.best = None

    def _samples(self, origins: IntArray, cfg: FeatureConfig) -> SampleSet:
        return build_samples(
            self._start_minute,
            self._values_kw,
            origins,
            self._tz,
            cfg,
            self._scaling,
            self._outdoor_air,
            self._calendar,
        )


@dataclass(slots=True)
class ChosenModel:
    """The candidate chosen on V, shrunk, scored on H and with its served band calibrated."""

    candidate: Candidate
    epochs: int
    model: Any
    shrink_steps: FloatArray
    band: BandCalibration
    holdout: dict[str, dict[str, float]]
    input_dim: int
    train_origins: int


def choose_and_score(
    search: CandidateSearch,
    start_minute: int,
    values_kw: FloatArray,
    tz: ZoneInfo,
    split: Split,
    scaling: Scaling,
    seed: int,
    report: ProgressFn,
) -> ChosenModel:
    """Rebuild the best candidate, choose its shrinkage and band on V, score it on H beside
    persistence and mean-2-weeks, and calibrate the served band on V and H."""
    horizon = HORIZON_MINUTES
    if search.best is None:
        raise InsufficientHistoryError("no candidate could be trained on this history")
    _, chosen, chosen_weights, chosen_epochs = search.best
    val, hold = search.val_and_holdout(chosen.features)
    chosen_model = make_model(val.x.shape[1], chosen, horizon, seed)
    chosen_model.set_weights(chosen_weights)
    # Shrinkage of the residual toward the smoothed seasonal mean, chosen on V.
    shrink_steps, shrink_score = choose_step_shrink(chosen_model, val, scaling, horizon)
    apply_shrink(chosen_model, shrink_steps)
    logger.info(
        "shrink factors %s (steps 1, 15, 30, 45, 60; V score %.3f)",
        [round(float(shrink_steps[i]), 2) for i in (0, 14, 29, 44, horizon - 1)],
        shrink_score,
    )
    # Split conformal band calibration on V.
    kw_v, p10_v, p90_v = predict_kw(chosen_model, val, scaling, horizon)
    band = conformal_band(kw_v, p10_v, p90_v, val.actual_kw.astype(np.float64))

    # Honest evaluation on H with the chosen candidate (trained before V, chosen on V).
    report(0.55, f"holdout evaluation of {chosen.name}")
    holdout: dict[str, dict[str, float]] = {}
    if len(hold.origins):
        kw, p10, p90 = predict_kw(chosen_model, hold, scaling, horizon)
        p10, p90 = apply_band(kw, p10, p90, band)
        holdout["ours"] = forecast_metrics(kw, hold.actual_kw, p10_kw=p10, p90_kw=p90)
        holdout["persistence"] = forecast_metrics(
            persistence_windows(start_minute, values_kw, hold.origins, horizon), hold.actual_kw
        )
        holdout["mean-2-weeks"] = forecast_metrics(
            seasonal_mean_windows(start_minute, values_kw, hold.origins, tz, 2, horizon),
            hold.actual_kw,
        )
        logger.info("holdout (%d days): %s", split.days, holdout)
        # The served band is calibrated on V and H together (more outcomes than V alone). The
        # band calibrated on V covered this much less on the later days of H: days after
        # training drift the same way, so the served band aims that much wider.
        nominal = QUANTILES[1] - QUANTILES[0]
        drop = max(0.0, nominal - holdout["ours"].get("coverage_p10_p90_60", nominal))
        aim = min(nominal + drop, MAX_BAND_COVERAGE)
        kw_h, p10_h, p90_h = predict_kw(chosen_model, hold, scaling, horizon)
        band = conformal_band(
            np.concatenate([kw_v, kw_h]),
            np.concatenate([p10_v, p10_h]),
            np.concatenate([p90_v, p90_h]),
            np.concatenate([val.actual_kw, hold.actual_kw]).astype(np.float64),
            coverage=aim,
        )
        logger.info(
            "band calibrated on V and H for %.1f %% (V-calibrated band on H: %.1f %%)",
            100 * aim,
            100 * (nominal - drop),
        )
    return ChosenModel(
        candidate=chosen,
        epochs=chosen_epochs,
        model=chosen_model,
        shrink_steps=shrink_steps,
        band=band,
        holdout=holdout,
        input_dim=int(val.x.shape[1]),
        train_origins=search.fit_counts[chosen.features],
    )

"""Serving of an exported forecaster with the LiteRT interpreter (never imports TensorFlow)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from core.calendar import SiteCalendar
from core.forecast import day_ahead as da
from core.forecast.base import DayAheadForecast, Forecast, MinuteHistory
from core.forecast.features import FloatArray, design_matrix, feature_blocks
from core.forecast.meta import MetaError, ModelMeta

logger = logging.getLogger(__name__)

MODEL_FILE = "model.tflite"
DAY_AHEAD_FILE = "day_ahead.tflite"
META_FILE = "meta.json"


class ArtifactError(ValueError):
    """An artifact directory is missing, incomplete or of an unknown version."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_artifact(
    directory: str | Path,
    tflite_model: bytes,
    meta: ModelMeta,
    day_ahead_model: bytes | None = None,
) -> Path:
    """Write model.tflite (+ day_ahead.tflite) + meta.json atomically: a temp sibling dir,
    fsync, then rename. An existing artifact at ``directory`` is replaced; readers see the old
    or the new one whole."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    files = [
        (MODEL_FILE, tflite_model),
        (META_FILE, json.dumps(meta.to_dict(), indent=2, sort_keys=True).encode()),
    ]
    if day_ahead_model is not None:
        files.append((DAY_AHEAD_FILE, day_ahead_model))
    try:
        for name, data in files:
            with open(tmp / name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        _fsync_dir(tmp)
        if target.exists():
            # Directories cannot be renamed over a non-empty one: move the old aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.rmdir(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_artifact(directory: str | Path) -> tuple[bytes, ModelMeta, bytes | None]:
    """Read and validate an artifact directory: (TFLite bytes, metadata, day-ahead TFLite)."""
    path = Path(directory)
    try:
        model = (path / MODEL_FILE).read_bytes()
        meta = ModelMeta.from_dict(json.loads((path / META_FILE).read_text()))
        day_ahead = (path / DAY_AHEAD_FILE).read_bytes() if meta.day_ahead else None
    except (OSError, json.JSONDecodeError, MetaError) as exc:
        raise ArtifactError(f"cannot read forecaster artifact at {path}: {exc}") from exc
    return model, meta, day_ahead


class _Runner:
    """One LiteRT interpreter with a resizable batch."""

    def __init__(self, tflite_model: bytes, input_dim: int, num_threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_content=tflite_model, num_threads=num_threads)
        self._input_index = int(self._interpreter.get_input_details()[0]["index"])
        self._output_index = int(self._interpreter.get_output_details()[0]["index"])
        self._batch = 1
        self._interpreter.resize_tensor_input(self._input_index, [1, input_dim])
        self._interpreter.allocate_tensors()

    def run(self, x: npt.NDArray[np.floating[Any]]) -> FloatArray:
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        if x32.shape[0] != self._batch:
            self._interpreter.resize_tensor_input(self._input_index, list(x32.shape))
            self._interpreter.allocate_tensors()
            self._batch = int(x32.shape[0])
        self._interpreter.set_tensor(self._input_index, x32)
        self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._output_index), dtype=np.float64)


def _band(
    point: FloatArray,
    p10: FloatArray,
    p90: FloatArray,
    low: tuple[float, ...],
    high: tuple[float, ...],
) -> tuple[FloatArray, FloatArray]:
    """Calibrated (P10, P90): the conformal shifts, never crossing the point forecast."""
    if low:
        p10 = p10 + np.asarray(low)
        p90 = p90 + np.asarray(high)
    return np.minimum(p10, point), np.maximum(p90, point)


class LiteForecaster:
    """The trained MLPs served by the LiteRT interpreter: 60 minutes and, when exported, the
    day ahead (it is then a ``DayAheadForecaster`` too)."""

    def __init__(
        self,
        tflite_model: bytes,
        meta: ModelMeta,
        day_ahead_model: bytes | None = None,
        *,
        num_threads: int = 1,
    ) -> None:
        self._meta = meta
        self._config = meta.features
        self._scaling = meta.scaling
        self._horizon = meta.horizon_minutes
        self._runner = _Runner(tflite_model, meta.input_dim, num_threads)
        self._day_ahead: _Runner | None = None
        if day_ahead_model is not None and meta.day_ahead is not None:
            self._day_ahead = _Runner(day_ahead_model, meta.day_ahead.input_dim, num_threads)

    @classmethod
    def load(cls, directory: str | Path, *, num_threads: int = 1) -> LiteForecaster:
        """Load from an artifact directory written by ``write_artifact``."""
        model, meta, day_ahead = read_artifact(directory)
        return cls(model, meta, day_ahead, num_threads=num_threads)

    @property
    def name(self) -> str:
        """Stable name: model kind and format version."""
        return f"{self._meta.model}-v{self._meta.version}"

    @property
    def meta(self) -> ModelMeta:
        """The artifact metadata (scaling, features, validation figures)."""
        return self._meta

    @property
    def has_day_ahead(self) -> bool:
        """True when the artifact carries a day-ahead model."""
        return self._day_ahead is not None

    @property
    def history_minutes(self) -> int:
        """Minutes of history the features reach back (3 weeks + context + a DST hour)."""
        return self._meta.history_minutes

    @property
    def day_ahead_history_minutes(self) -> int:
        """Minutes of history a day-ahead forecast reads (two weeks + a day + a DST hour)."""
        return da.HISTORY_MINUTES

    def predict_raw(self, x: npt.NDArray[np.floating[Any]]) -> FloatArray:
        """60-minute model outputs (scaled residuals: mean, p10, p90) for design rows."""
        return self._runner.run(x)

    def predict_day_ahead_raw(self, x: npt.NDArray[np.floating[Any]]) -> FloatArray:
        """Day-ahead model outputs (scaled residuals: mean, p10, p90 of 96 steps)."""
        if self._day_ahead is None:
            raise ValueError("this artifact has no day-ahead model")
        return self._day_ahead.run(x)

    def predict_origins(
        self,
        start_minute: int,
        values_kw: FloatArray,
        origins: Any,
        tz: ZoneInfo,
        outdoor_air: FloatArray | None = None,
        calendar: SiteCalendar | None = None,
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(kw, p10, p90) arrays (origins x horizon) for many origins of one series."""
        blocks = feature_blocks(
            start_minute,
            values_kw,
            np.asarray(origins, dtype=np.int64),
            tz,
            self._config,
            outdoor_air,
            calendar,
        )
        out = self.predict_raw(design_matrix(blocks, self._scaling))
        h, s = self._horizon, self._scaling.scale_kw
        base = blocks.baseline_kw
        kw = base + s * out[:, :h]
        p10, p90 = _band(
            kw,
            base + s * out[:, h : 2 * h],
            base + s * out[:, 2 * h :],
            self._meta.band.p10_shift_kw,
            self._meta.band.p90_shift_kw,
        )
        # Never below the lowest kW the site's meter showed in training (0 for a consumer meter,
        # negative where PV exports); clipped after the band is built.
        floor = self._meta.floor_kw
        return np.maximum(kw, floor), np.maximum(p10, floor), np.maximum(p90, floor)

    def predict_day_ahead(
        self,
        start_minute: int,
        values_kw: FloatArray,
        origins: Any,
        tz: ZoneInfo,
        outdoor_air: FloatArray | None = None,
        calendar: SiteCalendar | None = None,
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(p50, p10, p90) arrays (origins x 96 steps) of the day-ahead model."""
        meta = self._meta.day_ahead
        if meta is None:
            raise ValueError("this artifact has no day-ahead model")
        blocks = da.day_ahead_blocks(
            start_minute,
            values_kw,
            np.asarray(origins, dtype=np.int64),
            tz,
            outdoor_air,
            meta.outdoor_air,
            meta.baseline_smooth_steps,
            meta.weekday_groups,
            calendar,
        )
        out = self.predict_day_ahead_raw(da.day_ahead_matrix(blocks, self._scaling))
        h, s = da.STEPS, self._scaling.scale_kw
        base = blocks.baseline_kw
        p50 = base + s * out[:, :h]
        p10, p90 = _band(
            p50,
            base + s * out[:, h : 2 * h],
            base + s * out[:, 2 * h :],
            meta.band.p10_shift_kw,
            meta.band.p90_shift_kw,
        )
        floor = self._meta.floor_kw
        return np.maximum(p50, floor), np.maximum(p10, floor), np.maximum(p90, floor)

    def forecast(self, history: MinuteHistory, tz: ZoneInfo, made_at: datetime) -> Forecast | None:
        """Forecast the 60 minutes after ``history.end_minute``; None without recent data."""
        recent = history.values_kw[-self._config.recent_minutes :]
        if len(recent) == 0 or np.isnan(recent).all():
            return None
        origin = history.end_minute
        kw, p10, p90 = self.predict_origins(
            history.start_minute,
            history.values_kw,
            np.array([origin]),
            tz,
            history.outdoor_air,
            history.calendar,
        )
        if not np.isfinite(kw).all():
            return None
        peak_step = int(np.argmax(kw[0])) + 1
        note = f"peak {kw[0].max():.1f} kW at +{peak_step} min, P90 peak {p90[0].max():.1f} kW"
        return Forecast(
            forecaster=self.name,
            made_at=made_at,
            origin_minute=origin,
            kw=tuple(float(v) for v in kw[0]),
            p10_kw=tuple(float(v) for v in p10[0]),
            p90_kw=tuple(float(v) for v in p90[0]),
            note=note,
        )

    def day_ahead(
        self, history: MinuteHistory, tz: ZoneInfo, made_at: datetime
    ) -> DayAheadForecast | None:
        """The next 24 h in 15-minute steps (step 0 = the step in progress), P10/P50/P90.

        None when the artifact has no day-ahead model or the last hour has no data.
        """
        if self._day_ahead is None:
            return None
        recent = history.values_kw[-60:]
        if len(recent) == 0 or np.isnan(recent).all():
            return None
        origin = history.end_minute
        p50, p10, p90 = self.predict_day_ahead(
            history.start_minute,
            history.values_kw,
            np.array([origin]),
            tz,
            history.outdoor_air,
            history.calendar,
        )
        if not np.isfinite(p50).all():
            return None
        return DayAheadForecast(
            forecaster=self.name,
            made_at=made_at,
            origin_minute=origin,
            start_minute=int(da.step_start(np.array([origin]))[0]),
            step_minutes=da.STEP,
            p50_kw=tuple(float(v) for v in p50[0]),
            p10_kw=tuple(float(v) for v in p10[0]),
            p90_kw=tuple(float(v) for v in p90[0]),
        )
